"""Deterministic prior images: one lookup table per (scheme, sequence, tissue table), one gather.

The signal equation is evaluated once per label id (:func:`prior_lut`), then the prior is
``lut[labels]``: float32, never rounded. Ids that the scheme does not define are an error
(:class:`~seg2med.errors.ConfigError` listing them with voxel counts), never a silent zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from seg2med.errors import ConfigError, InputError
from seg2med.labels.schemes import BACKGROUND, LabelScheme
from seg2med.labels.tissues import FIELD_STRENGTHS, TissueTable, load_default_tissue_table
from seg2med.physics.contrast import NATIVE, enhancement_array
from seg2med.physics.gadolinium import concentration_array
from seg2med.physics.sequences import ImagingSequence, get_sequence


def as_sequence(sequence: ImagingSequence | str) -> ImagingSequence:
    """A sequence object, or the named sequence with its defaults."""
    return get_sequence(sequence) if isinstance(sequence, str) else sequence


def table_field(sequence: ImagingSequence) -> float:
    """Field strength whose tissue values a sequence uses (CT: the first, only HU matter)."""
    return float(getattr(sequence, "field", FIELD_STRENGTHS[0]))


def lut_from_arrays(arrays: Mapping[str, np.ndarray], sequence: ImagingSequence, scheme: LabelScheme) -> np.ndarray:
    """float32 LUT from per-id property arrays (NaN where the scheme has no class).

    Raises :class:`ConfigError` naming the classes whose signal is not finite.
    """
    lut = np.asarray(sequence.signal(arrays), dtype=np.float64)
    known = np.zeros(lut.shape, dtype=bool)
    known[0] = True
    known[scheme.ids] = True
    bad = np.flatnonzero(known & ~np.isfinite(lut))
    if bad.size:
        names = [BACKGROUND if i == 0 else scheme.name_of(int(i)) for i in bad]
        raise ConfigError(f"sequence {sequence.name!r} gives a non-finite signal for {names}")
    lut[~known] = np.nan
    return lut.astype(np.float32)


def property_arrays(scheme: LabelScheme, sequence: ImagingSequence, table: TissueTable) -> dict[str, np.ndarray]:
    """The per-label-id arrays ``sequence.signal`` reads: the tissue table's at the sequence's field strength,
    plus ``enhancement`` (HU) for a contrast-enhanced CT and ``gd_concentration`` (mM) for an MR sequence after
    gadolinium."""
    arrays = table.arrays(scheme, table_field(sequence))
    phase = getattr(sequence, "contrast_phase", NATIVE)
    if phase != NATIVE:
        arrays["enhancement"] = enhancement_array(scheme, table, phase)
    if sequence.uses_gadolinium:
        arrays["gd_concentration"] = concentration_array(scheme, table)
    return arrays


def prior_lut(scheme: LabelScheme, sequence: ImagingSequence | str, tissues: TissueTable | None = None) -> np.ndarray:
    """Per-label-id prior values (float32, length ``max_id + 1``; NaN at ids the scheme lacks)."""
    seq = as_sequence(sequence)
    return lut_from_arrays(property_arrays(scheme, seq, tissues or load_default_tissue_table()), seq, scheme)


def _unknown_ids_error(labels: np.ndarray, scheme: LabelScheme) -> ConfigError:
    unknown = scheme.unknown_ids(labels)
    listed = ", ".join(f"{i} ({n} voxels)" for i, n in sorted(unknown.items())[:20])
    more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    return ConfigError(f"label ids not in scheme {scheme.name!r}: {listed}{more}")


def apply_lut(lut: np.ndarray, labels: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """``lut[labels]`` with validation (integer labels; every id defined by ``scheme``)."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"label volume must hold integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.float32)
    if int(labels.min()) < 0 or int(labels.max()) >= lut.shape[0]:
        raise _unknown_ids_error(labels, scheme)
    out = lut[labels]
    # NaN marks ids the scheme lacks; a float32 sum is the cheapest full pass (isnan confirms)
    if np.isnan(out.sum()) and np.isnan(out).any():
        raise _unknown_ids_error(labels, scheme)
    return out


def simulate_prior(
    labels: np.ndarray,
    scheme: LabelScheme,
    sequence: ImagingSequence | str,
    tissues: TissueTable | None = None,
) -> np.ndarray:
    """Physics prior of a label volume: float32 image, same shape as ``labels``.

    ``sequence`` is a :class:`~seg2med.physics.sequences.Sequence` or a sequence name
    (defaults); ``tissues`` defaults to the built-in table.
    """
    return apply_lut(prior_lut(scheme, sequence, tissues), labels, scheme)

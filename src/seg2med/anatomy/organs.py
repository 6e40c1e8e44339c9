"""Phase 1 of a label volume: organ labels (a label map or per-class masks) -> the canonical scheme's ids.

A label map whose file names its ids (TotalSegmentator ``--ml``) is mapped by class name; one without is
read in the scheme's own numbering; per-class masks are painted by :func:`seg2med.anatomy.priority_order`.
Ids and class names the scheme lacks are reported (or, ``strict``, refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from seg2med.anatomy.priority import ORGAN_OVER_ORGAN, label_dtype, paint, priority_order
from seg2med.anatomy.reports import AnatomyReport, OverlapReport, class_counts, handle_unknown, scheme_hint
from seg2med.errors import InputError
from seg2med.io.nifti import Volume, check_same_grid, embedded_label_table, label_values
from seg2med.labels.schemes import LabelScheme


def mask_arrays(masks: Mapping[str, Volume | np.ndarray], source: str) -> dict[str, np.ndarray]:
    """``{name: boolean array}`` of class masks; :class:`InputError` for none, or masks not 3D of one shape."""
    if not masks:
        raise InputError(f"{source}: no class masks given")
    arrays = {str(n): np.asarray(getattr(v, "array", v)) != 0 for n, v in masks.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(f"{source}: class masks must be 3D arrays of one shape, got {sorted(shapes)}")
    return arrays


def masks_source(masks: Mapping[str, Volume]) -> str:
    """The folder the masks were read from (all from one), else ``<masks>``: how messages name them."""
    paths = [v.path for v in masks.values() if isinstance(v, Volume) and v.path is not None]
    if paths and len(paths) == len(masks):
        parents = {Path(p).parent for p in paths}
        if len(parents) == 1:
            return str(parents.pop())
    return "<masks>"


def as_labels(vol: Volume) -> np.ndarray:
    """The whole-number ids of a 3D label map (:class:`InputError` otherwise)."""
    arr = np.asarray(vol.array)
    if arr.ndim != 3:
        raise InputError(f"{vol.name}: expected a 3D label map, got shape {arr.shape}")
    return label_values(arr, vol.name)


def remap_by_table(
    raw: np.ndarray, table: Mapping[int, str], scheme: LabelScheme, dtype: type
) -> tuple[np.ndarray, dict[str, int], dict[int, int]]:
    """Label ids named by the file's own ``table`` -> ``scheme`` ids by class name.

    Returns the remapped labels (0 where the class is not in ``scheme``), the voxel counts of
    the named classes ``scheme`` lacks, and of the ids the table does not name.
    """
    counts = np.bincount(raw.ravel()) if raw.size and int(raw.max()) < (1 << 22) else None
    if counts is not None:
        present = {int(i): int(c) for i, c in enumerate(counts) if i and c}
    else:
        ids, cnt = np.unique(raw[raw != 0], return_counts=True)
        present = {int(i): int(c) for i, c in zip(ids, cnt)}
    lut = np.zeros(max(present, default=0) + 1, dtype=dtype)
    unknown_names: dict[str, int] = {}
    unknown_ids: dict[int, int] = {}
    for i, voxels in present.items():
        name = table.get(i)
        if name is None:
            unknown_ids[i] = voxels
        elif name in scheme.classes:
            lut[i] = scheme.id_of(name)
        else:
            unknown_names[name] = unknown_names.get(name, 0) + voxels
    return lut[raw], unknown_names, unknown_ids


def labels_from_masks(
    masks: Mapping[str, np.ndarray],
    scheme: LabelScheme,
    *,
    strict: bool = False,
    source: str = "<masks>",
) -> tuple[np.ndarray, OverlapReport]:
    """Integer label array (ids of ``scheme``) from per-class boolean masks.

    Overlaps are resolved with :func:`priority_order` (rule ``organ_over_organ``)
    and counted per (winner, loser) pair. A mask whose name ``scheme`` does not
    know is skipped, reported with its voxel count and logged as a warning;
    with ``strict=True`` it raises :class:`ConfigError` instead. An empty
    ``masks`` or masks of different shapes raise :class:`InputError`.
    """
    arrays = mask_arrays(masks, source)
    unknown = {n: int(a.sum()) for n, a in arrays.items() if n not in scheme.classes}
    handle_unknown(source, scheme.name, unknown, strict, what="class")
    dtype = label_dtype(max(scheme.ids, default=1))
    labels, overlaps = paint(arrays, priority_order(scheme), scheme.classes, ORGAN_OVER_ORGAN, dtype)
    return labels, OverlapReport(overlaps, unknown, class_counts(labels, scheme))


def organ_labels(
    organs: Volume | Mapping[str, Volume], scheme: LabelScheme, canon: LabelScheme, strict: bool = False
) -> tuple[np.ndarray, np.ndarray, Volume, AnatomyReport]:
    """The organs in ``canon`` ids (``canonical_scheme(scheme)``), from a label :class:`Volume` in ``scheme``
    (mapped by name when it carries its own label table) or ``{class name: mask Volume}``.

    Returns the labels (the integer dtype of ``canon``), the mask of every labelled input voxel (unknown ids
    included: the body contour closes them too), the volume whose grid the others must share, and the
    :class:`AnatomyReport` begun (source, shape, overlaps, unknown ids / classes, how classes were read).
    Raises :class:`InputError` for no masks, an empty map, or one with no voxel of any class of ``scheme``.
    """
    dtype = label_dtype(max(canon.ids))
    if isinstance(organs, Mapping):
        source = masks_source(organs)
        if not organs:
            raise InputError(f"{source}: no class masks given")
        vols = list(organs.values())
        ref = vols[0]
        for v in vols[1:]:
            check_same_grid(ref, v)
        arrays = mask_arrays(organs, source)
        labelled = np.logical_or.reduce(list(arrays.values()))
        if not labelled.any():
            raise InputError(f"{source}: empty label map (no mask has a non-zero voxel)")
        labels, ovr = labels_from_masks(arrays, scheme, strict=strict, source=source)
        report = AnatomyReport(source, canon.name, ref.shape, list(ovr.overlaps), label_table="mask names")
        report.unknown_classes = dict(ovr.unknown_classes)
        labels = labels.astype(dtype, copy=False)
    else:
        ref, source = organs, organs.name
        raw = as_labels(organs)
        labelled = raw != 0
        if not labelled.any():
            raise InputError(f"{source}: empty label map (no non-zero voxel)")
        table = embedded_label_table(organs.header)
        if table is not None:  # the file names its ids (TotalSegmentator --ml): map them by name
            labels, unknown_names, unknown = remap_by_table(raw, table, scheme, dtype)
            hint = scheme_hint(scheme, names=unknown_names)
            handle_unknown(source, scheme.name, unknown_names, strict, what="class", hint=hint)
            handle_unknown(source, scheme.name, unknown, strict, where="the file's own label table")
            report = AnatomyReport(source, canon.name, ref.shape, unknown_ids=unknown, label_table="embedded")
            report.unknown_classes = unknown_names
        else:
            unknown = scheme.unknown_ids(raw)
            handle_unknown(source, scheme.name, unknown, strict)
            labels = np.where(np.isin(raw, list(unknown)), 0, raw).astype(dtype) if unknown else raw.astype(dtype)
            report = AnatomyReport(source, canon.name, ref.shape, unknown_ids=unknown)
    if not labels.any():
        hint = scheme_hint(scheme, names=report.unknown_classes, ids=report.unknown_ids)
        raise InputError(f"{source}: no voxel of any class of label scheme {scheme.name!r}{hint}")
    return labels, labelled, ref, report

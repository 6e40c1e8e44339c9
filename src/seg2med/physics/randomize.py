"""Randomised priors for augmentation (the TorchIO ``RandomLabelsToImage`` pattern).

:meth:`RandomPrior.sample` draws every random quantity into a :class:`PriorParams`;
:meth:`RandomPrior.apply` is deterministic given those parameters. The steps, each skipped
when its amplitude is 0 (so all-zero spreads give exactly :func:`simulate_prior`):

1. tissue jitter, per label id: CT ``hu + hu_sd·spread·z``; MR T1, T2, T2*, PD multiplied by
   ``exp(spread·z)`` (a relative jitter that keeps them positive); ``z ~ N(0, 1)``; id 0 (air)
   is not jittered;
2. partial-volume blur: Gaussian, ``sigma = blur`` mm (``scipy.ndimage.gaussian_filter`` with
   ``sigma / spacing`` voxels);
3. smooth multiplicative bias field ``exp(Σ c_ijk x^i y^j z^k)`` (order-3 polynomial on
   coordinates in [-1, 1], ``c ~ U(-bias_field, bias_field)``); for CT it scales the
   attenuation relative to air, ``(HU + 1000)·b − 1000``;
4. additive Gaussian noise, sd ``noise`` in HU (CT) or ``noise × (max − min)`` of the image (MR).

Every amplitude has an upper bound (:func:`check_amplitudes`), generous for augmentation but far
below values that turn the prior into overflow or pure noise: ``tissue_spread`` <= 3
(:data:`MAX_TISSUE_SPREAD`), ``bias_field`` <= 1 (:data:`MAX_BIAS_FIELD`: with 20 coefficients in
3-D the log-gain stays within ±20, typically ±2.6), ``noise`` <= 1000 HU (CT) or 1 (MR: the image
range) (:data:`MAX_NOISE`), ``blur`` <= 20 mm (:data:`MAX_BLUR_MM`). A prior that still comes out
with NaN or inf values (e.g. from an extreme tissue table) is refused, never returned.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from seg2med.checks import check_non_negative, check_optional_seed
from seg2med.errors import ConfigError
from seg2med.labels.schemes import LabelScheme
from seg2med.labels.tissues import TissueTable, load_default_tissue_table
from seg2med.physics.prior import apply_lut, as_sequence, lut_from_arrays, property_arrays
from seg2med.physics.sequences import ImagingSequence

BIAS_ORDER = 3
#: HU of air: the CT bias field scales attenuation relative to it.
AIR_HU = -1000.0
_MR_JITTERED = ("t1", "t2", "t2s", "pd")

#: Upper bound of ``tissue_spread`` (dimensionless): CT offsets of 3 x ``hu_sd`` per standard normal
#: draw, MR factors ``exp(3 z)`` (x20 per sd); augmentation uses 0.1-1.
MAX_TISSUE_SPREAD = 3.0
#: Upper bound of ``bias_field`` (coefficient range): |log gain| <= number of terms x 1 (20 in 3-D,
#: gain within e^±20, finite in float32); TorchIO's ``RandomBiasField`` default is 0.5.
MAX_BIAS_FIELD = 1.0
#: Upper bound of ``noise`` per modality: HU for CT (clinical noise 5-50 HU, low dose ~100; 1000 HU
#: is the air-water contrast), a fraction of the image range for MR (typical 0.005-0.05).
MAX_NOISE = {"ct": 1000.0, "mr": 1.0}
#: Upper bound of ``blur`` (Gaussian sigma in mm; partial-volume blur is 0.5-3 mm): beyond some tens
#: of mm it erases the anatomy and the filter kernel grows without bound.
MAX_BLUR_MM = 20.0
#: How the amplitudes are named in messages by default (the typed API passes its CLI options).
AMPLITUDE_NAMES = {k: f"RandomPrior: {k}" for k in ("tissue_spread", "bias_field", "noise", "blur")}


def _check_bounded(value: float, option: str, bound: float, what: str) -> float:
    value = check_non_negative(value, option)
    if value > bound:
        raise ConfigError(f"{option} must be <= {bound:g} ({what}), got {value!r}")
    return value


def check_amplitudes(
    modality: str,
    tissue_spread: float = 0.0,
    bias_field: float = 0.0,
    noise: float = 0.0,
    blur: float = 0.0,
    names: Mapping[str, str] | None = None,
) -> tuple[float, float, float, float]:
    """``(tissue_spread, bias_field, noise, blur)`` as floats, each finite, >= 0 and within its bound.

    ``modality`` (``"ct"`` or ``"mr"``) picks the unit of ``noise``; ``names`` maps each amplitude to
    how messages name it (default :data:`AMPLITUDE_NAMES`). One-line :class:`ConfigError` otherwise.
    """
    n = {**AMPLITUDE_NAMES, **dict(names or {})}
    noise_unit = "in HU" if modality == "ct" else "as a fraction of the image range"
    return (
        _check_bounded(tissue_spread, n["tissue_spread"], MAX_TISSUE_SPREAD, "a multiple of each tissue's spread"),
        _check_bounded(bias_field, n["bias_field"], MAX_BIAS_FIELD, "the range of the bias polynomial's coefficients"),
        _check_bounded(noise, n["noise"], MAX_NOISE["ct" if modality == "ct" else "mr"], f"the noise sd {noise_unit}"),
        _check_bounded(blur, n["blur"], MAX_BLUR_MM, "the Gaussian sigma in mm"),
    )


def _poly_terms(ndim: int, order: int) -> list[tuple[int, ...]]:
    """Exponent tuples of all monomials of total degree <= order, in a fixed order."""
    return [e for e in itertools.product(range(order + 1), repeat=ndim) if sum(e) <= order]


def _eval_poly(terms: Mapping[tuple[int, ...], float], coords: list[np.ndarray]) -> np.ndarray:
    """Σ c·Π x_d^e_d on the grid ``coords`` (one 1-D array per axis), axis by axis (cheap)."""
    x = coords[0]
    if len(coords) == 1:
        return sum((c * x**e[0] for e, c in terms.items()), np.zeros_like(x))
    out = np.zeros([len(c) for c in coords], dtype=np.float32)
    for i in sorted({e[0] for e in terms}):
        inner = _eval_poly({e[1:]: c for e, c in terms.items() if e[0] == i}, coords[1:])
        out += np.multiply.outer(x**i, inner).astype(np.float32, copy=False)
    return out


def bias_field(shape: tuple[int, ...], coefficients: np.ndarray, order: int = BIAS_ORDER) -> np.ndarray:
    """``exp(polynomial)`` over a grid with coordinates in [-1, 1] per axis (float32)."""
    terms = _poly_terms(len(shape), order)
    if len(coefficients) != len(terms):
        raise ConfigError(f"bias field of order {order} in {len(shape)}-D needs {len(terms)} coefficients")
    coords = [np.linspace(-1.0, 1.0, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32) for n in shape]
    return np.exp(_eval_poly(dict(zip(terms, map(float, coefficients))), coords))


def _check_params(params: PriorParams, modality: str) -> None:
    """Sampled (or hand-made) parameters within the amplitude bounds (a huge blur would exhaust memory)."""
    coeffs = params.bias_coefficients
    bias = 0.0 if coeffs is None or not len(coeffs) else float(np.max(np.abs(np.asarray(coeffs, dtype=np.float64))))
    check_amplitudes(modality, 0.0, bias, params.noise_sd, params.blur_mm,
                     {"bias_field": "PriorParams: |bias_coefficients|", "noise": "PriorParams: noise_sd",
                      "blur": "PriorParams: blur_mm"})


@dataclass(frozen=True)
class PriorParams:
    """Everything :meth:`RandomPrior.apply` needs besides the labels (all sampled values).

    ``jitter``: per-label-id arrays; ``"hu"`` additive HU offsets (CT) or ``"t1"``, ``"t2"``,
    ``"t2s"``, ``"pd"`` multiplicative factors (MR); empty = table values.
    ``bias_coefficients``: polynomial coefficients (None = no bias field).
    ``noise_seed``: seed of the noise realisation (None = no noise).
    """

    jitter: Mapping[str, np.ndarray] = field(default_factory=dict)
    bias_coefficients: np.ndarray | None = None
    noise_sd: float = 0.0
    noise_seed: int | None = None
    blur_mm: float = 0.0

    def to_dict(self) -> dict:
        """JSON-serialisable form (for provenance logs)."""
        return {
            "jitter": {k: v.tolist() for k, v in self.jitter.items()},
            "bias_coefficients": None if self.bias_coefficients is None else self.bias_coefficients.tolist(),
            "noise_sd": self.noise_sd,
            "noise_seed": self.noise_seed,
            "blur_mm": self.blur_mm,
        }


class RandomPrior:
    """Random physics prior: tissue jitter, partial-volume blur, bias field and noise.

    ``tissue_spread`` (dimensionless: fraction of ``hu_sd`` for CT, relative sd for MR),
    ``bias_field`` (polynomial coefficient range), ``noise`` (HU for CT, fraction of the
    image range for MR) and ``blur`` (Gaussian sigma in mm) are all >= 0 and at most their
    bound (:func:`check_amplitudes`); 0 switches a step off. ``seed`` (an integer in [0, 2**32), or None) seeds one ``numpy.random.Generator``
    kept across calls: two instances with the same seed produce the same sequence of priors.
    """

    def __init__(
        self,
        sequence: ImagingSequence | str,
        tissue_spread: float = 0.0,
        bias_field: float = 0.0,
        noise: float = 0.0,
        blur: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.sequence = as_sequence(sequence)
        self.tissue_spread, self.bias_field, self.noise, self.blur = check_amplitudes(
            self.sequence.modality, tissue_spread, bias_field, noise, blur)
        self.seed = check_optional_seed(seed, "RandomPrior: seed")
        self._rng = np.random.default_rng(seed)

    def to_config(self) -> dict:
        return {
            "sequence": self.sequence.to_config(),
            "tissue_spread": self.tissue_spread,
            "bias_field": self.bias_field,
            "noise": self.noise,
            "blur": self.blur,
            "seed": self.seed,
        }

    # -- sampling ----------------------------------------------------------------------
    def sample(
        self,
        scheme: LabelScheme,
        tissues: TissueTable | None = None,
        ndim: int = 3,
        rng: np.random.Generator | None = None,
    ) -> PriorParams:
        """Draw one parameter set (from this prior's generator unless ``rng`` is given)."""
        rng = self._rng if rng is None else rng
        table = tissues or load_default_tissue_table()
        jitter: dict[str, np.ndarray] = {}
        if self.tissue_spread > 0:
            arrays = property_arrays(scheme, self.sequence, table)
            size = arrays["hu"].shape[0]
            if self.sequence.modality == "ct":
                z = rng.standard_normal(size)
                z[0] = 0.0
                jitter["hu"] = np.nan_to_num(arrays["hu_sd"]) * self.tissue_spread * z
            else:
                z = rng.standard_normal((len(_MR_JITTERED), size))
                z[:, 0] = 0.0
                jitter = {k: np.exp(self.tissue_spread * z[i]) for i, k in enumerate(_MR_JITTERED)}
        coeffs = None
        if self.bias_field > 0:
            coeffs = rng.uniform(-self.bias_field, self.bias_field, len(_poly_terms(ndim, BIAS_ORDER)))
        noise_seed = int(rng.integers(2**63)) if self.noise > 0 else None
        return PriorParams(jitter, coeffs, self.noise, noise_seed, self.blur)

    # -- deterministic application -------------------------------------------------------
    def apply(
        self,
        params: PriorParams,
        labels: np.ndarray,
        scheme: LabelScheme,
        tissues: TissueTable | None = None,
        spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The prior for ``labels`` under ``params`` (float32; deterministic; never NaN or inf)."""
        labels = np.asarray(labels)
        spacing = (1.0,) * labels.ndim if spacing is None else tuple(float(s) for s in spacing)
        if len(spacing) != labels.ndim or any(not math.isfinite(s) or s <= 0 for s in spacing):
            raise ConfigError(f"spacing {spacing} does not fit a {labels.ndim}-D label volume")
        _check_params(params, self.sequence.modality)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, not warned about
            image = self._apply(params, labels, scheme, tissues, spacing)
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise ConfigError(f"RandomPrior: the prior has {bad} NaN/inf voxel(s) (tissue values or amplitudes too "
                              f"large for float32); refused rather than written")
        return image

    def _apply(self, params: PriorParams, labels: np.ndarray, scheme: LabelScheme, tissues: TissueTable | None,
               spacing: tuple[float, ...]) -> np.ndarray:
        table = tissues or load_default_tissue_table()
        arrays = property_arrays(scheme, self.sequence, table)
        for key, delta in params.jitter.items():
            if key == "hu":
                arrays[key] = arrays[key] + delta
            else:
                arrays[key] = arrays[key] * delta
        image = apply_lut(lut_from_arrays(arrays, self.sequence, scheme), labels, scheme)
        is_ct = self.sequence.modality == "ct"
        if params.blur_mm > 0:
            image = gaussian_filter(image, sigma=[params.blur_mm / s for s in spacing], mode="nearest")
        if params.bias_coefficients is not None:
            gain = bias_field(image.shape, params.bias_coefficients)
            image = (image - AIR_HU) * gain + AIR_HU if is_ct else image * gain
        if params.noise_seed is not None and params.noise_sd > 0:
            sd = params.noise_sd if is_ct else params.noise_sd * float(np.ptp(image))
            noise = np.random.default_rng(params.noise_seed).standard_normal(image.shape, dtype=np.float32)
            image = image + np.float32(sd) * noise
        return image.astype(np.float32, copy=False)

    def __call__(
        self,
        labels: np.ndarray,
        scheme: LabelScheme,
        tissues: TissueTable | None = None,
        spacing: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, PriorParams]:
        """Sample parameters and apply them: ``(prior image, params)``."""
        labels = np.asarray(labels)
        params = self.sample(scheme, tissues, ndim=labels.ndim)
        return self.apply(params, labels, scheme, tissues, spacing), params

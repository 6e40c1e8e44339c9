"""Intensity normalisation to [0, 1] with exact, recorded inverses.

MONAI style: array transforms with ``__call__`` and ``inverse`` plus dictionary
wrappers (``...d(keys=...)``). Every window is fully described by a JSON-ready
``params`` dict (``low``/``high`` are the values mapped to 0 and 1), so the
inverse can be rebuilt from a manifest with :func:`denormalize`.

* CT: fixed window (level 0, width 2000 HU -> [-1000, 1000] HU).
* MR: per-volume percentile window (p10-p90 by default), percentiles taken
  inside an optional (body) mask.

Both numpy arrays and torch tensors are accepted; the output has the input's
type (float32 for numpy).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from seg2med.errors import ConfigError, InputError

log = logging.getLogger(__name__)

MODALITIES = ("ct", "mr")
DEFAULT_CT_WINDOW = (0.0, 2000.0)
DEFAULT_MR_PERCENTILES = (10.0, 90.0)


def _clip01(x: Any) -> Any:
    return x.clamp(0.0, 1.0) if hasattr(x, "clamp") else np.clip(x, 0.0, 1.0)


def _as_float(x: Any) -> Any:
    """float32 numpy array, or a floating torch tensor, unchanged in type."""
    if hasattr(x, "clamp"):  # torch tensor
        return x if x.is_floating_point() else x.float()
    return np.asarray(x, dtype=np.float32)


class IntensityWindow:
    """Linear map of ``[low, high]`` onto ``[0, 1]``, clipping outside values.

    ``inverse`` maps ``[0, 1]`` back to ``[low, high]``; it is exact (up to
    float32 rounding) for values that were inside the window.
    """

    method = "window"

    def __init__(self, low: float, high: float) -> None:
        low, high = float(low), float(high)
        if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
            raise ConfigError(f"intensity window needs finite low < high, got [{low}, {high}]")
        self.low, self.high = low, high

    @property
    def params(self) -> dict[str, Any]:
        """JSON-ready description; :func:`window_from_params` rebuilds the transform."""
        return {"method": self.method, "low": self.low, "high": self.high}

    def __call__(self, img: Any) -> Any:
        x = _as_float(img)
        return _clip01((x - self.low) / (self.high - self.low))

    def inverse(self, img: Any) -> Any:
        x = _as_float(img)
        return x * (self.high - self.low) + self.low

    def __repr__(self) -> str:
        return f"{type(self).__name__}(low={self.low:g}, high={self.high:g})"


class CTWindow(IntensityWindow):
    """CT window given as level/width in HU (default 0/2000 -> [-1000, 1000] HU)."""

    method = "ct_window"

    def __init__(self, level: float = DEFAULT_CT_WINDOW[0], width: float = DEFAULT_CT_WINDOW[1]) -> None:
        if not width > 0:
            raise ConfigError(f"CT window width must be > 0, got {width}")
        self.level, self.width = float(level), float(width)
        super().__init__(self.level - self.width / 2, self.level + self.width / 2)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "level": self.level, "width": self.width}


def to_signed(x: Any) -> Any:
    """Dataset intensities in [0, 1] -> the networks' range [-1, 1] (numpy or torch; not clipped)."""
    return x * 2.0 - 1.0


def to_unit(x: Any) -> Any:
    """The networks' range [-1, 1] -> dataset intensities in [0, 1] (numpy or torch; not clipped)."""
    return (x + 1.0) / 2.0


def check_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    """Validate a ``(lower, upper)`` percentile pair with ``0 <= lower < upper <= 100``."""
    try:
        lo, hi = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ConfigError(f"percentiles must be two numbers, got {percentiles!r}") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise ConfigError(f"percentiles must satisfy 0 <= lower < upper <= 100, got ({lo:g}, {hi:g})")
    return lo, hi


class _PercentileFitted(IntensityWindow):
    """A window fitted by :func:`fit_percentile_window` (remembers how)."""

    method = "percentile"

    def __init__(self, low: float, high: float, percentiles: tuple[float, float], masked: bool) -> None:
        super().__init__(low, high)
        self.percentiles, self.masked = percentiles, masked

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "percentiles": list(self.percentiles), "masked": self.masked}


def fit_percentile_window(
    img: Any, mask: np.ndarray | None = None, percentiles: Sequence[float] = DEFAULT_MR_PERCENTILES
) -> IntensityWindow:
    """An :class:`IntensityWindow` from the ``percentiles`` of ``img`` (inside ``mask`` if given).

    A flat region (low == high) gets a window of width 1 above ``low`` so the
    transform stays invertible.
    """
    lo_p, hi_p = check_percentiles(percentiles)
    arr = np.asarray(img.detach().cpu().numpy() if hasattr(img, "detach") else img, dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != arr.shape:
            raise InputError(f"mask shape {mask.shape} does not match image shape {arr.shape}")
        arr = arr[mask]
    if arr.size == 0:
        raise InputError("cannot compute a percentile window: the mask is empty")
    low, high = (float(v) for v in np.percentile(arr, [lo_p, hi_p]))
    if high <= low:
        log.warning("percentile window [%g, %g] is flat; using [%g, %g]", low, high, low, low + 1.0)
        high = low + 1.0
    return _PercentileFitted(low, high, (lo_p, hi_p), mask is not None)


class _SignalFitted(IntensityWindow):
    """A window ``[0, percentile]`` fitted by :func:`fit_signal_window` (remembers how)."""

    method = "signal"

    def __init__(self, high: float, percentile: float) -> None:
        super().__init__(0.0, high)
        self.percentile = percentile

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "percentile": self.percentile}


def fit_signal_window(img: Any, mask: np.ndarray | None = None, upper: float = 99.5) -> IntensityWindow:
    """``[0, p]`` with ``p`` the ``upper`` percentile of ``img`` inside ``mask``: for a physics prior (a non-negative
    signal, one value per tissue) every tissue keeps its ratio to the others and stays above the background's 0 (a
    percentile window maps the darkest tissue onto the background)."""
    arr = np.asarray(img.detach().cpu().numpy() if hasattr(img, "detach") else img, dtype=np.float64)
    if mask is not None:
        arr = arr[np.asarray(mask, dtype=bool)]
    if arr.size == 0:
        raise InputError("cannot compute a signal window: the mask is empty")
    high = float(np.percentile(arr, float(upper)))
    if not high > 0:
        raise InputError(f"cannot compute a signal window: the signal's {upper:g}th percentile is {high:g}, not > 0")
    return _SignalFitted(high, float(upper))


class PercentileWindow:
    """MR normalisation: per-volume percentile window (p10-p90 default, p1-p99 option).

    Each call fits the window on the given volume (inside ``mask`` when given)
    and keeps it in ``self.window``/``self.params`` so that ``inverse`` is exact.
    """

    def __init__(self, lower: float = DEFAULT_MR_PERCENTILES[0], upper: float = DEFAULT_MR_PERCENTILES[1]) -> None:
        self.percentiles = check_percentiles((lower, upper))
        self.window: IntensityWindow | None = None

    @property
    def params(self) -> dict[str, Any]:
        if self.window is None:
            raise ConfigError("PercentileWindow has not been applied yet: no parameters")
        return self.window.params

    def __call__(self, img: Any, mask: np.ndarray | None = None) -> Any:
        self.window = fit_percentile_window(img, mask, self.percentiles)
        return self.window(img)

    def inverse(self, img: Any) -> Any:
        if self.window is None:
            raise ConfigError("PercentileWindow.inverse called before the transform was applied")
        return self.window.inverse(img)


def window_from_params(params: Mapping[str, Any]) -> IntensityWindow:
    """Rebuild the transform recorded in ``params`` (only ``low``/``high`` matter)."""
    try:
        return IntensityWindow(params["low"], params["high"])
    except (KeyError, TypeError):
        raise ConfigError(f"normalisation parameters need 'low' and 'high', got {dict(params)!r}") from None


def denormalize(img: Any, params: Mapping[str, Any]) -> Any:
    """Undo a normalisation described by ``params`` (back to HU / MR signal)."""
    return window_from_params(params).inverse(img)


def check_modality(modality: str) -> str:
    m = str(modality).lower()
    if m not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r} (expected one of {', '.join(MODALITIES)})")
    return m


def normalize_volume(
    img: Any,
    modality: str,
    mask: np.ndarray | None = None,
    ct_window: Sequence[float] = DEFAULT_CT_WINDOW,
    mr_percentiles: Sequence[float] = DEFAULT_MR_PERCENTILES,
) -> tuple[Any, dict[str, Any]]:
    """Normalise an image or a prior of ``modality`` to [0, 1]; return it with its params.

    CT uses the fixed ``ct_window`` (level, width); MR a percentile window
    fitted inside ``mask`` (ignored for CT).
    """
    if check_modality(modality) == "ct":
        win: IntensityWindow = CTWindow(*ct_window)
    else:
        win = fit_percentile_window(img, mask, mr_percentiles)
    return win(img), {**win.params, "modality": modality.lower()}


class _Windowd:
    """Dictionary wrapper base: applies a window per key, records ``{key}_{postfix}``."""

    def __init__(self, keys: Hashable | Sequence[Hashable], params_postfix: str = "norm",
                 allow_missing_keys: bool = False) -> None:
        self.keys = [keys] if isinstance(keys, (str, int)) else list(keys)
        self.postfix, self.allow_missing_keys = params_postfix, allow_missing_keys

    def _present(self, d: Mapping[Hashable, Any]) -> list[Hashable]:
        missing = [k for k in self.keys if k not in d]
        if missing and not self.allow_missing_keys:
            raise KeyError(f"keys {missing} not in data")
        return [k for k in self.keys if k in d]

    def _window(self, d: Mapping[Hashable, Any], key: Hashable) -> IntensityWindow:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self._present(d):
            win = self._window(d, key)
            d[key] = win(d[key])
            d[f"{key}_{self.postfix}"] = win.params
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self._present(d):
            d[key] = denormalize(d[key], d[f"{key}_{self.postfix}"])
        return d


class CTWindowd(_Windowd):
    """Dictionary version of :class:`CTWindow`."""

    def __init__(self, keys: Hashable | Sequence[Hashable], level: float = DEFAULT_CT_WINDOW[0],
                 width: float = DEFAULT_CT_WINDOW[1], **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.transform = CTWindow(level, width)

    def _window(self, d: Mapping[Hashable, Any], key: Hashable) -> IntensityWindow:
        return self.transform


class PercentileWindowd(_Windowd):
    """Dictionary version of :class:`PercentileWindow`; ``mask_key`` names the body mask."""

    def __init__(self, keys: Hashable | Sequence[Hashable], lower: float = DEFAULT_MR_PERCENTILES[0],
                 upper: float = DEFAULT_MR_PERCENTILES[1], mask_key: Hashable | None = None,
                 **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.percentiles = check_percentiles((lower, upper))
        self.mask_key = mask_key

    def _window(self, d: Mapping[Hashable, Any], key: Hashable) -> IntensityWindow:
        mask = d[self.mask_key] if self.mask_key is not None else None
        return fit_percentile_window(d[key], mask, self.percentiles)

"""SSIM, PSNR and MAE between a prediction and a reference, optionally inside a mask.

SSIM follows Wang et al. 2004 as in the seg2med paper: Gaussian window 11x11,
sigma 1.5, K1 = 0.01, K2 = 0.03, an explicit ``data_range``; computed slice by
slice over 2D planes (scikit-image) and averaged over the masked pixels.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


_PAD = 5  # (11 - 1) // 2: half of the Gaussian window scikit-image uses for sigma 1.5


def _check(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    m = np.ones(pred.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != pred.shape:
        raise ValueError(f"mask {m.shape} does not match images {pred.shape}")
    if not m.any():
        raise ValueError("mask is empty")
    return m


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float, mask: np.ndarray | None = None, axis: int = -1) -> float:
    """Mean SSIM over ``mask`` (2D maps computed per slice along ``axis`` for 3D input).

    Without a mask the map is averaged away from the image border, exactly as
    :func:`skimage.metrics.structural_similarity` does.
    """
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    m = _check(pred, ref, mask)
    if mask is None:  # like scikit-image: leave out the half-window border of every 2D plane
        m = np.zeros_like(m)
        inner = [slice(_PAD, -_PAD)] * pred.ndim
        if pred.ndim == 3:
            inner[axis] = slice(None)
        m[tuple(inner)] = True
    kw = dict(data_range=float(data_range), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    if pred.ndim == 2:
        _, smap = structural_similarity(pred, ref, **kw)
    else:
        p, r = np.moveaxis(pred, axis, 0), np.moveaxis(ref, axis, 0)
        smap = np.moveaxis(np.stack([structural_similarity(a, b, **kw)[1] for a, b in zip(p, r)]), 0, axis)
    return float(smap[m].mean())


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB over ``mask``."""
    m = _check(np.asarray(pred), np.asarray(ref), mask)
    mse = float(np.mean((np.asarray(pred, np.float64)[m] - np.asarray(ref, np.float64)[m]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error over ``mask`` (in the images' units, e.g. HU)."""
    m = _check(np.asarray(pred), np.asarray(ref), mask)
    return float(np.mean(np.abs(np.asarray(pred, np.float64)[m] - np.asarray(ref, np.float64)[m])))

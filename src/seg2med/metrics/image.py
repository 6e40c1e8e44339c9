"""SSIM, PSNR, MAE and the roughness ratio between a prediction and a reference, optionally inside a mask.

SSIM follows Wang et al. 2004 as in the seg2med paper: Gaussian window 11x11,
sigma 1.5, K1 = 0.01, K2 = 0.03, an explicit ``data_range``; computed slice by
slice over 2D planes (scikit-image) and averaged over the masked pixels. The
planes are those perpendicular to ``axis``: on arrays in closest-RAS voxel
order (x, y, z) axis 2 gives axial planes, 1 coronal and 0 sagittal
(:data:`PLANE_AXES`), so a slice-wise generator's streaks across slices show
in the coronal and sagittal SSIM and in :func:`roughness_ratio` along axis 2.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


_PAD = 5  # (11 - 1) // 2: half of the Gaussian window scikit-image uses for sigma 1.5
#: Smallest side (pixels) of an SSIM plane: the 11 x 11 Gaussian window must fit (scikit-image refuses smaller
#: planes, with a message that says 7, its default window without Gaussian weights).
SSIM_MIN_SIDE = 2 * _PAD + 1
#: The voxel axis SSIM slices along for each plane, on arrays in closest-RAS voxel order (x, y, z).
PLANE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def _check(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    m = np.ones(pred.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != pred.shape:
        raise ValueError(f"mask {m.shape} does not match images {pred.shape}")
    if not m.any():
        raise ValueError("mask is empty")
    return m


def ssim_plane_shape(shape: tuple[int, ...], axis: int = -1) -> tuple[int, ...]:
    """The shape of the 2D planes :func:`ssim` compares for an image of ``shape`` (3D: the planes along ``axis``)."""
    if len(shape) == 2:
        return tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"SSIM needs a 2D or 3D image, got shape {tuple(shape)}")
    if not -3 <= axis < 3:
        raise ValueError(f"axis {axis} out of range for a 3D image")
    return tuple(n for i, n in enumerate(shape) if i != axis % 3)


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float, mask: np.ndarray | None = None, axis: int = -1) -> float:
    """Mean SSIM (unitless, at most 1) over ``mask`` (2D maps computed per slice along ``axis`` for 3D input:
    ``axis`` 2 = axial, 1 = coronal, 0 = sagittal planes of an (x, y, z) array, see :data:`PLANE_AXES`).

    Without a mask the map is averaged away from the image border, exactly as
    :func:`skimage.metrics.structural_similarity` does. Planes with a side under
    :data:`SSIM_MIN_SIDE` pixels (e.g. coronal planes of a volume of few slices) are refused (ValueError).
    """
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    m = _check(pred, ref, mask)
    plane = ssim_plane_shape(pred.shape, axis)
    if min(plane) < SSIM_MIN_SIDE:
        raise ValueError(f"SSIM planes {' x '.join(map(str, plane))} px (along axis {axis} of {pred.shape}) are smaller "
                         f"than its {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} Gaussian window")
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


def roughness_ratio(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, axis: int = 2) -> float:
    """How rough ``pred`` is along ``axis`` relative to ``ref`` (unitless; 1.0 = as smooth as the reference).

    The mean over neighbouring voxel pairs (v, v + 1 along ``axis``) with both voxels inside ``mask`` of
    ``(pred[v + 1] - pred[v]) ** 2``, divided by the same mean of ``ref`` (both in squared image units, which
    cancel). Along axis 2 of an (x, y, z) volume it measures streaks across axial slices (a slice-wise
    generator's independent slices: > 1); along 0 or 1, in-plane texture and noise. Raises ValueError when no
    pair lies inside the mask (e.g. one slice along ``axis``) or the reference is constant there (ratio undefined).
    """
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    m = _check(pred, ref, mask)
    if not -pred.ndim <= axis < pred.ndim:
        raise ValueError(f"axis {axis} out of range for a {pred.ndim}D image")
    ax = axis % pred.ndim
    lo, hi = [slice(None)] * pred.ndim, [slice(None)] * pred.ndim
    lo[ax], hi[ax] = slice(None, -1), slice(1, None)
    pairs = m[tuple(lo)] & m[tuple(hi)]
    if not pairs.any():
        raise ValueError(f"roughness along axis {axis}: no pair of neighbouring voxels lies inside the mask "
                         f"(image {pred.shape}, {int(m.sum())} mask voxels)")
    ref_term = float(np.mean(np.diff(ref, axis=ax)[pairs] ** 2))
    if ref_term == 0.0:
        raise ValueError(f"roughness along axis {axis}: the reference is constant along it inside the mask "
                         "(its mean squared difference is 0), so the ratio is undefined")
    return float(np.mean(np.diff(pred, axis=ax)[pairs] ** 2)) / ref_term

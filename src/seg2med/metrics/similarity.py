"""MS-SSIM, histogram correlation (HistCC) and FSIM, optionally inside a mask.

All three are computed on 2D planes; a 3D input is split into slices along
``axis`` (default: last axis), each slice is scored and the slice scores are
averaged (slices without any mask pixel are left out).

* :func:`ms_ssim` - MONAI's :func:`monai.metrics.compute_ms_ssim`
  (Wang et al. 2003; Gaussian window, 5 scales with the usual weights).
* :func:`histcc` - Pearson correlation of the two intensity histograms.
* :func:`fsim` - FSIM (Zhang et al. 2011) from ``piq`` 0.8.0, loaded without
  ``piq/__init__`` (which needs torchvision); install it with
  ``pip install --no-deps piq==0.8.0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seg2med.metrics._thirdparty import import_bare

#: MS-SSIM weights of the five scales (Wang et al. 2003), MONAI's default.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_MS_SSIM_BATCH = 32  # slices per MONAI call (bounds memory for large volumes)
_FSIM_BATCH = 8  # slices per piq call: the 16 complex filter responses per slice are large


def _pair(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None, spatial: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if pred.size == 0:
        raise ValueError("images are empty")
    if spatial and pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D slice or a 3D volume, got shape {pred.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        raise ValueError("images contain NaN or infinite values")
    if mask is None:
        return pred, ref, None
    m = np.asarray(mask, bool)
    if m.shape != pred.shape:
        raise ValueError(f"mask {m.shape} does not match images {pred.shape}")
    if not m.any():
        raise ValueError("mask is empty")
    return pred, ref, m


def _slices(a: np.ndarray, axis: int) -> np.ndarray:
    """(N, H, W) stack of the 2D planes of ``a`` (a 2D array gives N = 1)."""
    return a[None] if a.ndim == 2 else np.moveaxis(a, axis, 0)


# --------------------------------------------------------------------------- MS-SSIM


def ms_ssim_min_size(kernel_size: int = 11, scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest slice side MONAI's MS-SSIM accepts for ``scales`` scales and ``kernel_size``.

    MONAI requires ``side // max(1, scales - 1) ** 2 > kernel_size - 1``; for 5
    scales and the standard 11-pixel window that is 176 px.
    """
    return int(kernel_size) * max(1, scales - 1) ** 2


def ms_ssim(
    pred: np.ndarray,
    ref: np.ndarray,
    data_range: float,
    mask: np.ndarray | None = None,
    *,
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    axis: int = -1,
) -> float:
    """Multi-scale SSIM (MONAI ``compute_ms_ssim``), per 2D slice, averaged over slices.

    Each scale halves the slice, so 5 scales with the 11-pixel window need
    slices of at least 176 px per side (:func:`ms_ssim_min_size`). For smaller
    slices pass a smaller ``kernel_size`` (and ``kernel_sigma``): e.g. 128 px
    slices work with ``kernel_size=7, kernel_sigma=1.0``; or fewer ``weights``
    (scales). Too small a slice raises :class:`ValueError` naming the limit.

    Mask: MS-SSIM pools every scale over the whole (downsampled) image, so
    the mask is applied by (1) cropping all slices to the in-plane bounding box
    of the mask, enlarged (centred, within the image) to the minimum size the
    scales need, and (2) inside that box replacing the prediction by the
    reference wherever the mask is false, so that differences outside the
    mask never lower the score. Slices without a mask pixel are skipped. The
    unmasked pixels left in the box count as perfect agreement, so the score
    is optimistic in proportion to their share: negligible for a body mask,
    but a mask much smaller than the minimum box gives a score near 1 (use
    SSIM for small regions).
    """
    pred, ref, m = _pair(pred, ref, mask)
    p, r = _slices(pred, axis), _slices(ref, axis)
    h, w = p.shape[1:]
    need = ms_ssim_min_size(kernel_size, len(weights))
    if min(h, w) < need:
        div = max(1, len(weights) - 1) ** 2
        raise ValueError(
            f"MS-SSIM with {len(weights)} scales and kernel_size {kernel_size} needs slices of at least {need} px "
            f"per side, got {h}x{w}; pass kernel_size <= {min(h, w) // div} or fewer weights (scales)"
        )
    if m is not None:
        ms = _slices(m, axis)
        keep = ms.any(axis=(1, 2))
        p, r, ms = p[keep], r[keep], ms[keep]
        rows, cols = np.nonzero(ms.any(axis=0))
        box = []
        for lo, hi, size in ((rows.min(), rows.max() + 1, h), (cols.min(), cols.max() + 1, w)):
            extra = max(0, need - (hi - lo))
            lo = max(0, lo - extra // 2)
            hi = min(size, max(hi, lo + need))
            lo = max(0, hi - max(need, hi - lo))
            box.append(slice(lo, hi))
        p, r, ms = p[:, box[0], box[1]], r[:, box[0], box[1]], ms[:, box[0], box[1]]
        p = np.where(ms, p, r)

    import torch
    from monai.metrics import compute_ms_ssim

    values = []
    for i in range(0, len(p), _MS_SSIM_BATCH):
        v = compute_ms_ssim(
            torch.from_numpy(np.ascontiguousarray(p[i:i + _MS_SSIM_BATCH, None])),
            torch.from_numpy(np.ascontiguousarray(r[i:i + _MS_SSIM_BATCH, None])),
            spatial_dims=2,
            data_range=float(data_range),
            kernel_size=int(kernel_size),
            kernel_sigma=float(kernel_sigma),
            weights=tuple(float(x) for x in weights),
        )
        values.append(v.double().numpy().ravel())
    return float(np.mean(np.concatenate(values)))


# --------------------------------------------------------------------------- HistCC


def histcc(
    pred: np.ndarray,
    ref: np.ndarray,
    mask: np.ndarray | None = None,
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
) -> float:
    """Histogram correlation coefficient: Pearson correlation of the two intensity histograms.

    Both histograms use the same ``bins`` equal bins over ``value_range``
    (default: min to max of both images inside the mask; values outside a
    given range are not counted). 1 for identical histograms. NaN when one
    histogram is flat (all bins equal), where the correlation is undefined.
    Any shape is accepted (e.g. 1-D samples of intensities).
    """
    pred, ref, m = _pair(pred, ref, mask, spatial=False)
    a, b = (pred, ref) if m is None else (pred[m], ref[m])
    if value_range is None:
        value_range = (float(min(a.min(), b.min())), float(max(a.max(), b.max())))
    if not value_range[1] >= value_range[0]:
        raise ValueError(f"value_range {value_range} is not (low, high)")
    if int(bins) < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    ha = np.histogram(a, bins=int(bins), range=value_range)[0].astype(np.float64)
    hb = np.histogram(b, bins=int(bins), range=value_range)[0].astype(np.float64)
    da, db = ha - ha.mean(), hb - hb.mean()
    denom = np.sqrt((da * da).sum() * (db * db).sum())
    return float("nan") if denom == 0 else float((da * db).sum() / denom)


# --------------------------------------------------------------------------- FSIM


def _piq_fsim():
    return import_bare("piq", "fsim")


def _fsim_pooled(fs, x, y, w):
    """Numerator and denominator of FSIM pooled with pixel weights ``w`` (piq's maps, grayscale).

    Reproduces :func:`piq.fsim.fsim` (``chromatic=False``, default parameters)
    up to the final pooling, which is ``sum(w * S_L * PC_m) / sum(w * PC_m)``.
    """
    import torch
    import torch.nn.functional as F

    k = max(1, round(min(x.shape[-2:]) / 256))  # piq: average pooling of large images
    x, y, w = F.avg_pool2d(x, k), F.avg_pool2d(y, k), F.avg_pool2d(w, k)
    filters = fs._construct_filters(x, 4, 4, 6, 2, 0.55, 1.2)
    pc_x = fs._phase_congruency(x, filters=filters, scales=4, orientations=4, k=2.0)
    pc_y = fs._phase_congruency(y, filters=filters, scales=4, orientations=4, k=2.0)
    sch = fs.scharr_filter(device=x.device, dtype=x.dtype)
    kernels = torch.stack([sch, sch.transpose(-1, -2)])
    gm = fs.similarity_map(fs.gradient_map(x, kernels), fs.gradient_map(y, kernels), 160)
    pc = fs.similarity_map(pc_x, pc_y, 0.85)
    pc_max = torch.where(pc_x > pc_y, pc_x, pc_y)
    return (gm * pc * pc_max * w).sum(dim=(1, 2, 3)), (pc_max * w).sum(dim=(1, 2, 3))


def fsim(pred: np.ndarray, ref: np.ndarray, data_range: float, mask: np.ndarray | None = None, axis: int = -1) -> float:
    """Feature similarity index FSIM (Zhang et al. 2011), grayscale, per 2D slice, averaged over slices.

    Computed by ``piq.fsim`` (piq 0.8.0, default parameters, ``chromatic=False``).
    Values must lie in ``[0, data_range]`` (piq rescales them to [0, 255], the
    scale its constants are tuned for); shift and window CT, e.g. to [0, 1].

    Mask: FSIM pools the local similarity ``S_L`` with the phase-congruency
    weight ``PC_m = max(PC_pred, PC_ref)``; with a mask the pooling runs over
    the mask pixels only, ``sum_mask(S_L * PC_m) / sum_mask(PC_m)``. Phase
    congruency and gradients are still computed on the whole slice (they are
    global-filter responses), and for slices above 384 px, which piq
    average-pools first, the mask is pooled the same way and used as a weight.
    With an all-true mask the result equals piq's. A slice whose mask holds
    no phase congruency at all (a flat region) has no FSIM and is left out;
    NaN if that is true of every slice.

    Raises:
        ImportError: piq is not installed (the message gives the install command).
    """
    pred, ref, m = _pair(pred, ref, mask)
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    lo, hi = min(pred.min(), ref.min()), max(pred.max(), ref.max())
    if lo < 0 or hi > data_range:
        raise ValueError(f"FSIM needs values in [0, data_range={data_range}], got [{lo:g}, {hi:g}]; rescale the images")
    import torch

    fs = _piq_fsim()
    p, r = _slices(pred, axis), _slices(ref, axis)
    if m is not None:
        ms = _slices(m, axis)
        keep = ms.any(axis=(1, 2))
        p, r, ms = p[keep], r[keep], ms[keep]
    scores = []
    with torch.no_grad():
        for i in range(0, len(p), _FSIM_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(p[i:i + _FSIM_BATCH, None]))
            y = torch.from_numpy(np.ascontiguousarray(r[i:i + _FSIM_BATCH, None]))
            if m is None:
                s = fs.fsim(x, y, reduction="none", data_range=float(data_range), chromatic=False)
            else:
                wt = torch.from_numpy(np.ascontiguousarray(ms[i:i + _FSIM_BATCH, None], dtype=np.float64))
                num, den = _fsim_pooled(fs, x / float(data_range) * 255, y / float(data_range) * 255, wt)
                s = torch.where(den > 0, num / den.clamp_min(1e-300), torch.nan)
            scores.append(s.double().numpy())
    scores_all = np.concatenate(scores)
    return float("nan") if np.isnan(scores_all).all() else float(np.nanmean(scores_all))

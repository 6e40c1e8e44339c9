"""Segmentation fidelity per class: Dice and 95th-percentile Hausdorff distance (MONAI).

Both take two integer label maps of one shape (2D or 3D) and return a dict
``class_id -> value`` for ``classes`` (default: every label present in either
map except 0, the background). Absent classes:

=====================  ========  ========
class present in       Dice      HD95
=====================  ========  ========
both                   MONAI     MONAI
only one of the maps   0.0       inf
neither                NaN       NaN
=====================  ========  ========

NaN marks "not defined" (ignored by :func:`seg2med.metrics.mean_sd`); inf
marks a class that was missed or hallucinated entirely.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np


def _labels(pred_labels: np.ndarray, ref_labels: np.ndarray, classes: Iterable[int] | None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    p, r = np.asarray(pred_labels), np.asarray(ref_labels)
    if p.shape != r.shape:
        raise ValueError(f"prediction {p.shape} and reference {r.shape} label maps differ in shape")
    if p.ndim not in (2, 3):
        raise ValueError(f"expected 2D or 3D label maps, got shape {p.shape}")
    for a in (p, r):
        is_int = np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)
        if not is_int and not np.array_equal(a, np.round(a)):
            raise ValueError(f"label maps must hold integer labels, got dtype {a.dtype} with fractions")
    p, r = p.astype(np.int64), r.astype(np.int64)
    if classes is None:
        cls = [int(c) for c in np.union1d(np.unique(p), np.unique(r)) if c != 0]
    else:
        cls = [int(c) for c in classes]
    return p, r, cls


def _binary(a: np.ndarray):
    import torch

    return torch.from_numpy(a[None, None].astype(np.float32))


def _per_class(p: np.ndarray, r: np.ndarray, classes: list[int], one_missing: float,
               score: Callable[[np.ndarray, np.ndarray], float]) -> dict[int, float]:
    """``score`` of each class's two masks; NaN when absent from both, ``one_missing`` when absent from one."""
    out: dict[int, float] = {}
    for c in classes:
        pm, rm = p == c, r == c
        if not pm.any() and not rm.any():
            out[c] = float("nan")
        elif not pm.any() or not rm.any():
            out[c] = one_missing
        else:
            out[c] = score(pm, rm)
    return out


def dice_per_class(pred_labels: np.ndarray, ref_labels: np.ndarray, classes: Iterable[int] | None = None) -> dict[int, float]:
    """Dice ``2|P & R| / (|P| + |R|)`` per class (MONAI ``compute_dice``); see the module table for absent classes."""
    from monai.metrics import compute_dice

    p, r, cls = _labels(pred_labels, ref_labels, classes)
    return _per_class(p, r, cls, 0.0, lambda pm, rm: float(
        compute_dice(_binary(pm), _binary(rm), include_background=True, ignore_empty=False)[0, 0]))


def dice_per_region(pred_labels: np.ndarray, ref_labels: np.ndarray,
                    regions: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Dice of each region = a union of label ids (BraTS: whole tumour, tumour core, enhancing tumour), as
    :func:`dice_per_class` scores a class (NaN when the region is absent from both maps, 0 when from one)."""
    p, r, _ = _labels(pred_labels, ref_labels, [])
    out: dict[str, float] = {}
    for name, ids in regions.items():
        ids = [int(i) for i in ids]
        out[name] = dice_per_class(np.isin(p, ids).astype(np.uint8), np.isin(r, ids).astype(np.uint8), [1])[1]
    return out


def hd95_per_class(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: float | Sequence[float],
    classes: Iterable[int] | None = None,
) -> dict[int, float]:
    """Symmetric 95th-percentile Hausdorff distance per class, in the units of ``spacing`` (e.g. mm).

    MONAI ``compute_hausdorff_distance(percentile=95)`` on the object
    boundaries: the larger of the two directed 95th percentiles of
    boundary-to-boundary Euclidean distances. ``spacing``: one number or one
    per axis. See the module table for absent classes.
    """
    from monai.metrics import compute_hausdorff_distance

    p, r, cls = _labels(pred_labels, ref_labels, classes)
    sp = [float(s) for s in np.atleast_1d(np.asarray(spacing, np.float64))]
    if len(sp) == 1:
        sp = sp * p.ndim
    if len(sp) != p.ndim or min(sp) <= 0:
        raise ValueError(f"spacing must be one positive number or one per axis ({p.ndim}), got {spacing}")

    def hd95(pm: np.ndarray, rm: np.ndarray) -> float:
        with warnings.catch_warnings():  # MONAI 1.6 warns about an argument it passes to itself
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
            return float(compute_hausdorff_distance(_binary(pm), _binary(rm), include_background=True, percentile=95,
                                                    spacing=sp)[0, 0])

    return _per_class(p, r, cls, float("inf"), hd95)

"""Body contour (outer skin surface) from a CT, an MR or a label map.

All functions take plain arrays plus the voxel spacing (mm) and return a
boolean mask of the input's shape. Morphology is done with Euclidean distance
transforms in mm (``scipy.ndimage.distance_transform_edt`` with ``sampling``),
so structuring elements are true balls of the requested radius on anisotropic
grids and the cost does not grow with the radius.

"Per-slice" operations act on axial slices; the voxel axis closest to the
superior-inferior direction is taken from the affine (:func:`axial_axis`),
never assumed to be axis 2.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from nibabel.orientations import io_orientation
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from seg2med.errors import InputError

log = logging.getLogger(__name__)

#: Radius (mm) of the ball used to cut the CT table and thin attachments off the body.
TABLE_OPENING_MM = 5.0
#: Radius (mm) of the closing that bridges small gaps in MR and label-map contours.
CLOSING_MM = 10.0


def axial_axis(affine: np.ndarray | None) -> int:
    """Voxel axis that runs superior-inferior according to ``affine`` (2 when no affine is given)."""
    if affine is None:
        return 2
    ornt = io_orientation(np.asarray(affine, dtype=float))
    hits = np.flatnonzero(ornt[:, 0] == 2)  # world axis 2 = S
    return int(hits[0]) if hits.size else 2


def _spacing3(spacing: float | Sequence[float], ndim: int = 3) -> tuple[float, ...]:
    sp = np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,))
    if np.any(sp <= 0) or not np.all(np.isfinite(sp)):
        raise InputError(f"voxel spacing must be positive, got {tuple(sp)}")
    return tuple(float(s) for s in sp)


def _check3d(arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise InputError(f"{what}: expected a 3D array, got shape {arr.shape}")
    return arr


def _erode(mask: np.ndarray, radius: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Erosion by a ball of ``radius`` mm; the array border counts as inside (no erosion there)."""
    if mask.all() or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(mask, sampling=spacing) > radius


def _dilate(mask: np.ndarray, radius: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Dilation by a ball of ``radius`` mm."""
    if mask.all() or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing) <= radius


def binary_opening_mm(mask: np.ndarray, radius: float, spacing: float | Sequence[float]) -> np.ndarray:
    """Morphological opening by a ball of ``radius`` mm (removes structures thinner than ~2*radius)."""
    sp = _spacing3(spacing, mask.ndim)
    return _dilate(_erode(mask, radius, sp), radius, sp) & mask


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every non-zero voxel of ``mask``; None when empty."""
    box = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def binary_closing_mm(mask: np.ndarray, radius: float, spacing: float | Sequence[float]) -> np.ndarray:
    """Morphological closing by a ball of ``radius`` mm, padded so that nothing bleeds to the border.

    Computed on the mask's bounding box only: a closing by a ball never leaves the convex hull of the
    mask, so the voxels outside the box stay empty (same result, less distance-transform work)."""
    sp = _spacing3(spacing, mask.ndim)
    box = bounding_box(mask)
    if box is None:
        return np.zeros(mask.shape, dtype=bool)
    inner = np.asarray(mask[box], dtype=bool)
    pad = [int(np.ceil(radius / s)) + 1 for s in sp]
    padded = np.pad(inner, [(p, p) for p in pad])
    closed = _erode(_dilate(padded, radius, sp), radius, sp) | padded
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = closed[tuple(slice(p, p + n) for p, n in zip(pad, inner.shape))]
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``mask`` (empty stays empty)."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def fill_holes_slicewise(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill 2D holes in every slice perpendicular to ``axis`` (one vectorised call)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    plane = [slice(None)] * 3
    plane[axis] = 1
    structure[tuple(plane)] = ndi.generate_binary_structure(2, 1)
    return ndi.binary_fill_holes(mask, structure=structure)


def _fill(mask: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """3D hole filling, then per-axial-slice filling (cavities cut open by the field of view)."""
    return fill_holes_slicewise(ndi.binary_fill_holes(mask), axial_axis(affine))


def body_mask_from_ct(
    hu: np.ndarray,
    spacing: float | Sequence[float],
    threshold: float = -500.0,
    *,
    affine: np.ndarray | None = None,
    opening_mm: float = TABLE_OPENING_MM,
) -> np.ndarray:
    """Body contour of a CT in HU.

    Threshold at ``threshold`` HU; opening by a ball of ``opening_mm`` mm to
    detach the table, blankets and thin lines; the largest 3D connected
    component; then 3D and per-axial-slice hole filling (lungs, bowel gas).
    """
    hu = _check3d(hu, "CT")
    sp = _spacing3(spacing)
    mask = hu > threshold
    if not mask.any():
        raise InputError(f"CT: no voxel above {threshold} HU (is the image in HU?)")
    opened = binary_opening_mm(mask, opening_mm, sp)
    body = largest_component(opened if opened.any() else mask)
    return _fill(body, affine)


def body_mask_from_mr(
    img: np.ndarray,
    spacing: float | Sequence[float],
    *,
    affine: np.ndarray | None = None,
    closing_mm: float = CLOSING_MM,
) -> np.ndarray:
    """Body contour of an MR image.

    Otsu threshold (:func:`skimage.filters.threshold_otsu`), closing by a ball
    of ``closing_mm`` mm (bridges signal voids at the skin and in bowel gas),
    the largest 3D component, then 3D and per-axial-slice hole filling.
    """
    img = _check3d(img, "MR").astype(np.float32, copy=False)
    sp = _spacing3(spacing)
    if not np.isfinite(img).all() or float(img.max()) == float(img.min()):
        raise InputError("MR: image is constant or holds NaN/inf; cannot threshold it")
    mask = img > threshold_otsu(img)
    body = largest_component(binary_closing_mm(mask, closing_mm, sp))
    return _fill(body, affine)


def body_mask_from_labels(
    labels: np.ndarray,
    spacing: float | Sequence[float],
    *,
    affine: np.ndarray | None = None,
    closing_mm: float = CLOSING_MM,
) -> np.ndarray:
    """Body contour approximated from a label map: closing of all labelled voxels + per-slice fill.

    Only as good as the labels: without tissue types (subcutaneous fat) the
    contour hugs the organs and muscles and misses the skin layer.
    """
    labels = _check3d(labels, "label map")
    sp = _spacing3(spacing)
    union = labels != 0
    return _fill(binary_closing_mm(union, closing_mm, sp), affine)

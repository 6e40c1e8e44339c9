"""Exactly invertible slice geometry: reorient, slice, resample in-plane, pad/crop.

Forward (volume on its original grid -> stack of fixed-size 2D slices):

1. :class:`Reorientation` - flips/permutations only, to the closest canonical
   RAS frame (array axes 0 = R, 1 = A, 2 = S). Undone exactly.
2. :class:`SliceGeometry` - slices along the axis of the view (axial: S,
   coronal: A, sagittal: R), resamples each slice plane to ``spacing`` mm
   (voxel centres aligned on the plane's centre; through-plane untouched) and
   centre-pads/crops it to ``size``. ``undo`` maps a stack back to the
   canonical grid (crop regions come back as ``fill``).
3. :class:`VolumeGeometry` - the 3D counterpart for tri-planar sampling: the
   canonical volume resampled to ``spacing`` mm along every axis and padded.

Both records serialise to JSON-ready dicts (``to_dict``/``from_dict``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from seg2med.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: slicing axis of each view in the canonical RAS frame
AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}


def check_axis(axis: str) -> str:
    a = str(axis).lower()
    if a not in AXES:
        raise ConfigError(f"unknown slicing axis {axis!r} (expected one of {', '.join(AXES)})")
    return a


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """The orientation transform undoing ``ornt`` (axis i -> j with flip f  =>  j -> i with f)."""
    inv = np.zeros_like(ornt)
    for i, (j, flip) in enumerate(ornt):
        inv[int(j)] = (i, flip)
    return inv


@dataclass(frozen=True)
class Reorientation:
    """Flip/permutation from an original grid to the closest canonical RAS grid."""

    transform: np.ndarray  # (3, 2) nibabel orientation transform, original -> canonical
    original_shape: tuple[int, int, int]
    original_affine: np.ndarray
    canonical_affine: np.ndarray

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, ...]) -> "Reorientation":
        affine = np.asarray(affine, dtype=np.float64)
        shape3 = tuple(int(s) for s in shape[:3])
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("RAS")
        )
        canonical = affine @ nib.orientations.inv_ornt_aff(ornt, shape3)
        return cls(ornt.astype(np.float64), shape3, affine, canonical)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(int(self.original_shape[int(i)]) for i in _invert_ornt(self.transform)[:, 0])

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        return _spacing(self.canonical_affine)

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.transform, [[0, 1], [1, 1], [2, 1]]))

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Original grid -> canonical grid (extra trailing axes are carried along)."""
        if tuple(arr.shape[:3]) != self.original_shape:
            raise InputError(f"array shape {arr.shape} does not match original grid {self.original_shape}")
        return np.ascontiguousarray(nib.orientations.apply_orientation(arr, self.transform))

    def undo(self, arr: np.ndarray) -> np.ndarray:
        """Canonical grid -> original grid, exactly."""
        if tuple(arr.shape[:3]) != self.canonical_shape:
            raise InputError(f"array shape {arr.shape} does not match canonical grid {self.canonical_shape}")
        return np.ascontiguousarray(nib.orientations.apply_orientation(arr, _invert_ornt(self.transform)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "transform": self.transform.astype(int).tolist(),
            "axcodes": "".join(nib.orientations.aff2axcodes(self.original_affine)),
            "original_shape": list(self.original_shape),
            "original_affine": self.original_affine.tolist(),
            "canonical_shape": list(self.canonical_shape),
            "canonical_affine": self.canonical_affine.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reorientation":
        return cls(
            np.asarray(d["transform"], dtype=np.float64),
            tuple(int(s) for s in d["original_shape"]),
            np.asarray(d["original_affine"], dtype=np.float64),
            np.asarray(d["canonical_affine"], dtype=np.float64),
        )


def _pad_crop(n: int, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centre ``(pad_before, pad_after), (crop_before, crop_after)`` taking length n to size."""
    if n <= size:
        before = (size - n) // 2
        return (before, size - n - before), (0, 0)
    before = (n - size) // 2
    return (0, 0), (before, n - size - before)


def _grown(n: int, multiple: int, minimum: int) -> int:
    """The smallest multiple of ``multiple`` that holds ``n`` px, and at least ``minimum``."""
    return max(minimum, -(-n // multiple) * multiple)


def _centre_zoom(n: tuple[int, ...], m: tuple[int, ...], in_spacing: tuple[float, ...],
                 spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` per axis mapping index j of ``m`` samples at ``spacing`` mm onto index x = scale*j + offset
    of ``n`` samples at ``in_spacing`` mm, the centres of both grids aligned."""
    n_, m_ = np.asarray(n, dtype=np.float64), np.asarray(m, dtype=np.float64)
    scale = spacing / np.asarray(in_spacing)
    return scale, (n_ - 1) / 2 - scale * (m_ - 1) / 2


#: Decimals (mm) to which input voxel sizes are rounded before slicing (float32 header noise is ~1e-6 mm).
SPACING_DECIMALS = 4


@dataclass(frozen=True)
class SliceGeometry:
    """Slicing + in-plane resampling + centre pad/crop of one view of a canonical volume."""

    axis: str
    canonical_shape: tuple[int, int, int]
    in_plane_spacing: tuple[float, float]  # spacing of the two plane axes before resampling
    spacing: float  # target in-plane spacing (mm)
    resampled_shape: tuple[int, int]
    size: tuple[int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    crop: tuple[tuple[int, int], tuple[int, int]]

    @classmethod
    def plan(
        cls,
        canonical_shape: tuple[int, ...],
        canonical_spacing: tuple[float, ...],
        axis: str,
        spacing: float = 1.0,
        size: int | tuple[int, int] = 256,
        grow_multiple: int | None = None,
        margin: int = 0,
    ) -> "SliceGeometry":
        """Work out the geometry of ``axis`` slices for a canonical grid.

        With ``grow_multiple`` the slice size is never smaller than the resampled plane plus ``margin`` px on
        each side: a side that would be cropped (or leave less than the margin) grows to the next multiple of
        ``grow_multiple`` (the network's down-sampling factor) instead, so nothing of the plane is cut away
        (generation of a wide field of view; :meth:`extend_edges`).
        """
        axis = check_axis(axis)
        if not spacing > 0:
            raise ConfigError(f"target spacing must be > 0 mm, got {spacing}")
        size2 = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        if len(size2) != 2 or min(size2) < 1:
            raise ConfigError(f"slice size must be a positive int or a pair, got {size!r}")
        shape = tuple(int(s) for s in canonical_shape[:3])
        plane = [a for a in range(3) if a != AXES[axis]]
        # voxel sizes come from float32 headers (8 mm stored as 7.99999976): rounded to 0.1 um, so that such
        # noise cannot move a resampling position across a nearest-neighbour tie and change the slices
        in_sp = tuple(round(float(canonical_spacing[a]), SPACING_DECIMALS) for a in plane)
        res = tuple(max(1, int(round(shape[a] * s / spacing))) for a, s in zip(plane, in_sp))
        if grow_multiple is not None:
            g = int(grow_multiple)
            if g < 1:
                raise ConfigError(f"grow_multiple must be >= 1, got {grow_multiple}")
            if int(margin) < 0:
                raise ConfigError(f"margin must be >= 0 px, got {margin}")
            size2 = tuple(_grown(r + 2 * int(margin), g, m) for m, r in zip(size2, res))
        pads, crops = zip(*(_pad_crop(n, m) for n, m in zip(res, size2)))
        return cls(axis, shape, in_sp, float(spacing), res, size2, tuple(pads), tuple(crops))

    @property
    def slice_axis(self) -> int:
        return AXES[self.axis]

    @property
    def plane_axes(self) -> tuple[int, int]:
        return tuple(a for a in range(3) if a != self.slice_axis)

    @property
    def n_slices(self) -> int:
        return self.canonical_shape[self.slice_axis]

    @property
    def plane_shape(self) -> tuple[int, int]:
        return tuple(self.canonical_shape[a] for a in self.plane_axes)

    def _zoom(self) -> tuple[np.ndarray, np.ndarray]:
        """Resampled index j -> plane index x = scale*j + offset (centres aligned)."""
        return _centre_zoom(self.plane_shape, self.resampled_shape, self.in_plane_spacing, self.spacing)

    def cut_fraction(self, mask: np.ndarray) -> float:
        """Fraction of the non-zero voxels of a canonical ``mask`` (e.g. the body) that fall outside the
        slices, i.e. in what the centre crop cuts away (0.0 when nothing is cropped)."""
        mask = np.asarray(mask) != 0
        total = int(mask.sum())
        if total == 0 or not any(sum(c) for c in self.crop):
            return 0.0
        scale, offset = self._zoom()
        keep = np.ones(mask.shape, dtype=bool)
        for k, (ax, (c0, c1)) in enumerate(zip(self.plane_axes, self.crop)):
            lo = scale[k] * (c0 - 0.5) + offset[k]  # plane coordinates covered by the kept resampled pixels
            hi = scale[k] * (self.resampled_shape[k] - c1 - 0.5) + offset[k]
            x = np.arange(mask.shape[ax])
            inside = (x >= lo) & (x < hi)
            keep &= inside.reshape([-1 if a == ax else 1 for a in range(3)])
        return float((mask & ~keep).sum() / total)

    def forward(self, vol: np.ndarray, order: int = 1) -> np.ndarray:
        """Canonical volume -> ``[N, H, W]`` slices (resampled, padded with 0 / cropped)."""
        if tuple(vol.shape) != self.canonical_shape:
            raise InputError(f"volume shape {vol.shape} does not match canonical grid {self.canonical_shape}")
        if vol.dtype == bool:
            return self.forward(vol.astype(np.uint8), order=order).astype(bool)
        stack = np.moveaxis(vol, self.slice_axis, 0)
        scale, offset = self._zoom()
        out = ndimage.affine_transform(
            stack, np.r_[1.0, scale], offset=np.r_[0.0, offset],
            output_shape=(self.n_slices, *self.resampled_shape), order=order, mode="nearest",
        )
        (c0, c1), (c2, c3) = self.crop
        out = out[:, c0 : out.shape[1] - c1, c2 : out.shape[2] - c3]
        return np.pad(out, ((0, 0), *self.pad), constant_values=0)

    def extend_edges(self, slices: np.ndarray, margin: int) -> np.ndarray:
        """``[N, H, W]`` slices with the edges of the field of view continued ``margin`` px into the padding
        (edge values replicated; beyond that the padding stays 0).

        Where the body reaches the edge of the field of view (a scan cropped inside the body), a network
        shown zero padding right there sees a body outline that is not in the image and draws skin and
        subcutaneous fat over the edge; with the body continued a little, the outline it draws falls in the
        padding, which :meth:`undo` drops. Where the edge is air, the continuation is air. Continued much
        further, the body becomes larger than any the network saw: keep ``margin`` small (measured in
        ``benchmarks/results/generalization-*.md``)."""
        slices = np.asarray(slices)
        if slices.ndim != 3 or tuple(slices.shape[1:]) != tuple(self.size):
            raise InputError(f"expected slices of shape (N, {self.size[0]}, {self.size[1]}), got {slices.shape}")
        if int(margin) < 0:
            raise ConfigError(f"margin must be >= 0 px, got {margin}")
        (p0, p1), (p2, p3) = self.pad
        inner = slices[:, p0 : slices.shape[1] - p1, p2 : slices.shape[2] - p3]
        q = [min(int(margin), p) for p in (p0, p1, p2, p3)]
        out = np.pad(inner, ((0, 0), (q[0], q[1]), (q[2], q[3])), mode="edge")
        return np.pad(out, ((0, 0), (p0 - q[0], p1 - q[1]), (p2 - q[2], p3 - q[3])), constant_values=0).astype(slices.dtype)

    def undo(self, slices: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """``[N, H, W]`` slices -> canonical volume; regions cropped away become ``fill``."""
        slices = np.asarray(slices)
        if slices.ndim != 3 or tuple(slices.shape) != (self.n_slices, *self.size):
            raise InputError(f"expected slices of shape {(self.n_slices, *self.size)}, got {slices.shape}")
        if slices.dtype == bool:
            return self.undo(slices.astype(np.uint8), order=order, fill=fill).astype(bool)
        (p0, p1), (p2, p3) = self.pad
        inner = slices[:, p0 : slices.shape[1] - p1, p2 : slices.shape[2] - p3]
        res = np.pad(inner, ((0, 0), *self.crop), constant_values=fill)
        scale, offset = self._zoom()
        back = ndimage.affine_transform(
            res, np.r_[1.0, 1.0 / scale], offset=np.r_[0.0, -offset / scale],
            output_shape=(self.n_slices, *self.plane_shape), order=order, mode="nearest",
        )
        return np.moveaxis(back, 0, self.slice_axis)

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "slice_axis": self.slice_axis,
            "plane_axes": list(self.plane_axes),
            "n_slices": self.n_slices,
            "canonical_shape": list(self.canonical_shape),
            "in_plane_spacing": list(self.in_plane_spacing),
            "spacing": self.spacing,
            "resampled_shape": list(self.resampled_shape),
            "size": list(self.size),
            "pad": [list(p) for p in self.pad],
            "crop": [list(c) for c in self.crop],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SliceGeometry":
        pair = lambda v: tuple(int(x) for x in v)  # noqa: E731
        return cls(
            check_axis(d["axis"]),
            tuple(int(s) for s in d["canonical_shape"]),
            tuple(float(s) for s in d["in_plane_spacing"]),
            float(d["spacing"]),
            pair(d["resampled_shape"]),
            pair(d["size"]),
            tuple(pair(p) for p in d["pad"]),
            tuple(pair(c) for c in d["crop"]),
        )


@dataclass(frozen=True)
class VolumeGeometry:
    """A canonical volume resampled to ``spacing`` mm along all three axes and centre-padded to ``size``: the
    isotropic canvas on which every slice along any axis is a slice of the model's grid (tri-planar sampling,
    :mod:`seg2med.sampling.planes`). Nothing is cropped: each side is at least ``min_size`` and grows to the next
    multiple of ``grow_multiple`` that holds the resampled volume plus ``margin`` px (on the ``margin_axes``)."""

    canonical_shape: tuple[int, int, int]
    canonical_spacing: tuple[float, float, float]
    spacing: float
    resampled_shape: tuple[int, int, int]
    size: tuple[int, int, int]
    pad: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    @classmethod
    def plan(cls, canonical_shape: tuple[int, ...], canonical_spacing: tuple[float, ...], spacing: float = 1.0,
             min_size: int = 256, grow_multiple: int = 1, margin: int = 0,
             margin_axes: tuple[int, ...] = (0, 1)) -> "VolumeGeometry":
        """The canvas of a canonical grid (voxel sizes rounded as in :meth:`SliceGeometry.plan`)."""
        if not spacing > 0:
            raise ConfigError(f"target spacing must be > 0 mm, got {spacing}")
        if int(min_size) < 1 or int(grow_multiple) < 1 or int(margin) < 0:
            raise ConfigError(f"min_size and grow_multiple must be >= 1 and margin >= 0, got {min_size}, {grow_multiple}, {margin}")
        shape = tuple(int(s) for s in canonical_shape[:3])
        sp = tuple(round(float(s), SPACING_DECIMALS) for s in canonical_spacing[:3])
        res = tuple(max(1, int(round(n * s / spacing))) for n, s in zip(shape, sp))
        g = int(grow_multiple)
        size = tuple(_grown(r + (2 * int(margin) if a in margin_axes else 0), g, int(min_size)) for a, r in enumerate(res))
        pad = tuple(_pad_crop(r, m)[0] for r, m in zip(res, size))
        return cls(shape, sp, float(spacing), res, size, pad)

    def _zoom(self) -> tuple[np.ndarray, np.ndarray]:
        """Resampled index j -> canonical index x = scale*j + offset (centres aligned), per axis."""
        return _centre_zoom(self.canonical_shape, self.resampled_shape, self.canonical_spacing, self.spacing)

    def forward(self, vol: np.ndarray, order: int = 1) -> np.ndarray:
        """Canonical volume -> the canvas (resampled, padded with 0)."""
        if tuple(vol.shape) != self.canonical_shape:
            raise InputError(f"volume shape {vol.shape} does not match canonical grid {self.canonical_shape}")
        if vol.dtype == bool:
            return self.forward(vol.astype(np.uint8), order=order).astype(bool)
        out = self._resample(vol, forward=True, order=order)
        return np.pad(out, self.pad, constant_values=0)

    def _resample(self, vol: np.ndarray, forward: bool, order: int) -> np.ndarray:
        """Canonical grid -> resampled grid (``forward``) or back; a copy when the grid is already at ``spacing``
        (exact: no interpolation)."""
        scale, offset = self._zoom()
        if np.all(scale == 1.0) and np.all(offset == 0.0):
            return np.array(vol, copy=True)
        if forward:
            return ndimage.affine_transform(vol, scale, offset=offset, output_shape=self.resampled_shape, order=order,
                                            mode="nearest")
        return ndimage.affine_transform(vol, 1.0 / scale, offset=-offset / scale, output_shape=self.canonical_shape,
                                        order=order, mode="nearest")

    def extend_edges(self, canvas: np.ndarray, margin: int, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
        """The canvas with the edges of the field of view continued ``margin`` px into the padding of ``axes``
        (the 3D form of :meth:`SliceGeometry.extend_edges`, same reasons)."""
        canvas = np.asarray(canvas)
        if tuple(canvas.shape) != self.size:
            raise InputError(f"expected a canvas of shape {self.size}, got {canvas.shape}")
        if int(margin) < 0:
            raise ConfigError(f"margin must be >= 0 px, got {margin}")
        inner = canvas[tuple(slice(p0, n - p1) for (p0, p1), n in zip(self.pad, self.size))]
        q = [(min(int(margin), p0), min(int(margin), p1)) if a in axes else (0, 0) for a, (p0, p1) in enumerate(self.pad)]
        out = np.pad(inner, q, mode="edge")
        rest = [(p0 - q0, p1 - q1) for (p0, p1), (q0, q1) in zip(self.pad, q)]
        return np.pad(out, rest, constant_values=0).astype(canvas.dtype)

    def undo(self, canvas: np.ndarray, order: int = 1) -> np.ndarray:
        """The canvas -> the canonical volume."""
        canvas = np.asarray(canvas)
        if tuple(canvas.shape) != self.size:
            raise InputError(f"expected a canvas of shape {self.size}, got {canvas.shape}")
        if canvas.dtype == bool:
            return self.undo(canvas.astype(np.uint8), order=order).astype(bool)
        inner = canvas[tuple(slice(p0, n - p1) for (p0, p1), n in zip(self.pad, self.size))]
        return self._resample(inner, forward=False, order=order)

    def to_dict(self) -> dict[str, Any]:
        return {"canonical_shape": list(self.canonical_shape), "canonical_spacing": list(self.canonical_spacing),
                "spacing": self.spacing, "resampled_shape": list(self.resampled_shape), "size": list(self.size),
                "pad": [list(p) for p in self.pad]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VolumeGeometry":
        three = lambda v: tuple(int(x) for x in v)  # noqa: E731
        return cls(three(d["canonical_shape"]), tuple(float(s) for s in d["canonical_spacing"]), float(d["spacing"]),
                   three(d["resampled_shape"]), three(d["size"]), tuple(three(p) for p in d["pad"]))


def to_slices(arr: np.ndarray, reorientation: Reorientation, geometry: SliceGeometry, order: int = 1) -> np.ndarray:
    """Original-grid volume -> ``[N, H, W]`` slices of ``geometry``'s view."""
    return geometry.forward(reorientation.apply(arr), order=order)


def from_slices(
    slices: np.ndarray, reorientation: Reorientation, geometry: SliceGeometry, order: int = 1, fill: float = 0.0
) -> np.ndarray:
    """``[N, H, W]`` slices -> volume on the original grid (inverse of :func:`to_slices`)."""
    return reorientation.undo(geometry.undo(slices, order=order, fill=fill))


def mask_outside(arr: np.ndarray, body: np.ndarray, background: float = 0.0) -> np.ndarray:
    """Copy of ``arr`` with voxels outside ``body`` set to ``background``."""
    body = np.asarray(body, dtype=bool)
    if body.shape != arr.shape:
        raise InputError(f"body mask shape {body.shape} does not match image shape {arr.shape}")
    return np.where(body, arr, np.asarray(background, dtype=arr.dtype))

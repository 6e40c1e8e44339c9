"""A volume on its own grid <-> the 2D slices a model sees, and back.

:class:`SliceCodec` is a :class:`~seg2med.data.geometry.Reorientation` (closest
RAS) followed by a :class:`~seg2med.data.geometry.SliceGeometry` (slicing,
in-plane resampling, centre pad/crop). ``encode`` is what dataset preparation,
generation and segmentation do to their inputs; ``decode`` puts slices back on
the input grid. :func:`stack_neighbours` gives the 2.5D condition (+-k slices).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from seg2med.data.geometry import AXES, Reorientation, SliceGeometry, VolumeGeometry, from_slices


def neighbour_indices(index: int | np.ndarray, n: int, k: int) -> np.ndarray:
    """Indices ``index - k .. index + k`` of a stack of ``n`` slices, edge slices repeated: shape ``[..., 1 + 2k]``."""
    return np.clip(np.asarray(index)[..., None] + np.arange(-k, k + 1), 0, n - 1)


def stack_neighbours(slices: np.ndarray, k: int) -> np.ndarray:
    """``[N, H, W]`` slices -> ``[N, 1 + 2k, H, W]`` with the +-k neighbours (edge slices repeated), centre at channel k."""
    n = slices.shape[0]
    return slices[neighbour_indices(np.arange(n), n, k)]


def _encode(reorientation: Reorientation, forward, volumes: Mapping[str, np.ndarray], body: np.ndarray) -> dict[str, np.ndarray]:
    """Reorient ``volumes`` and the body mask, then ``forward(canonical, order)`` each (the encode rule of both
    codecs: integer volumes and the mask by nearest neighbour, floats linearly, clipped to [0, 1], 0 outside the
    resampled mask)."""
    canon = {k: reorientation.apply(np.asarray(a)) for k, a in volumes.items()}
    canon["mask"] = reorientation.apply(np.asarray(body, dtype=np.uint8))
    floats = [k for k, a in canon.items() if np.issubdtype(a.dtype, np.floating)]
    out = {k: forward(a, order=0) for k, a in canon.items() if k not in floats}
    for k in floats:
        resampled = np.clip(forward(canon[k], order=1), 0.0, 1.0)
        out[k] = np.where(out["mask"] > 0, resampled, 0.0).astype(np.float32)
    return out


@dataclass(frozen=True)
class SliceCodec:
    """Closest-RAS reorientation + the slice geometry of one axis (both exactly invertible)."""

    reorientation: Reorientation
    geometry: SliceGeometry
    requested_size: tuple[int, int] | None = None  # the size asked for, when the canvas grew beyond it (px)

    @classmethod
    def plan(
        cls,
        affine: np.ndarray,
        shape: tuple[int, ...],
        axis: str,
        spacing: float = 1.0,
        size: int | tuple[int, int] = 256,
        grow_multiple: int | None = None,
        margin: int = 0,
    ) -> "SliceCodec":
        """Slices along ``axis`` at ``spacing`` mm, ``size`` px, of a volume on ``affine`` / ``shape``.

        With ``grow_multiple`` a plane wider than ``size`` gets a larger canvas (the next multiple of it),
        never a crop, and room for ``margin`` px around the plane (see :meth:`SliceGeometry.plan`).
        """
        reo = Reorientation.from_affine(affine, shape)
        geo = SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, axis, spacing, size)
        if grow_multiple is None:
            return cls(reo, geo)
        grown = SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, axis, geo.spacing, geo.size,
                                   grow_multiple=grow_multiple, margin=margin)
        return cls(reo, grown, geo.size)

    @property
    def nominal_size(self) -> tuple[int, int]:
        """The slice size asked for (px); :attr:`geometry` ``.size`` is larger when the canvas grew."""
        return self.requested_size or self.geometry.size

    @property
    def grown(self) -> bool:
        return self.nominal_size != self.geometry.size

    @property
    def slice_spacing(self) -> float:
        """Distance between neighbouring slices (mm): the input's spacing along the slicing axis."""
        return float(self.reorientation.canonical_spacing[AXES[self.geometry.axis]])

    def cut_fraction(self, body: np.ndarray) -> float:
        """Fraction of ``body`` (original grid) that the slices' centre crop cuts away."""
        return self.geometry.cut_fraction(self.reorientation.apply(np.asarray(body)))

    def encode(self, volumes: Mapping[str, np.ndarray], body: np.ndarray) -> dict[str, np.ndarray]:
        """Original-grid volumes -> ``[N, H, W]`` slices of each, plus the body ``mask`` (uint8).

        Integer volumes (labels) and the mask are resampled by nearest neighbour, floating ones
        (normalised intensities in [0, 1]) linearly, clipped to [0, 1] and exactly 0 where the resampled
        mask is 0. Integer slices come first, then the float ones, each in the order given.
        """
        return _encode(self.reorientation, self.geometry.forward, volumes, body)

    def decode(self, slices: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """``[N, H, W]`` slices -> a volume on the original grid (``order`` 0 for labels; cropped regions ``fill``)."""
        return from_slices(slices, self.reorientation, self.geometry, order=order, fill=fill)


@dataclass(frozen=True)
class VolumeCodec:
    """Closest-RAS reorientation + the isotropic canvas of :class:`~seg2med.data.geometry.VolumeGeometry`: the
    volume a tri-planar sampler slices along every axis (the 3D counterpart of :class:`SliceCodec`)."""

    reorientation: Reorientation
    geometry: VolumeGeometry

    @classmethod
    def plan(cls, affine: np.ndarray, shape: tuple[int, ...], spacing: float, min_size: int, grow_multiple: int = 1,
             margin: int = 0) -> "VolumeCodec":
        """The canvas at ``spacing`` mm of a volume on ``affine`` / ``shape``: every side at least ``min_size`` px
        (the model's slice size), a multiple of ``grow_multiple``, ``margin`` px around the R-L and A-P extent."""
        reo = Reorientation.from_affine(affine, shape)
        return cls(reo, VolumeGeometry.plan(reo.canonical_shape, reo.canonical_spacing, spacing, min_size,
                                            grow_multiple, margin))

    def encode(self, volumes: Mapping[str, np.ndarray], body: np.ndarray) -> dict[str, np.ndarray]:
        """Original-grid volumes -> canvases (the same rule as :meth:`SliceCodec.encode`), plus ``mask``."""
        return _encode(self.reorientation, self.geometry.forward, volumes, body)

    def decode(self, canvas: np.ndarray, order: int = 1) -> np.ndarray:
        """A canvas -> a volume on the original grid."""
        return self.reorientation.undo(self.geometry.undo(canvas, order=order))


__all__ = ["SliceCodec", "VolumeCodec", "neighbour_indices", "stack_neighbours"]

"""Lesions on demand: insert, move or scale a brain tumour in a label map, with nested compartments.

Labels are in ``brats_medddpm`` (1 necrotic core, 2 oedema, 3 enhancing tumour, 4 other brain; see
:mod:`seg2med.anatomy.brain`). A synthetic tumour is a blob around a centre: its boundary radius varies smoothly with
direction (a seeded, Gaussian-smoothed random field on the sphere of directions), and its compartments are nested
shells of that shape — necrotic core inside, an enhancing rim around it, oedema around both — as glioblastomas appear
on T1ce and FLAIR. Every edit stays inside the brain (a tumour voxel is painted only where the map has brain), is
seeded, and works in millimetres on the map's own grid (its affine's voxel sizes), so the edited map keeps the
input's affine and shape exactly.

Following TorchIO's split, :class:`TumourParameters` are sampled first (:func:`sample_tumour`), then the
deterministic edit (:func:`insert_tumour`) applies them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from seg2med.anatomy.brain import BRAIN_CLASS, BRAIN_SCHEME
from seg2med.errors import ConfigError, InputError
from seg2med.io import Volume
from seg2med.labels import get_scheme

_S = get_scheme(BRAIN_SCHEME)
NCR, ED, ET, BRAIN = (_S.id_of(n) for n in ("necrotic_tumor_core", "peritumoral_edema", "enhancing_tumor", BRAIN_CLASS))
TUMOUR = (NCR, ED, ET)


@dataclass(frozen=True)
class TumourParameters:
    """One synthetic tumour: ``centre`` (voxel indices), the radius of the enhancing tumour's outer boundary and the
    necrotic core's share of it, the oedema's thickness (mm), the irregularity (relative radius spread) and the seed
    of its shape."""

    centre: tuple[float, float, float]
    radius_mm: float = 15.0
    core_fraction: float = 0.6
    edema_mm: float = 10.0
    irregularity: float = 0.25
    shape_seed: int = 0

    def __post_init__(self) -> None:
        for name, low, high in (("radius_mm", 1.0, 80.0), ("core_fraction", 0.0, 0.95), ("edema_mm", 0.0, 60.0),
                                ("irregularity", 0.0, 0.6)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not low <= v <= high:
                raise ConfigError(f"lesion: {name} must be a number in [{low:g}, {high:g}], got {v!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["centre"] = [float(c) for c in self.centre]
        return d


def _brain(labels: np.ndarray) -> np.ndarray:
    brain = np.isin(labels, (*TUMOUR, BRAIN))
    if not brain.any():
        raise InputError(f"lesion: the label map has no brain (scheme {BRAIN_SCHEME}: ids 1-4)")
    return brain


def _radial_field(directions: np.ndarray, irregularity: float, seed: int) -> np.ndarray:
    """Relative radius ``1 + irregularity * f(direction)``, ``f`` a smooth random function of the unit direction
    (a sum of random low-order waves, seeded), scaled to unit spread."""
    if irregularity == 0:
        return np.ones(directions.shape[:-1])
    rng = np.random.default_rng(seed)
    waves = rng.normal(size=(8, 3)) * 2.0  # 8 random plane waves on the sphere: low angular frequency
    phases = rng.uniform(0, 2 * np.pi, size=8)
    f = np.sum(np.cos(directions @ waves.T + phases), axis=-1) / np.sqrt(8 / 2)
    return np.clip(1.0 + irregularity * f, 0.3, 2.0)


def tumour_compartments(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                        p: TumourParameters) -> np.ndarray:
    """The tumour of ``p`` on a grid (uint8: 0 outside, :data:`NCR` / :data:`ET` / :data:`ED` inside, nested)."""
    out = np.zeros(shape, dtype=np.uint8)
    reach = 2.0 * (p.radius_mm + p.edema_mm)  # the radial field is clipped to 2x: nothing lies farther
    lo = [max(0, int(np.floor(p.centre[a] - reach / spacing[a]))) for a in range(3)]
    hi = [min(shape[a], int(np.ceil(p.centre[a] + reach / spacing[a])) + 1) for a in range(3)]
    if any(h <= low for low, h in zip(lo, hi)):
        return out
    idx = np.indices([h - low for low, h in zip(lo, hi)], dtype=np.float32)
    offset = np.stack([(idx[a] + lo[a] - p.centre[a]) * spacing[a] for a in range(3)], axis=-1)  # mm
    dist = np.linalg.norm(offset, axis=-1)
    directions = offset / np.maximum(dist[..., None], 1e-6)
    rel = dist / _radial_field(directions, p.irregularity, p.shape_seed)  # distance to the centre, shape-normalised
    box = np.zeros(rel.shape, dtype=np.uint8)
    box[rel < p.radius_mm + p.edema_mm] = ED
    box[rel < p.radius_mm] = ET
    box[rel < p.radius_mm * p.core_fraction] = NCR
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = box
    return out


def _paint(labels: np.ndarray, tumour: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``labels`` with ``tumour`` painted inside ``brain`` (compartments override brain and each other: core over
    enhancing over oedema, as nested; an existing tumour's voxels are kept where the new one has none)."""
    out = labels.copy()
    for cid in (ED, ET, NCR):  # inner compartments last
        out[(tumour == cid) & brain] = cid
    return out


def sample_tumour(labels: Volume, seed: int, radius_mm: tuple[float, float] = (8.0, 22.0),
                  edema_mm: tuple[float, float] = (4.0, 15.0), core_fraction: tuple[float, float] = (0.3, 0.7),
                  centre: tuple[float, float, float] | None = None, inside: np.ndarray | None = None
                  ) -> TumourParameters:
    """Parameters of a random tumour (seeded): radius, oedema and core share drawn uniformly from the ranges, the
    centre (when not given) a random voxel of the brain at least the radius from its edge, within ``inside`` (a mask,
    e.g. white matter) when given (the voxels of ``inside`` nearest that depth when none is deep enough)."""
    rng = np.random.default_rng(seed)
    r = float(rng.uniform(*radius_mm))
    params = {"radius_mm": r, "edema_mm": float(rng.uniform(*edema_mm)),
              "core_fraction": float(rng.uniform(*core_fraction)), "irregularity": float(rng.uniform(0.1, 0.35)),
              "shape_seed": int(rng.integers(2**31))}
    if centre is None:
        arr = np.asarray(labels.array)
        brain = _brain(arr)
        depth = ndimage.distance_transform_edt(brain, sampling=labels.spacing)
        region = brain if inside is None else np.asarray(inside, dtype=bool) & brain
        deep = region & (depth >= r)
        if not deep.any() and region.any():
            deep = region & (depth >= depth[region].max() - 1e-6)  # the deepest voxels of the region
        pick = np.argwhere(deep)
        if not len(pick):
            raise InputError(f"{labels.name}: no brain voxel to put a tumour in")
        centre = tuple(float(c) for c in pick[rng.integers(len(pick))])
    return TumourParameters(centre=tuple(float(c) for c in centre), **params)


def insert_tumour(labels: Volume, params: TumourParameters) -> Volume:
    """``labels`` with the tumour of ``params`` painted inside the brain (affine, shape and dtype kept)."""
    arr = np.asarray(labels.array)
    if any(not 0 <= c < n for c, n in zip(params.centre, arr.shape)):
        raise InputError(f"{labels.name}: lesion centre {list(params.centre)} (voxels) lies outside the grid {arr.shape}")
    tumour = tumour_compartments(arr.shape, labels.spacing, params)
    return labels.like(_paint(arr, tumour, _brain(arr)).astype(arr.dtype))


def _retransform_tumour(labels: Volume, transform) -> Volume:
    """``labels`` with its tumour (every compartment) replaced by ``transform(tumour)`` (same grid): the old place
    given back to the brain, the new tumour painted inside the brain only."""
    arr = np.asarray(labels.array)
    tumour = np.where(np.isin(arr, TUMOUR), arr, 0).astype(np.uint8)
    if not tumour.any():
        raise InputError(f"{labels.name}: the label map has no tumour to move or scale")
    cleared = np.where(np.isin(arr, TUMOUR), BRAIN, arr)
    return labels.like(_paint(cleared, transform(tumour), _brain(arr)).astype(arr.dtype))


def move_tumour(labels: Volume, shift_mm: tuple[float, float, float]) -> Volume:
    """The existing tumour (every compartment) moved by ``shift_mm`` (RAS+ millimetres, through the affine), its old
    place given back to the brain; it is cut where it would leave the brain."""
    step = np.linalg.solve(labels.affine[:3, :3], np.asarray(shift_mm, dtype=np.float64))  # mm -> voxels
    return _retransform_tumour(labels, lambda t: ndimage.shift(t, step, order=0, mode="constant", cval=0))


def scale_tumour(labels: Volume, factor: float) -> Volume:
    """The existing tumour scaled by ``factor`` about its centroid (nearest neighbour, every compartment), its old
    place given back to the brain; it is cut where it would leave the brain."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.1 <= factor <= 5.0:
        raise ConfigError(f"lesion: --scale must be in [0.1, 5], got {factor!r}")
    matrix = np.eye(3) / float(factor)

    def scaled(tumour: np.ndarray) -> np.ndarray:
        c = np.array(ndimage.center_of_mass(tumour > 0))
        return ndimage.affine_transform(tumour, matrix, offset=c - matrix @ c, order=0, mode="constant", cval=0)

    return _retransform_tumour(labels, scaled)


def brain_phantom(seed: int = 0, spacing: float = 1.5, shape: tuple[int, int, int] = (128, 128, 80),
                  semi_axes_mm: tuple[float, float, float] = (66.0, 80.0, 55.0)) -> Volume:
    """A brain label map without any patient data (the demo's): an ellipsoidal brain (semi-axes R-L, A-P, S-I in mm,
    about an adult brain's) centred on an RAS+ grid of ``shape`` at ``spacing`` mm, with one random tumour inserted
    (:func:`sample_tumour`, seeded), in ``brats_medddpm``."""
    spacing = float(spacing)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-(n - 1) * spacing / 2 for n in shape]
    idx = np.indices(shape, dtype=np.float32)
    r = sum(((idx[a] - (shape[a] - 1) / 2) * spacing / semi_axes_mm[a]) ** 2 for a in range(3))
    labels = Volume(np.where(r <= 1.0, BRAIN, 0).astype(np.uint8), affine)
    return insert_tumour(labels, sample_tumour(labels, seed))


def compartment_volumes(labels: Volume) -> dict[str, float]:
    """Millilitres of each tumour compartment and of the brain."""
    arr = np.asarray(labels.array)
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    return {_S.name_of(i): float((arr == i).sum()) * voxel_ml for i in (NCR, ED, ET, BRAIN)}


__all__ = ["TumourParameters", "brain_phantom", "compartment_volumes", "insert_tumour", "move_tumour", "sample_tumour", "scale_tumour",
           "tumour_compartments"]

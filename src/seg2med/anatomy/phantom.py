"""A procedural digital torso (upper abdomen, T11-L4) as a canonical ``total`` label volume.

seg2med's own phantom (XCAT and similar are commercial): ellipsoids, tubes and
smooth shapes on a RAS+ grid centred on the origin: world +x points to the
subject's right (liver at x > 0, spleen at x < 0, as in TotalSegmentator's RAS
example CT, where the liver centroid lies at x = +67 mm and the spleen's at
x = -113 mm), +y anterior, +z superior.

The layout is defined on a reference torso (half-width 165 mm, half-depth
120 mm) that is shrunk to fit the in-plane field of view, and on a normalised
height ``u`` (0 = bottom slice, 1 = top slice) so that every organ appears for
any slice count: lung bases in the top slices, liver / spleen / stomach in the
upper half, kidneys in the middle, bowel in the lower half, six vertebral levels
T11 (top) to L4 (bottom). ``seed`` jitters sizes and positions reproducibly.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage as ndi

from seg2med.errors import ConfigError
from seg2med.io.budget import check_memory
from seg2med.io.nifti import Volume
from seg2med.labels.schemes import canonical_scheme

log = logging.getLogger(__name__)

#: Vertebral levels from the top slice down.
PHANTOM_LEVELS: tuple[str, ...] = ("T11", "T12", "L1", "L2", "L3", "L4")
_HALF_WIDTH, _HALF_DEPTH = 165.0, 120.0  # reference torso, mm
_DISC_FRACTION = 0.18  # bottom part of each level without vertebral body (intervertebral disc)


class _Painter:
    """Paints shapes given in reference coordinates (X right, Y anterior, mm; U normalised height)."""

    def __init__(self, shape: tuple[int, int, int], X: np.ndarray, Y: np.ndarray, U: np.ndarray,
                 height_mm: float, rng: np.random.Generator) -> None:
        self.labels = np.zeros(shape, dtype=np.int16)
        self.X, self.Y, self.U, self.height_mm, self.rng = X, Y, U, height_mm, rng

    def jitter(self, centre: tuple[float, float, float], semi: tuple[float, float, float],
               pos_mm: float = 4.0, size: float = 0.07) -> tuple[np.ndarray, np.ndarray]:
        """Seeded random shift (mm in-plane, ~3 % of the height) and scaling (clipped to +-20 %)."""
        c = np.asarray(centre, float) + self.rng.normal(0.0, 1.0, 3) * (pos_mm, pos_mm, 0.03)
        s = np.asarray(semi, float) * np.clip(1.0 + self.rng.normal(0.0, size, 3), 0.8, 1.2)
        return c, s

    @staticmethod
    def _range(coord: np.ndarray, c: float, r: float) -> slice | None:
        idx = np.flatnonzero(np.abs(coord - c) <= r)
        return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else None

    def ellipsoid(self, centre, semi, value: int, region: np.ndarray | None = None) -> None:
        """Paint an axis-aligned ellipsoid (semi-axes: mm, mm, u); ``region`` (2D) limits it in-plane."""
        cx, cy, cu = centre
        ax, ay, au = semi
        box = (self._range(self.X, cx, ax), self._range(self.Y, cy, ay), self._range(self.U, cu, au))
        if any(b is None for b in box):
            return
        dx = ((self.X[box[0]] - cx) / ax) ** 2
        dy = ((self.Y[box[1]] - cy) / ay) ** 2
        du = ((self.U[box[2]] - cu) / au) ** 2
        m = (dx[:, None, None] + dy[None, :, None] + du[None, None, :]) <= 1.0
        self.paint(box, m, value, region)

    def paint(self, box: tuple[slice, slice, slice], m: np.ndarray, value: int,
              region: np.ndarray | None = None) -> None:
        """Set ``value`` where ``m`` (shaped like ``box``) and the 2D ``region`` hold."""
        if region is not None:
            m = m & region[box[0], box[1]][:, :, None]
        self.labels[box][m] = value


#: Peak memory of :func:`make_phantom` per voxel, bytes: tracemalloc measured 13.1-13.9 B/voxel for
#: 128^2 x 32 ... 256^2 x 64 grids (the int16 labels plus the bool / float64 shape temporaries of the
#: biggest paint call); 16 leaves room for the uint8 copy written by ``save_volume``.
PHANTOM_BYTES_PER_VOXEL = 16


def check_phantom_options(spacing: float, slice_thickness: float, size: int, slices: int) -> None:
    """One-line :class:`ConfigError` for a phantom grid that cannot be built: a spacing that is not a finite
    positive number, ``size`` < 16, ``slices`` < 1; :class:`~seg2med.errors.BudgetError` when the grid
    would not fit the memory budget. Checked before anything is allocated."""
    spacing, slice_thickness = float(spacing), float(slice_thickness)
    if not (math.isfinite(spacing) and spacing > 0 and math.isfinite(slice_thickness) and slice_thickness > 0):
        raise ConfigError(f"phantom: spacing and slice thickness must be finite numbers > 0 mm "
                          f"(got {spacing:g}, {slice_thickness:g})")
    if size < 16 or slices < 1:
        raise ConfigError(f"phantom: need size >= 16 and slices >= 1 (got size {size}, slices {slices})")
    check_memory(PHANTOM_BYTES_PER_VOXEL * int(size) ** 2 * int(slices),
                 f"phantom: {size} x {size} x {slices} voxels")


def make_phantom(
    seed: int = 0,
    spacing: float = 1.5,
    slices: int = 64,
    size: int = 256,
    slice_thickness: float | None = None,
) -> Volume:
    """Procedural abdominal phantom in canonical ``total`` ids (``canonical_scheme("total")``).

    ``size`` x ``size`` voxels of ``spacing`` mm in-plane, ``slices`` slices of
    ``slice_thickness`` mm (default: ``spacing``). The affine is
    ``diag(spacing, spacing, slice_thickness)`` (RAS+) with the grid centred on
    the world origin. The same ``seed`` gives the identical array.

    Classes: body, subcutaneous_fat, torso_fat (perirenal and mesenteric),
    skeletal_muscle (abdominal wall), autochthon_left/right,
    iliopsoas_left/right, vertebrae_T11 ... vertebrae_L4, spinal_cord, aorta,
    inferior_vena_cava, liver, spleen, kidney_left/right, stomach,
    small_bowel, colon, lung_lower_lobe_left/right.
    """
    thk = float(spacing if slice_thickness is None else slice_thickness)
    check_phantom_options(spacing, thk, size, slices)
    ids = canonical_scheme("total").classes
    rng = np.random.default_rng(seed)

    # reference torso shrunk to 90 % of the field of view, jittered by +-5 %
    fit = min(1.0, 0.9 * size * spacing / (2 * _HALF_WIDTH))
    sx, sy = fit * np.clip(1.0 + rng.normal(0.0, 0.04, 2), 0.92, 1.08)
    x = (np.arange(size) - (size - 1) / 2) * spacing
    X, Y = x / sx, x / sy  # reference coordinates of the grid lines
    U = np.arange(slices) / (slices - 1) if slices > 1 else np.array([0.5])
    p = _Painter((size, size, slices), X, Y, U, slices * thk, rng)

    # -- body, subcutaneous fat, abdominal wall (constant along z) ------------
    body2d = (np.abs(X[:, None] / _HALF_WIDTH) ** 2.4 + np.abs(Y[None, :] / _HALF_DEPTH) ** 2.4) <= 1.0
    depth = ndi.distance_transform_edt(np.pad(body2d, 1), sampling=spacing)[1:-1, 1:-1]  # mm from the skin
    fat_mm = fit * rng.uniform(12.0, 24.0)
    wall_mm = fit * rng.uniform(8.0, 12.0)
    cavity = depth > fat_mm + wall_mm
    layer = np.select([depth > fat_mm + wall_mm, depth > fat_mm, body2d],
                      [ids["body"], ids["skeletal_muscle"], ids["subcutaneous_fat"]], 0).astype(np.int16)
    p.labels[:] = layer[:, :, None]
    full = (slice(None), slice(None), slice(None))

    # -- back muscles ----------------------------------------------------------
    for side, sgn in (("left", -1), ("right", 1)):
        c, s = p.jitter((sgn * 27.0, -80.0, 0.5), (19.0, 17.0, 10.0), size=0.05)
        p.ellipsoid(c, s, ids[f"autochthon_{side}"], region=body2d)

    # -- upper abdominal organs, lung bases above the diaphragm domes --------------
    p.ellipsoid(*p.jitter((55.0, 15.0, 0.8), (85.0, 70.0, 0.4)), ids["liver"], region=cavity)
    p.ellipsoid(*p.jitter((-80.0, -40.0, 0.8), (32.0, 45.0, 0.22)), ids["spleen"], region=cavity)
    p.ellipsoid(*p.jitter((-45.0, 40.0, 0.75), (45.0, 35.0, 0.22)), ids["stomach"], region=cavity)

    for side, sgn in (("left", -1), ("right", 1)):
        c, s = p.jitter((sgn * 65.0, -15.0, 1.05), (75.0, 85.0, 0.35))
        r2 = ((X[:, None] - c[0]) / s[0]) ** 2 + ((Y[None, :] - c[1]) / s[1]) ** 2
        dome = c[2] - s[2] * r2  # diaphragm height: highest centrally, low in the posterior-lateral recess
        lung = (U[None, None, :] > dome[:, :, None]) & ((r2 <= 1.0) & (sgn * X[:, None] > 25.0))[:, :, None]
        p.paint(full, lung, ids[f"lung_lower_lobe_{side}"], region=cavity)

    # -- bowel: mesenteric fat with small-bowel loops; colon frame ---------------
    c, s = p.jitter((0.0, 30.0, 0.22), (75.0, 55.0, 0.3))
    p.ellipsoid(c, s, ids["torso_fat"], region=cavity)
    phase = rng.uniform(0, 2 * np.pi, 3)
    loops = (np.sin(X[:, None, None] / 9.0 + phase[0]) * np.sin(Y[None, :, None] / 9.0 + phase[1])
             + 0.4 * np.sin(U[None, None, :] * p.height_mm / 12.0 + phase[2])) > -0.35
    _paint_loops(p, c, s * (0.9, 0.9, 0.95), loops, ids["small_bowel"], cavity)
    r_colon = 17.0 * float(np.clip(1 + rng.normal(0, 0.08), 0.8, 1.2))
    for cx, top in ((95.0, 0.55), (-95.0, 0.6)):  # ascending (right), descending (left)
        tube = (X[:, None] - cx) ** 2 + (Y[None, :] - 5.0) ** 2 <= r_colon**2
        p.paint(full, tube[:, :, None] & (U <= top)[None, None, :], ids["colon"], region=cavity)
    ut, ru = 0.55 + rng.normal(0, 0.02), r_colon / p.height_mm  # transverse colon, anterior
    trans = (((Y[None, :, None] - 55.0) / r_colon) ** 2 + ((U[None, None, :] - ut) / ru) ** 2 <= 1.0) \
        & (np.abs(X) <= 95.0)[:, None, None]
    p.paint(full, trans, ids["colon"], region=cavity)

    # -- kidneys in perirenal fat, psoas --------------------------------------------
    for side, sgn, u in (("left", -1, 0.53), ("right", 1, 0.47)):
        c, s = p.jitter((sgn * 62.0, -45.0, u), (26.0, 30.0, 0.18))
        p.ellipsoid(c, s + (12.0, 12.0, 0.05), ids["torso_fat"], region=cavity)
        p.ellipsoid(c, s, ids[f"kidney_{side}"], region=cavity)
    psoas_r = 6.0 + 12.0 * np.clip((0.6 - U) / 0.6, 0, None)  # thickens caudally, starts near T12/L1
    for side, sgn in (("left", -1), ("right", 1)):
        d2 = (X[:, None, None] - sgn * 38.0) ** 2 + (Y[None, :, None] + 32.0) ** 2
        p.paint(full, (d2 <= psoas_r[None, None, :] ** 2) & (U <= 0.6)[None, None, :], ids[f"iliopsoas_{side}"])

    # -- spine: vertebrae by level, cord in the canal --------------------------------
    _paint_spine(p, ids, body2d)

    # -- great vessels ---------------------------------------------------------------
    ra = 11.0 * float(np.clip(1 + rng.normal(0, 0.08), 0.8, 1.2))
    aorta = (X[:, None] + 18.0) ** 2 + (Y[None, :] + 8.0) ** 2 <= ra**2  # anterior-left of the spine
    ivc = ((X[:, None] - 22.0) / 13.0) ** 2 + ((Y[None, :] + 5.0) / 9.0) ** 2 <= 1.0  # anterior-right
    p.labels[aorta] = ids["aorta"]
    p.labels[ivc] = ids["inferior_vena_cava"]

    p.labels[~body2d] = 0
    affine = np.diag([spacing, spacing, thk, 1.0])
    affine[:3, 3] = -(np.array([size, size, slices]) - 1) / 2 * np.array([spacing, spacing, thk])
    log.debug("phantom seed=%d: %s voxels, spacing %.2f x %.2f mm", seed, p.labels.shape, spacing, thk)
    return Volume(p.labels, affine)


def _paint_loops(p: _Painter, centre: np.ndarray, semi: np.ndarray, loops: np.ndarray, value: int,
                 region: np.ndarray) -> None:
    """Small bowel: the ``loops`` pattern inside an ellipsoid."""
    inside = ((p.X[:, None, None] - centre[0]) / semi[0]) ** 2 + ((p.Y[None, :, None] - centre[1]) / semi[1]) ** 2 \
        + ((p.U[None, None, :] - centre[2]) / semi[2]) ** 2 <= 1.0
    p.paint((slice(None),) * 3, inside & loops, value, region=region)


def _paint_spine(p: _Painter, ids: dict, body2d: np.ndarray) -> None:
    """Six vertebral levels (body, arch ring, spinous and transverse processes) and the spinal cord."""
    X, Y, U = p.X[:, None], p.Y[None, :], p.U
    vb = (X / 20.0) ** 2 + ((Y + 30.0) / 17.0) ** 2 <= 1.0
    ring = (X**2 + (Y + 60.0) ** 2 <= 16.0**2) & (X**2 + (Y + 60.0) ** 2 > 9.0**2)
    spinous = (X / 5.0) ** 2 + ((Y + 84.0) / 12.0) ** 2 <= 1.0
    transverse = ((np.abs(X) - 28.0) / 14.0) ** 2 + ((Y + 58.0) / 5.0) ** 2 <= 1.0
    arch = (ring | spinous | transverse) & body2d
    pos = np.clip((1.0 - U) * len(PHANTOM_LEVELS), 0, len(PHANTOM_LEVELS) - 1e-6)  # 0 = top of T11
    level = pos.astype(int)
    level_ids = np.array([ids[f"vertebrae_{lv}"] for lv in PHANTOM_LEVELS], dtype=np.int16)[level]
    has_body = (pos - level) < 1.0 - _DISC_FRACTION
    bone = arch[:, :, None] | (vb[:, :, None] & has_body[None, None, :])
    lab = p.labels
    lab[bone] = np.broadcast_to(level_ids[None, None, :], lab.shape)[bone]
    cord = X**2 + (Y + 60.0) ** 2 <= 5.5**2
    lab[np.broadcast_to(cord[:, :, None], lab.shape)] = ids["spinal_cord"]

"""Is this volume an image of the modality it is said to be? Cheap checks before a volume is used as one.

A label map given where an image belongs (``evaluate --pred``, ``prepare --images``, ``--image`` for the
body contour) would be scored, trained on or thresholded as intensities — silently. So would a CT in
[0, 1] or [0, 255], or a CT given as an MR. These checks refuse them with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg2med.errors import InputError
from seg2med.io import Volume

#: At most this many distinct values, all whole numbers >= 0: a label map candidate (TotalSegmentator has 117 classes).
LABEL_MAX_VALUES = 256
#: ... and at most this fraction of neighbouring voxel pairs (with one voxel != 0) differ: label maps are piecewise
#: constant (0.03-0.34 on the example data in shared/data), images are not (0.68-0.99, also 8-bit ones).
LABEL_MAX_EDGE_FRACTION = 0.5
#: A CT holds air (-1000 HU) or at least fat (-100 HU); an MR has no value near -1000.
CT_AIR_BELOW = -500.0
CT_LOWEST_TISSUE = -100.0
#: ... in at least this fraction of its voxels (fat alone is several % of any trunk CT, also one inside the body).
CT_MIN_LOW_FRACTION = 0.001


def looks_like_label_map(arr: np.ndarray) -> bool:
    """Few whole non-negative values in piecewise-constant regions (see :data:`LABEL_MAX_EDGE_FRACTION`)."""
    a = np.asarray(arr)
    if a.size == 0:
        return False
    sample = a.ravel()[:: max(1, a.size // 1_000_000)]  # an image shows itself on a million voxels already
    for part in (sample, a):
        if a.dtype.kind not in "iub" and not (a.dtype.kind == "f" and np.all(np.isfinite(part))
                                              and np.all(part == np.round(part))):
            return False
        if part.min() < 0 or np.unique(part).size > LABEL_MAX_VALUES:
            return False
    differ = fg = 0
    for ax in range(a.ndim):
        lo, hi = np.swapaxes(a, 0, ax)[:-1], np.swapaxes(a, 0, ax)[1:]
        pair_fg = (lo != 0) | (hi != 0)
        differ, fg = differ + int(np.count_nonzero((lo != hi) & pair_fg)), fg + int(np.count_nonzero(pair_fg))
    return fg > 0 and differ <= LABEL_MAX_EDGE_FRACTION * fg


def check_is_image(vol: Volume, path: Path, option: str) -> None:
    """A label map given where an image belongs is refused (it would be scored as an image)."""
    if looks_like_label_map(vol.array):
        n = np.unique(np.asarray(vol.array)).size
        raise InputError(f"{path}: {option} is a label map ({n} distinct whole values in constant regions), not an "
                         f"image; give it as --labels")


def check_fits_modality(vol: Volume, path: Path, option: str, modality: str, how: str) -> None:
    """Intensities that cannot be the modality are refused: a "CT" with (almost) nothing below -100 HU (an MR, a
    [0, 1] / 8-bit image, a CT stored without its rescale intercept), an "MR" with CT air (< -500)."""
    lo, hi = float(np.nanmin(vol.array)), float(np.nanmax(vol.array))
    if modality == "ct":
        low = float(np.count_nonzero(np.asarray(vol.array) < CT_LOWEST_TISSUE)) / max(1, np.asarray(vol.array).size)
        if low < CT_MIN_LOW_FRACTION:  # no air, lung or fat: an MR, a [0, 1] / 8-bit image, a CT without its intercept
            raise InputError(f"{path}: {option} values lie in [{lo:g}, {hi:g}] with {100 * low:.2g} % of the voxels below "
                             f"{CT_LOWEST_TISSUE:g} HU: not CT Hounsfield units (a CT holds air, lung or fat; an MR, a "
                             f"rescaled image, or a CT stored without its -1024 intercept?) ({how})")
    if modality == "mr" and lo < CT_AIR_BELOW:
        raise InputError(f"{path}: {option} values lie in [{lo:g}, {hi:g}]: a minimum below {CT_AIR_BELOW:g} is CT air, "
                         f"not MR ({how})")

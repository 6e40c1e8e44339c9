"""Brain label maps: tumour compartments over the brain, in one scheme (``brats_medddpm``: 1 necrotic core, 2 oedema,
3 enhancing tumour, 4 all other brain).

A BraTS segmentation labels the tumour only; the physics prior also needs the brain around it (else the tumour sits in
air or in the body's generic soft tissue). :func:`brain_label_map` puts the tumour compartments of any brain-tumour
scheme (through its crosswalk, e.g. BraTS 2021 4 -> 3) over a brain mask: the mask of a skull-stripped image
(:func:`brain_mask_from_images`), a FreeSurfer ``aseg`` map, or the map's own brain class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from seg2med.errors import ConfigError, InputError
from seg2med.io import Volume, check_same_grid
from seg2med.labels import LabelScheme, get_scheme
from seg2med.labels.crosswalk import get_crosswalk

#: The scheme of seg2med's brain label maps (tumour compartments + the rest of the brain).
BRAIN_SCHEME = "brats_medddpm"
BRAIN_CLASS = "non_tumour_brain"


def _crosswalked(tumour: Volume, src: LabelScheme, target: str) -> np.ndarray:
    """The tumour map's ids in ``target`` through the built-in crosswalk (its errors name the file)."""
    try:
        out, _, _ = get_crosswalk(src.name, target).apply(np.asarray(tumour.array), src)
    except ConfigError as exc:
        raise ConfigError(f"{tumour.name}: {exc}") from None
    return np.asarray(out)


def brain_mask_from_images(images: Sequence[Volume]) -> np.ndarray:
    """The brain of skull-stripped images: voxels non-zero in any of them, holes filled slice by slice (bool)."""
    if not images:
        raise InputError("no images to take the brain mask from")
    ref = images[0]
    mask = np.zeros(ref.shape, dtype=bool)
    for img in images:
        check_same_grid(ref, img)
        mask |= np.asarray(img.array) != 0
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    if not mask.any():
        raise InputError(f"{ref.name}: the images are zero everywhere (no brain to label)")
    return mask


def brain_label_map(tumour: Volume, scheme: str | LabelScheme, brain: Volume | np.ndarray | None = None) -> Volume:
    """Tumour compartments of ``tumour`` (labels in ``scheme``, a brain scheme with a crosswalk to ``brats_medddpm``)
    over ``brain`` (a mask, or an ``aseg`` label volume: every structure is brain; None: the map's own brain class,
    when its scheme has one) -> labels in ``brats_medddpm`` on the tumour map's grid (uint8).

    Tumour voxels keep their compartment wherever they lie; every other brain voxel becomes ``non_tumour_brain``.
    """
    src = get_scheme(scheme) if isinstance(scheme, str) else scheme
    out = np.asarray(tumour.array)
    if src.name != BRAIN_SCHEME:
        out = _crosswalked(tumour, src, BRAIN_SCHEME)
    out = np.asarray(out, dtype=np.uint8).copy()
    dst = get_scheme(BRAIN_SCHEME)
    if brain is not None:
        if isinstance(brain, Volume):
            check_same_grid(tumour, brain)
            brain = brain.array
        inside = np.asarray(brain) != 0
        if inside.shape != out.shape:
            raise InputError(f"{tumour.name}: brain mask shape {inside.shape} != label map shape {out.shape}")
        out[inside & (out == 0)] = dst.id_of(BRAIN_CLASS)
    if not (out == dst.id_of(BRAIN_CLASS)).any():
        raise InputError(f"{tumour.name}: no brain around the tumour (give a brain mask or skull-stripped images)")
    return tumour.like(out)


#: aseg with the tumour compartments: normal tissue around a tumour
ASEG_TUMOUR_SCHEME = "aseg_tumor"


def tumour_over_aseg(tumour: Volume, scheme: str | LabelScheme, aseg: Volume) -> Volume:
    """Tumour compartments of ``tumour`` (a brain-tumour scheme) painted over the FreeSurfer / SynthSeg ``aseg`` map
    of the same brain (same grid) -> labels in ``aseg_tumor`` (aseg ids, tumour at 901-903; int32): the prior then has
    grey and white matter, ventricles and CSF around the tumour instead of one brain class."""
    check_same_grid(tumour, aseg)
    src = get_scheme(scheme) if isinstance(scheme, str) else scheme
    tum = _crosswalked(tumour, src, ASEG_TUMOUR_SCHEME)
    base = np.asarray(aseg.array)
    unknown = get_scheme("aseg").unknown_ids(base)
    if unknown:
        raise ConfigError(f"{aseg.name}: ids not in scheme 'aseg': {', '.join(map(str, sorted(unknown)[:8]))}")
    out = base.astype(np.int32).copy()
    out[tum != 0] = tum[tum != 0]
    return tumour.like(out)


__all__ = ["ASEG_TUMOUR_SCHEME", "BRAIN_CLASS", "BRAIN_SCHEME", "brain_label_map", "brain_mask_from_images",
           "tumour_over_aseg"]

"""Reading segmentations in the two forms TotalSegmentator writes.

* a multilabel file (``--ml``): one integer label map, read as a label :class:`Volume`;
* a per-class folder (default output): one binary mask per class, the class
  name being the file stem (``liver.nii.gz`` -> ``liver``).

A body contour (``--body``) is read from either form: TotalSegmentator's ``--task body`` folder
(``body.nii.gz``, ``body_trunc.nii.gz``, ``body_extremities.nii.gz``, ``skin.nii.gz``), one of its
files, or any mask / label map whose non-zero voxels are the body.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from seg2med.errors import InputError
from seg2med.io.nifti import Volume, check_same_grid, list_nifti, load_volume, nifti_stem

log = logging.getLogger(__name__)


def load_mask_folder(folder: str | Path) -> dict[str, Volume]:
    """Read every NIfTI mask of ``folder`` as a boolean :class:`Volume`, keyed by class name.

    Raises :class:`InputError` for a missing folder, a folder without NIfTI
    files or two files with the same class name (``a.nii`` and ``a.nii.gz``),
    and :class:`GridMismatchError` unless all masks share one voxel grid.
    """
    files = list_nifti(folder)
    masks: dict[str, Volume] = {}
    ref: Volume | None = None
    for f in files:
        name = nifti_stem(f)
        if name in masks:
            raise InputError(f"{folder}: two files for class {name!r} ({masks[name].name}, {f})")
        vol = load_volume(f, kind="mask")
        if ref is None:
            ref = vol
        else:
            check_same_grid(ref, vol)
        masks[name] = vol
    log.debug("%s: read %d class masks", folder, len(masks))
    return masks


def load_segmentation(path: str | Path) -> Volume | dict[str, Volume]:
    """A multilabel file -> integer label :class:`Volume`; a per-class folder -> ``{name: mask Volume}``."""
    p = Path(path)
    if p.is_dir():
        return load_mask_folder(p)
    return load_volume(p, kind="labels")


def load_body_mask(path: str | Path) -> Volume:
    """The body contour in ``path`` as a boolean :class:`Volume`: the non-zero voxels of a mask or label
    file, or the union of the masks of a folder (TotalSegmentator ``--task body``: body_trunc,
    body_extremities, body, skin). An empty mask is an :class:`InputError`."""
    p = Path(path)
    if p.is_dir():
        masks = load_mask_folder(p)
        ref = next(iter(masks.values()))
        body = Volume(np.logical_or.reduce([m.array for m in masks.values()]), ref.affine, ref.header, p)
    else:
        vol = load_volume(p, kind="labels")
        body = Volume(vol.array != 0, vol.affine, vol.header, p)
    if not body.array.any():
        raise InputError(f"{p}: empty body mask (no non-zero voxel)")
    return body

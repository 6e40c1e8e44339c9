"""One canonical label volume from organ labels, tissue types and a body contour.

:func:`build_label_volume` runs three phases, each in its own module:

1. organ labels (:mod:`seg2med.anatomy.organs`): a label map or per-class masks -> the canonical ids
   (mapped by the file's own label table when it has one), unknown ids and classes reported;
2. tissue types (:mod:`seg2med.anatomy.tissues`), placed only where no organ is;
3. the body contour (:mod:`seg2med.anatomy.body`), whose unlabelled voxels become ``body``.

Overlap rules (applied in this order, every resolved voxel is counted; :mod:`seg2med.anatomy.priority`):

1. ``organ_over_organ`` - only for per-class mask folders, where masks may
   overlap. The class with the better rank wins; ranks come from
   :data:`PRIORITY_TIERS` (first matching tier; thin/embedded structures before
   the solid organs that contain them) and, within a tier, the lower scheme id.
2. ``tissue_over_tissue`` - only for tissue mask folders: :data:`TISSUE_PRIORITY`
   (skeletal_muscle > intermuscular_fat > torso_fat > subcutaneous_fat).
3. ``organ_over_tissue`` - any organ-scheme class beats any tissue type
   (TotalSegmentator's skeletal_muscle mask, for instance, also covers the
   autochthon and iliopsoas, and its torso_fat bleeds into organ borders).

Then unlabelled voxels inside the body contour become ``body``; voxels outside
stay 0 (air); labelled voxels outside the contour are kept and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from seg2med.anatomy.body import body_contour, fill_body
from seg2med.anatomy.organs import masks_source, organ_labels
from seg2med.anatomy.priority import TISSUE_PRIORITY
from seg2med.anatomy.reports import AnatomyReport
from seg2med.anatomy.tissues import add_tissues
from seg2med.io.nifti import Volume
from seg2med.labels.schemes import BRAIN_SCHEMES, LabelScheme, base_scheme_name, canonical_scheme, get_scheme

log = logging.getLogger(__name__)

#: Mask names of TotalSegmentator's body tasks (``body``, ``body_mr``); in a class-mask folder they make
#: the body contour (their union), not organs.
BODY_MASK_NAMES: tuple[str, ...] = ("body", "body_trunc", "body_extremities", "skin")


def build_label_volume(
    organs: Volume | Mapping[str, Volume],
    scheme: LabelScheme | str,
    tissues: Volume | Mapping[str, Volume] | None = None,
    image: Volume | None = None,
    modality: str | None = None,
    body: Volume | np.ndarray | None = None,
    strict: bool = False,
) -> tuple[Volume, AnatomyReport]:
    """Merge organs, tissue types and a body contour into one canonical label volume.

    Parameters
    ----------
    organs
        Integer label :class:`Volume` in ``scheme`` ids, or ``{class name: mask Volume}``.
    scheme
        The organs' label scheme; output ids are those of ``canonical_scheme(scheme)``.
    tissues
        Tissue types: a label Volume in ``tissue_types`` ids (1 subcutaneous_fat,
        2 torso_fat, 3 skeletal_muscle) or ``{name: mask Volume}`` with names of
        :data:`TISSUE_PRIORITY`. Placed only where no organ is.
    image, modality
        Image on the organs' grid and its modality (``"ct"`` or ``"mr"``) for the
        body contour; without an image the contour comes from the labels.
    body
        A body mask (non-zero = body; e.g. TotalSegmentator ``--task body``) as a Volume on the
        organs' grid or an array of their shape; overrides ``image``. Without ``body``, ``image``
        or ``tissues`` the contour closes the labelled organs only, which misses the body wall
        and subcutaneous fat (a warning says so).
    strict
        Raise :class:`ConfigError` on ids / class names the schemes do not know
        (default: report them, warn, and treat their voxels as unlabelled).

    Returns the canonical Volume (integer dtype, the organs' affine and header)
    and an :class:`AnatomyReport`. Raises :class:`InputError` for an empty label
    map, :class:`GridMismatchError` when the inputs' grids differ.
    """
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    canon = canonical_scheme(scheme)
    if isinstance(organs, Mapping):
        organs, tissues, body = _route_task_masks(organs, scheme, tissues, body)
    labels, labelled, ref, report = organ_labels(organs, scheme, canon, strict)
    if tissues is not None:
        labels, labelled = add_tissues(labels, labelled, tissues, ref, canon, report, strict)
    mask = body_contour(ref, labelled, report, image=image, modality=modality, body=body,
                        has_tissues=tissues is not None or base_scheme_name(scheme) in BRAIN_SCHEMES)
    labels = fill_body(labels, mask, canon, report)
    return Volume(labels, ref.affine.copy(), ref.header, None), report


def _route_task_masks(
    masks: Mapping[str, Volume], scheme: LabelScheme, tissues: Volume | Mapping[str, Volume] | None,
    body: Volume | np.ndarray | None,
) -> tuple[dict[str, Volume], Volume | Mapping[str, Volume] | None, Volume | np.ndarray | None]:
    """A class-mask folder that also holds TotalSegmentator's ``tissue_types`` and ``body`` task outputs
    (several tasks written into one folder): their masks become the tissues and the body contour
    instead of unknown organ classes. Explicit ``tissues`` / ``body`` win over the folder's."""
    source = masks_source(masks)
    tissue_names = [n for n in masks if n in TISSUE_PRIORITY and n not in scheme.classes]
    body_names = [n for n in masks if n in BODY_MASK_NAMES and n not in scheme.classes]
    organs = {n: v for n, v in masks.items() if n not in tissue_names and n not in body_names}
    if not organs:
        return dict(masks), tissues, body  # only task masks: let the caller report an empty organ map
    if tissue_names:
        if tissues is None:
            tissues = {n: masks[n] for n in tissue_names}
            log.info("%s: tissue masks %s taken as the tissue types", source, ", ".join(tissue_names))
        else:
            log.warning("%s: ignoring its tissue masks %s (tissue masks were given separately)", source,
                        ", ".join(tissue_names))
    if body_names:
        if body is None:
            ref = masks[body_names[0]]
            union = np.logical_or.reduce([np.asarray(masks[n].array) != 0 for n in body_names])
            if union.any():
                body = Volume(union, ref.affine, ref.header, ref.path)
                log.info("%s: %s taken as the body contour", source, ", ".join(body_names))
        else:
            log.warning("%s: ignoring its body masks %s (a body contour was given separately)", source,
                        ", ".join(body_names))
    return organs, tissues, body

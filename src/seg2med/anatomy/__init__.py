"""Anatomy: one canonical label volume from organ labels, tissue types and the body contour.

Label inputs are read by :mod:`seg2med.anatomy.inputs` (through :mod:`seg2med.io`); everything else is
in-memory only (``Volume`` in, ``Volume`` out). :func:`build_label_volume` runs three phases: organ labels
(:mod:`~seg2med.anatomy.organs`), tissue types (:mod:`~seg2med.anatomy.tissues`) and the body contour
(:mod:`~seg2med.anatomy.body`).
"""

from seg2med.anatomy.body import body_contour, fill_body
from seg2med.anatomy.contour import (
    axial_axis,
    body_mask_from_ct,
    body_mask_from_labels,
    body_mask_from_mr,
)
from seg2med.anatomy.inputs import (
    organ_scheme,
    read_body,
    read_contour_image,
    read_organs,
    read_seg2med_labels,
    read_tissues,
    resolve_scheme,
    source_name,
)
from seg2med.anatomy.labelmap import build_label_volume
from seg2med.anatomy.labelvolume import LabelVolume, check_known_ids, crosswalk_label_volume
from seg2med.anatomy.organs import labels_from_masks, organ_labels
from seg2med.anatomy.phantom import PHANTOM_LEVELS, make_phantom
from seg2med.anatomy.plausibility import check_numbering
from seg2med.anatomy.priority import (
    ORGAN_OVER_ORGAN,
    ORGAN_OVER_TISSUE,
    PRIORITY_TIERS,
    TISSUE_OVER_TISSUE,
    TISSUE_PRIORITY,
    priority_order,
    tier_of,
)
from seg2med.anatomy.reports import AnatomyReport, Overlap, OverlapReport
from seg2med.anatomy.tissues import add_tissues

__all__ = [
    "ORGAN_OVER_ORGAN",
    "ORGAN_OVER_TISSUE",
    "PHANTOM_LEVELS",
    "PRIORITY_TIERS",
    "TISSUE_OVER_TISSUE",
    "TISSUE_PRIORITY",
    "AnatomyReport",
    "LabelVolume",
    "Overlap",
    "OverlapReport",
    "add_tissues",
    "axial_axis",
    "body_contour",
    "body_mask_from_ct",
    "body_mask_from_labels",
    "body_mask_from_mr",
    "build_label_volume",
    "check_known_ids",
    "crosswalk_label_volume",
    "check_numbering",
    "fill_body",
    "labels_from_masks",
    "make_phantom",
    "organ_labels",
    "organ_scheme",
    "priority_order",
    "read_body",
    "read_contour_image",
    "read_organs",
    "read_seg2med_labels",
    "read_tissues",
    "resolve_scheme",
    "source_name",
    "tier_of",
]

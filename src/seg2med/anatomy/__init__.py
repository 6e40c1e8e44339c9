"""Anatomy: one canonical label volume from organ labels, tissue types and the body contour.

In-memory only (``Volume`` in, ``Volume`` out); files are read by :mod:`seg2med.io`.
"""

from seg2med.anatomy.contour import (
    axial_axis,
    body_mask_from_ct,
    body_mask_from_labels,
    body_mask_from_mr,
)
from seg2med.anatomy.labelmap import (
    ORGAN_OVER_ORGAN,
    ORGAN_OVER_TISSUE,
    PRIORITY_TIERS,
    TISSUE_OVER_TISSUE,
    TISSUE_PRIORITY,
    AnatomyReport,
    Overlap,
    OverlapReport,
    build_label_volume,
    labels_from_masks,
    priority_order,
    tier_of,
)
from seg2med.anatomy.labelvolume import LabelVolume, check_known_ids
from seg2med.anatomy.phantom import PHANTOM_LEVELS, make_phantom
from seg2med.anatomy.plausibility import check_numbering

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
    "axial_axis",
    "body_mask_from_ct",
    "body_mask_from_labels",
    "body_mask_from_mr",
    "build_label_volume",
    "check_known_ids",
    "check_numbering",
    "labels_from_masks",
    "make_phantom",
    "priority_order",
    "tier_of",
]

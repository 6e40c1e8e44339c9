"""Overlap priorities: which class keeps a voxel that two masks claim, and painting masks by them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import numpy as np

from seg2med.anatomy.reports import Overlap
from seg2med.labels.schemes import LabelScheme

#: Organ overlap priority: tiers (name, class-name patterns), best first. A class
#: belongs to the first tier with a matching ``fnmatch`` pattern; within a tier
#: the lower scheme id wins. Thin or embedded structures come first so that they
#: are not swallowed by the organ around them (vessels in the liver, cysts in the
#: kidney, the cord in the canal, the gallbladder in the liver bed).
PRIORITY_TIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lesion", ("necro*", "*enhancing_tumor*", "non_enhancing*")),
    ("oedema", ("*edema*",)),
    ("vessel", ("aorta", "*vena*", "*vein*", "*arter*", "brachiocephalic_*", "atrial_appendage_*")),
    ("nerve", ("spinal_cord",)),
    ("gland", ("adrenal_gland_*", "thyroid_gland", "prostate*")),
    ("cyst", ("kidney_cyst_*",)),
    ("solid_organ", ("gallbladder", "liver", "spleen", "kidney_*", "pancreas", "heart", "heart_*", "brain")),
    ("hollow_organ", ("esophagus", "trachea", "stomach", "duodenum", "small_bowel", "colon", "urinary_bladder")),
    ("lung", ("lung*",)),
    ("bone", ("vertebrae*", "intervertebral_discs", "sacrum", "rib_*", "sternum", "costal_cartilages",
              "femur_*", "hip_*", "humerus_*", "scapula_*", "clavicula_*", "skull")),
    ("muscle", ("gluteus_*", "autochthon_*", "iliopsoas_*")),
    ("other", ("*",)),
)

#: Tissue-type overlap priority, best first (names of :data:`seg2med.labels.schemes.EXTENSION_CLASSES`).
TISSUE_PRIORITY: tuple[str, ...] = ("skeletal_muscle", "intermuscular_fat", "torso_fat", "subcutaneous_fat")

ORGAN_OVER_ORGAN = "organ_over_organ"
TISSUE_OVER_TISSUE = "tissue_over_tissue"
ORGAN_OVER_TISSUE = "organ_over_tissue"


def tier_of(name: str) -> str:
    """Name of the :data:`PRIORITY_TIERS` tier a class belongs to."""
    return PRIORITY_TIERS[_tier_index(name)][0]


def _tier_index(name: str) -> int:
    return next(i for i, (_, pats) in enumerate(PRIORITY_TIERS) if any(fnmatchcase(name, p) for p in pats))


def priority_order(scheme: LabelScheme) -> list[str]:
    """Class names of ``scheme``, the winner of any overlap first."""
    return sorted(scheme.classes, key=lambda n: (_tier_index(n), scheme.classes[n]))


def label_dtype(max_id: int) -> type:
    """The integer dtype of a label array whose ids go up to ``max_id``."""
    return np.int16 if max_id < np.iinfo(np.int16).max else np.int32


def paint(
    masks: Mapping[str, np.ndarray], order: Sequence[str], ids: Mapping[str, int], rule: str, dtype: type
) -> tuple[np.ndarray, list[Overlap]]:
    """Label array from possibly overlapping masks, painting ``order`` best first; overlaps counted."""
    names = {i: n for n, i in ids.items()}
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=dtype)
    overlaps: list[Overlap] = []
    for name in order:
        if name not in masks:
            continue
        m = masks[name]
        taken = m & (out != 0)
        if taken.any():
            winners = np.bincount(out[taken].ravel())
            overlaps += [Overlap(rule, names[int(w)], name, int(c)) for w, c in enumerate(winners) if c]
            out[m & ~taken] = ids[name]
        else:
            out[m] = ids[name]
    return out, overlaps

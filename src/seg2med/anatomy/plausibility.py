"""Which numbering does a label map without a label table use? Ask the anatomy.

Schemes reuse the same small ids for other structures (``total`` 14 is the right lower lung lobe,
``total_mr`` 14 the duodenum; ``total`` 31 the L1 vertebra, ``total_mr`` 31 the right humerus), so a
label map without its own table (a plain ``.nii.gz``) read in the wrong scheme gives a prior with lung
in the bowel and bone in the arm — silently. Two kinds of evidence tell the numbering:

* ids the scheme does not have (hard evidence);
* the share of the labelled voxels a class holds (:data:`SIZE_RULES`: a tumour compartment is never most of
  the map);
* anatomical relations between class centroids in patient coordinates (RAS+ mm from the affine):
  the liver lies right of the spleen, a ``*_left`` structure left of its ``*_right`` twin, the brain
  above the heart, the humerus above the liver, the bladder below the kidneys… A relation counts
  only when both sides are present and it is broken by more than its margin.

The relations are data (:data:`RELATIONS`); :func:`scheme_evidence` scores one reading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from seg2med.errors import ConfigError
from seg2med.io.nifti import Volume
from seg2med.labels import LabelScheme, get_scheme
from seg2med.labels.schemes import EXTENSION_CLASSES, GUESS_ORDER

log = logging.getLogger(__name__)

#: (A, relation, B, separation mm): A lies ``above`` (superior to) / ``right_of`` (on the patient's right
#: of) B by at least the separation (a negative one is a tolerance), or ``near`` B (centroids at most the
#: separation apart). A and B are class-name patterns
#: (fnmatch); a group's centroid is voxel-weighted. Separations are far below the anatomical
#: distances so that a cropped field of view (only part of an organ) does not break a true relation.
RELATIONS: tuple[tuple[str, str, str, float], ...] = (
    ("liver", "right_of", "spleen", 30.0),
    ("kidney_right", "right_of", "spleen", 20.0),
    ("gallbladder", "right_of", "spleen", 30.0),
    ("inferior_vena_cava", "right_of", "aorta", 0.0),
    ("brain", "above", "heart", 100.0),
    ("brain", "above", "liver", 150.0),
    ("vertebrae_C*", "above", "liver", 100.0),
    ("vertebrae_C*", "above", "kidney_*", 150.0),
    ("scapula_*", "above", "kidney_*", 50.0),
    ("clavicula_*", "above", "liver", 50.0),
    ("thyroid_gland", "above", "heart", 30.0),
    ("trachea", "above", "liver", 50.0),
    ("heart", "above", "kidney_*", 30.0),
    ("heart", "above", "urinary_bladder", 150.0),
    ("lung*", "above", "kidney_*", -20.0),
    ("lung*", "above", "urinary_bladder", 100.0),
    ("liver", "above", "urinary_bladder", 80.0),
    ("stomach", "above", "urinary_bladder", 80.0),
    ("kidney_*", "above", "urinary_bladder", 50.0),
    ("kidney_*", "above", "prostate", 50.0),
    ("liver", "above", "small_bowel", -10.0),
    ("liver", "above", "colon", -20.0),
    ("liver", "above", "iliac_*", 80.0),
    ("kidney_*", "above", "iliac_*", 30.0),
    ("kidney_*", "above", "femur_*", 80.0),
    ("hip_*", "above", "femur_*", 0.0),
    ("vertebrae_C*", "above", "vertebrae_T*", 10.0),
    ("vertebrae_T*", "above", "vertebrae_L*", 10.0),
    ("vertebrae_L*", "above", "sacrum", 10.0),
    ("vertebrae_L*", "above", "femur_*", 50.0),
    # brain-tumour compartments surround each other: oedema / FLAIR hyperintensity is centred on the tumour
    ("*edema", "near", "*tumor*", 60.0),
    ("surrounding_flair_hyperintensity", "near", "*tumor*", 60.0),
)
PAIR_SEPARATION = -5.0  # X_right right of X_left, for every such pair of a scheme

#: (class, "at_most" | "at_least", fraction): the share of all labelled voxels a class may hold. A brain-tumour
#: compartment is never most of a label map; Med-DDPM's "all other brain" always is (read as BraTS 2015 its id 4,
#: the whole brain, would be enhancing tumour).
SIZE_RULES: tuple[tuple[str, str, float], ...] = (
    ("enhancing_tumor", "at_most", 0.7),
    ("non_tumour_brain", "at_least", 0.3),
)


@dataclass(frozen=True)
class Evidence:
    """How well one scheme explains a label array."""

    scheme: str
    unknown_ids: dict[int, int]  # id -> voxels, ids the scheme does not have
    broken: tuple[str, ...]  # relations that do not hold, in words
    checked: int  # relations that could be checked (both sides present)

    @property
    def fits(self) -> bool:
        return not self.unknown_ids and not self.broken

    def reason(self) -> str:
        parts = []
        if self.unknown_ids:
            ids = sorted(self.unknown_ids)
            parts.append(f"ids {', '.join(map(str, ids[:6]))}{'…' if len(ids) > 6 else ''} are not {self.scheme} classes")
        if self.broken:
            parts.append(f"{self.broken[0]}{f' (+{len(self.broken) - 1} more)' if len(self.broken) > 1 else ''}")
        return "; ".join(parts)


def centroids(labels: np.ndarray, affine: np.ndarray, step: int = 2) -> dict[int, tuple[np.ndarray, int]]:
    """id -> (centroid in RAS+ mm, voxel count) of every non-zero id, on every ``step``-th voxel."""
    sub = np.asarray(labels)[::step, ::step, ::step]
    flat = sub.ravel()
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        return {}
    ids, inv, counts = np.unique(flat[nz], return_inverse=True, return_counts=True)
    ijk = np.unravel_index(nz, sub.shape)
    sums = np.stack([np.bincount(inv, weights=c * step, minlength=ids.size) for c in ijk], axis=1)
    vox = sums / counts[:, None]
    ras = vox @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    return {int(i): (ras[k], int(counts[k])) for k, i in enumerate(ids)}


def _group(cents: Mapping[str, tuple[np.ndarray, int]], pattern: str) -> np.ndarray | None:
    members = [v for n, v in cents.items() if fnmatchcase(n, pattern)]
    if not members:
        return None
    w = np.array([c for _, c in members], dtype=np.float64)
    return (np.stack([p for p, _ in members]) * w[:, None]).sum(axis=0) / w.sum()


def _pairs(scheme: LabelScheme) -> list[tuple[str, str, str, float]]:
    """``X_right`` right of ``X_left`` for every left/right pair of the scheme."""
    names = set(scheme.classes)
    return [(n, "right_of", n[: -len("_right")] + "_left", PAIR_SEPARATION)
            for n in sorted(names) if n.endswith("_right") and n[: -len("_right")] + "_left" in names]


def scheme_evidence(cents: Mapping[int, tuple[np.ndarray, int]], scheme: LabelScheme,
                    ignore_ids: Sequence[int] = ()) -> Evidence:
    """Score reading ids with ``scheme``: its unknown ids and the broken relations of :data:`RELATIONS`."""
    id_to_name, ignore = scheme.id_to_name, set(ignore_ids)
    unknown = {i: c for i, (_, c) in cents.items() if i not in id_to_name and i not in ignore}
    named = {id_to_name[i]: v for i, v in cents.items() if i in id_to_name}
    broken, checked = [], 0
    total = sum(c for i, (_, c) in cents.items() if i not in ignore)
    for name, rule, fraction in SIZE_RULES:
        if name in named and total:
            checked += 1
            share = named[name][1] / total
            if (share > fraction) if rule == "at_most" else (share < fraction):
                broken.append(f"{name} holds {100 * share:.0f} % of the labelled voxels")
    for a, rel, b, sep in (*RELATIONS, *_pairs(scheme)):
        pa, pb = _group(named, a), _group(named, b)
        if pa is None or pb is None:
            continue
        checked += 1
        # RAS+: +x towards the patient's right, +z superior
        if rel == "near":
            ok = float(np.linalg.norm(pa - pb)) <= sep
        else:
            ok = (pa[2] - pb[2] if rel == "above" else pa[0] - pb[0]) >= sep
        if not ok:
            what = {"above": "above", "right_of": "right of", "near": "near"}[rel]
            broken.append(f"{a.rstrip('*_')} is not {what} {b.rstrip('*_')}")
    return Evidence(scheme.name, unknown, tuple(broken), checked)


def check_numbering(organs: Volume, base: LabelScheme) -> None:
    """A label file without its own table, read in ``base`` because no ``--scheme`` was given: refuse it
    when its ids do not fit ``base`` (unknown ids, or anatomy that is wrong in ``base``: lung below the
    kidneys, left of right…) but fit another built-in scheme; warn when they fit none (a flipped affine?)."""
    cents = centroids(organs.array, organs.affine)
    ignore = tuple(EXTENSION_CLASSES.values())
    own = scheme_evidence(cents, base, ignore)
    if own.fits:
        return
    for name in GUESS_ORDER:
        if name == base.name:
            continue
        other = scheme_evidence(cents, get_scheme(name), ignore)
        if other.fits and (other.checked or own.unknown_ids):
            raise ConfigError(f"{organs.name}: has no label table, and its ids do not fit scheme {base.name!r} "
                              f"({own.reason()}) but fit scheme {name!r}: pass --scheme {name} "
                              f"(or --scheme {base.name} to read them as {base.name} anyway)")
    if own.broken:
        log.warning("%s: read as scheme %r, the anatomy looks wrong (%s): another numbering, or a flipped affine?",
                    organs.name, base.name, own.reason())

"""Write the crosswalk tables ``src/seg2med/resources/crosswalks/SOURCE--TARGET.yaml`` (data; reviewed and committed).

Usage::

    python scripts/build_crosswalks.py [--check]

The tables are what seg2med reads (:mod:`seg2med.labels.crosswalk`); this script only writes them from explicit
rules, so that 24 tables stay consistent with each other:

* every class of every scheme names an anatomical *concept* (TotalSegmentator v2 ``total`` names; the other
  schemes' names are translated by the explicit tables below, never by similarity);
* concepts have parents (:data:`PART_OF`: a lung lobe is part of its lung, every vertebra of ``vertebrae``, a heart
  chamber of ``heart``, a hepatic vessel of the liver ...);
* a source class then goes to the target class of the same concept (``same`` / renamed), else to the target class
  of its nearest ancestor (``merged``), else — when the target splits it into finer classes whose one is not known
  (``total_mr`` ``vertebrae`` for ``total``) — it is kept as an extra class of the converted map (``kept``), else it
  is dropped with the reason.

``--check`` fails when the committed tables differ from what the rules give (CI runs it in the tests).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from seg2med.labels.schemes import get_scheme  # noqa: E402

OUT = REPO / "src" / "seg2med" / "resources" / "crosswalks"

#: Families of schemes that describe the same anatomy; crosswalks exist between every ordered pair of one family.
FAMILIES = {
    "body": ("total", "total_v1", "total_mr", "amos", "maisi"),
    "tissue types": ("tissue_types", "tissue_types_mr"),
    "brain": ("brats2021", "brats2015", "brats2023", "brats_medddpm", "aseg", "aseg_tumor"),  # = schemes.BRAIN_SCHEMES
}

#: What each scheme labels (the reason a class it lacks is dropped).
SCOPE = {
    "total": "TotalSegmentator v2 total (117 classes) has no class for it or for a structure that contains it",
    "total_v1": "TotalSegmentator v1 (104 classes) has no class for it or for a structure that contains it",
    "total_mr": "TotalSegmentator total_mr (50 classes: no ribs, no single vertebrae, no lung lobes, trachea, "
                "thyroid, skull, sternum or neck vessels) has no class for it or for a structure that contains it",
    "amos": "AMOS 2022 labels 15 abdominal organs only",
    "maisi": "the MAISI label dictionary has no class for it or for a structure that contains it",
    "tissue_types": "",
    "tissue_types_mr": "",
    "brats2021": "BraTS 2021 labels the three tumour sub-regions only",
    "brats2015": "BraTS 2015 labels the four tumour sub-regions only",
    "brats2023": "BraTS 2023 labels the three tumour sub-regions only",
    "brats_medddpm": "Med-DDPM's BraTS convention has the three tumour sub-regions and one class for all other brain",
    "aseg": "FreeSurfer aseg labels normal brain anatomy only (no tumour compartments)",
    "aseg_tumor": "aseg with tumour compartments has no class for it",
}

#: Classes without anatomy (dropped from any target), with the reason.
NOT_ANATOMY = {f"dummy{i}": "a placeholder id of the MAISI label dictionary, no anatomy" for i in range(1, 9)}
#: seg2med's own classes (body 200, tissue types 201-204) pass through every crosswalk unchanged; MAISI's body (200)
#: is seg2med's body.
SEG2MED_CLASSES = ("body",)

#: Names of a scheme that are not the concept's name (explicit; nothing is matched by similarity).
RENAME = {
    "amos": {"prostate_uterus": "prostate_or_uterus"},
    "brats2021": {"necrotic_tumor_core": "necrotic_and_non_enhancing_core", "peritumoral_edema": "edema"},
    "brats2015": {},
    "brats2023": {"non_enhancing_tumor_core": "necrotic_and_non_enhancing_core",
                  "surrounding_flair_hyperintensity": "edema"},
    "brats_medddpm": {"necrotic_tumor_core": "necrotic_and_non_enhancing_core", "peritumoral_edema": "edema",
                      "non_tumour_brain": "brain"},
    "aseg_tumor": {"necrotic_tumor_core": "necrotic_and_non_enhancing_core", "peritumoral_edema": "edema"},
}

#: concept -> the concept it is part of (one level; chains are followed).
PART_OF = {
    **{f"lung_{lobe}_left": "lung_left" for lobe in ("upper_lobe", "lower_lobe")},
    **{f"lung_{lobe}_right": "lung_right" for lobe in ("upper_lobe", "middle_lobe", "lower_lobe")},
    **{f"vertebrae_{v}": "vertebrae" for v in ["S1", *(f"L{i}" for i in range(1, 6)), *(f"T{i}" for i in range(1, 13)),
                                               *(f"C{i}" for i in range(1, 8))]},
    **{c: "heart" for c in ("heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right",
                            "heart_ventricle_right")},
    "atrial_appendage_left": "heart_atrium_left",
    "prostate": "prostate_or_uterus",
    "kidney_cyst_left": "kidney_left",
    "kidney_cyst_right": "kidney_right",
    "hepatic_vessel": "liver",
    "hepatic_tumor": "liver",
    "pancreatic_tumor": "pancreas",
    "colon_cancer_primaries": "colon",
    "trachea": "airway",
    "necrosis": "necrotic_and_non_enhancing_core",
    "non_enhancing_tumor": "necrotic_and_non_enhancing_core",
    **{n: "brain" for n in get_scheme("aseg").names},  # every aseg structure is part of the brain
}


def maisi_concept(name: str) -> str:
    """A MAISI name -> its concept: 'left X' -> X_left, 'left rib N' -> rib_left_N, 'vertebrae L5' -> vertebrae_L5,
    'bladder' -> urinary_bladder, spaces -> underscores (every result is checked against the concepts below)."""
    if name == "bladder":
        return "urinary_bladder"
    m = re.fullmatch(r"(left|right) rib (\d+)", name)
    if m:
        return f"rib_{m[1]}_{m[2]}"
    m = re.fullmatch(r"(left|right) (.+)", name)
    if m:
        return f"{m[2].replace(' ', '_')}_{m[1]}"
    return name.replace(" ", "_")


def concept(scheme: str, name: str) -> str:
    if scheme == "maisi":
        return maisi_concept(name)
    return RENAME.get(scheme, {}).get(name, name)


def ancestors(c: str) -> list[str]:
    out = []
    while c in PART_OF:
        c = PART_OF[c]
        out.append(c)
    return out


def descendants(c: str) -> list[str]:
    return [k for k in PART_OF if c in ancestors(k)]


def entry(source: str, target: str, name: str, by_concept: dict[str, str]) -> tuple[object, str]:
    """The table entry of ``name`` and its kind (same / renamed / merged / kept / dropped)."""
    if name in SEG2MED_CLASSES:
        return name, "same"
    if name in NOT_ANATOMY:
        return {"drop": NOT_ANATOMY[name]}, "dropped"
    c = concept(source, name)
    if c in by_concept:
        t = by_concept[c]
        return t, "same" if t == name else "renamed"
    for a in ancestors(c):
        if a in by_concept:
            return {"merge": by_concept[a]}, "merged"
    finer = sorted(by_concept[d] for d in descendants(c) if d in by_concept)
    if finer:
        return {"keep": f"{target} splits it into {', '.join(finer[:3])}{' ...' if len(finer) > 3 else ''}, "
                        "and which one is not known: kept as an extra class"}, "kept"
    return {"drop": SCOPE[target] or f"{target} has no such class"}, "dropped"


def table(source: str, target: str) -> dict:
    src, dst = get_scheme(source), get_scheme(target)
    by_concept = {concept(target, n): n for n in dst.names if n not in NOT_ANATOMY and n not in SEG2MED_CLASSES}
    classes, extra, kinds = {}, {}, {}
    next_id = max(max(dst.ids), 204) + 1 if max(dst.ids) >= 200 else 210  # clear of the target's and seg2med's ids
    for name in src.names:
        value, kind = entry(source, target, name, by_concept)
        classes[name] = value
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "kept":
            extra[name] = next_id
            next_id += 1
    return {"source": source, "target": target,
            "description": f"{source} -> {target}: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())),
            "extra_classes": extra, "classes": classes}


def check_concepts() -> None:
    """Every MAISI / renamed concept is a concept of some scheme or of PART_OF (the rules have no typo)."""
    known = set(PART_OF) | set(PART_OF.values())
    for fam in FAMILIES.values():
        for s in fam:
            known |= {concept(s, n) for n in get_scheme(s).names if s != "maisi" and n not in NOT_ANATOMY}
    maisi_only = {"brain", "lung_tumor", "bone_lesion", "airway"}
    bad = [n for n in get_scheme("maisi").names
           if n not in NOT_ANATOMY and n not in SEG2MED_CLASSES and maisi_concept(n) not in known | maisi_only]
    if bad:
        raise SystemExit(f"MAISI names without a concept: {bad}")


def render(t: dict) -> str:
    head = (f"# Crosswalk {t['source']} -> {t['target']} (written by scripts/build_crosswalks.py; read by "
            "seg2med.labels.crosswalk).\n# Every source class: a target class name (the same class, or renamed), "
            "{merge: target} (into the class of a structure\n# that contains it), {keep: why} (kept as an extra class at the id under extra_classes), or "
            "{drop: why}.\n")
    return head + yaml.safe_dump(t, sort_keys=False, allow_unicode=True, width=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when the committed tables differ")
    args = ap.parse_args(argv)
    check_concepts()
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for fam in FAMILIES.values():
        for s in fam:
            for t in fam:
                if s == t:
                    continue
                path = OUT / f"{s}--{t}.yaml"
                text = render(table(s, t))
                if args.check:
                    if not path.is_file() or path.read_text(encoding="utf-8") != text:
                        stale.append(path.name)
                else:
                    path.write_text(text, encoding="utf-8")
    if stale:
        print(f"crosswalk tables differ from the rules: {', '.join(stale)} (run scripts/build_crosswalks.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

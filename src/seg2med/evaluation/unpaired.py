"""Evaluation without a same-patient real image: phantoms, composed anatomies, CT <-> MR conversions.

There is no ground truth to compare with voxel by voxel, so three things are measured (the seg2med paper's
experiment V, segmentation-guided diffusion's Dice_orig vs Dice_gen):

* **Per-organ plausibility** (every case): the quality check of ``generate``
  (:func:`seg2med.inference.qc.organ_qc`) on the output and its input labels. CT: each organ's median HU
  against its plausible range in the tissue table; MR (no absolute unit): the organs' order of brightness
  against the order the physics prior of the sequence predicts (``inverted_pairs``).
* **Re-segmentation** (with a segmenter): the output is segmented and compared per class (Dice, HD95 in mm)
  with the input labels, brought to the segmenter's label scheme through the crosswalk
  (:mod:`seg2med.labels.crosswalk`). Beside it, the same segmenter on real images with their own labels
  (``reference`` cases with labels): how well the segmenter does on real data, the upper bound. The
  paper-style counts are the classes whose mean Dice is above 0.9 and above 0.8.
* **Distribution distance** to a reference set of real volumes (any grid, any patient): the Fréchet distance
  in the segmenter's feature space (Fréchet-Seg, own segmenter only) and FID with local Inception weights.
  Both are biased upwards with few slices; the slice counts are reported beside them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg2med.anatomy import LabelVolume, crosswalk_label_volume
from seg2med.data.intensity import CT_AIR_BELOW, check_fits_modality, check_is_image
from seg2med.errors import ConfigError, InputError
from seg2med.evaluation.core import _mask_slices, body_mask, distribution_distances, sidecar_field, to_unit
from seg2med.evaluation.pairs import _files, _match
from seg2med.inference.qc import organ_qc
from seg2med.inference.segment import segment_volume, volume_features
from seg2med.io import Volume, load_volume
from seg2med.io.nifti import check_same_grid, sidecar_path
from seg2med.labels import TissueTable, get_scheme
from seg2med.labels.schemes import CANONICAL_SUFFIX
from seg2med.metrics import dice_per_class, hd95_per_class

log = logging.getLogger(__name__)

#: The paper's counts (Table VII): classes whose mean Dice over subjects is above these.
DICE_COUNTS = (0.9, 0.8)
#: The row name of the segmenter on real images.
REAL = "real image"


@dataclass(frozen=True)
class UnpairedCase:
    """One subject: each method's output and the label map it was made from (on the outputs' grid)."""

    subject: str
    predictions: dict[str, Path]
    labels: Path


@dataclass(frozen=True)
class RealCase:
    """A real volume of the reference set, with its own label map for Dice_orig when given (any grid)."""

    subject: str
    image: Path
    labels: Path | None = None


@dataclass
class UnpairedOptions:
    """How the outputs are judged (see the module docstring)."""

    #: a label file (and the real image it labels, with its modality, for the body contour) -> its canonical volume
    load_labels: Callable[[Path, Volume | None, str | None], LabelVolume]
    modality: str = "auto"  # auto | ct | mr
    sequence: Mapping[str, Any] | str | None = None  # MR: the sequence of the tissue order; None: the sidecar's
    tissues: TissueTable | None = None
    segmenter: Any = None  # a loaded Segmenter, a TotalSegmentatorRunner, or None
    fid_weights: str | Path | None = None

    def __post_init__(self) -> None:
        if self.modality not in ("auto", "ct", "mr"):
            raise ConfigError(f"--modality: expected auto, ct or mr, got {self.modality!r}")


@dataclass
class UnpairedEvaluation:
    """What :func:`evaluate_unpaired` measured."""

    modality: str
    methods: list[str]
    qc_rows: list[dict[str, Any]] = field(default_factory=list)  # subject x method: organs checked / failed
    organ_rows: list[dict[str, Any]] = field(default_factory=list)  # subject x method x class (organs.csv)
    dice_rows: list[dict[str, Any]] = field(default_factory=list)  # subject x method (or REAL) x class (dice.csv)
    class_names: dict[int, str] = field(default_factory=dict)  # the segmenter scheme's names of the Dice classes
    distribution: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> fid / frechet_seg
    slices: dict[str, int] = field(default_factory=dict)  # "reference" / method -> slices the distances pooled
    notes: list[str] = field(default_factory=list)


def collect_unpaired(predictions: Mapping[str, str | Path], labels: str | Path, reference: str | Path | None = None,
                     reference_labels: str | Path | None = None) -> tuple[list[UnpairedCase], list[RealCase]]:
    """Pair every method's outputs with their input label maps by subject id (file name; one label file serves
    a single output), and the reference set's volumes with their own label maps."""
    if not predictions:
        raise InputError("no prediction given (--pred)")
    preds = {m: _files(spec, f"prediction ({m})") for m, spec in predictions.items()}
    subjects = sorted(set.intersection(*(set(t) for t in preds.values())))
    if not subjects:
        raise InputError("no subject has an output from every method")
    lab = _match(_files(labels, "labels"), subjects, not Path(labels).is_dir(), "labels", labels)
    cases = [UnpairedCase(s, {m: preds[m][s] for m in preds}, lab[s]) for s in subjects]
    real: list[RealCase] = []
    if reference is not None:
        refs = _files(reference, "reference")
        ref_lab = (_match(_files(reference_labels, "reference labels"), sorted(refs), not Path(reference_labels).is_dir(),
                          "reference labels", reference_labels) if reference_labels is not None else {})
        real = [RealCase(s, refs[s], ref_lab.get(s)) for s in sorted(refs)]
    elif reference_labels is not None:
        raise ConfigError("--ref-labels needs --ref (the real volumes they label)")
    return cases, real


def output_modality(path: Path, vol: Volume) -> tuple[str, str]:
    """``(modality, how it was found)`` of an output: its generation sidecar's, else CT when it holds air-like HU."""
    mod = sidecar_field(path, "modality")
    if mod in ("ct", "mr"):
        return mod, f"--modality auto: {sidecar_path(path).name} says {mod.upper()}"
    mod = "ct" if float(np.min(vol.array)) < CT_AIR_BELOW else "mr"
    return mod, f"--modality auto: {path.name} looks like {mod.upper()}"


def output_sequence(path: Path) -> Mapping[str, Any] | None:
    """The MR sequence a generation sidecar records (None when there is none)."""
    seq = sidecar_field(path, "sequence")
    return seq if isinstance(seq, Mapping) and "name" in seq else None


def segmenter_scheme(segmenter: Any) -> str:
    """The label scheme a segmenter predicts in (TotalSegmentator: its task)."""
    spec = getattr(segmenter, "spec", None)
    name = spec.scheme if spec is not None else getattr(segmenter, "task", None)
    if not name:
        raise InputError(f"{getattr(segmenter, 'path', 'the segmenter')}: its label scheme is not recorded")
    return str(name).removesuffix(CANONICAL_SUFFIX)


def check_segmenter_modality(segmenter: Any, modality: str) -> None:
    """An own segmenter segments the modality it was trained on; TotalSegmentator's task must fit."""
    spec = getattr(segmenter, "spec", None)
    if spec is not None:
        trained = spec.modality if spec.states("modality") else None
        if trained is not None and trained != modality:
            raise InputError(f"{segmenter.path}: a segmenter trained on {trained.upper()} images, but the outputs "
                             f"are {modality.upper()}")
    elif (getattr(segmenter, "task", "") == "total_mr") != (modality == "mr"):
        raise InputError(f"TotalSegmentator task {segmenter.task} does not segment {modality.upper()} images")


def resegmentation_rows(segmenter: Any, image: Volume, labels: LabelVolume, subject: str, method: str,
                        ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Dice / HD95 per class of ``image`` segmented against ``labels`` in the segmenter's scheme, and the
    crosswalk report (None when the labels already are in that scheme).

    Scored: the organ classes of that scheme (not seg2med's body and tissue-type classes, which a label map without
    a body mask only approximates) that the segmenter predicts and the (crosswalked) labels hold."""
    from seg2med.inference.totalseg import TotalSegmentatorRunner

    target = segmenter_scheme(segmenter)
    lv, report = crosswalk_label_volume(labels, target)
    ref = np.asarray(lv.volume.array)
    predicted = segmenter.segment(image) if isinstance(segmenter, TotalSegmentatorRunner) else segment_volume(image, segmenter)
    known = segmenter.classes if segmenter.classes is not None else np.unique(ref).tolist()
    organs = set(get_scheme(target).classes.values())  # not seg2med's body / tissue classes: a hull is no body
    classes = [int(c) for c in known if c in organs and np.any(ref == c)]
    dice = dice_per_class(np.asarray(predicted.array), ref, classes=classes)
    hd = hd95_per_class(np.asarray(predicted.array), ref, spacing=image.spacing, classes=classes)
    names = {i: n for n, i in lv.scheme.classes.items()}
    return [{"subject": subject, "method": method, "class": c, "name": names.get(c, f"label_{c}"),
             "dice": float(dice[c]), "hd95": float(hd[c])} for c in classes], report


def _organ_rows(qc: Mapping[str, Any], subject: str, method: str) -> list[dict[str, Any]]:
    rows = []
    for c in qc["classes"]:
        row = {"subject": subject, "method": method, "class": c["label"], "name": c["name"], "voxels": c["voxels"],
               "median": c["median"]}
        if "range" in c:
            lo, hi = c["range"] if c["range"] is not None else (None, None)
            row.update(range_lo=lo, range_hi=hi)
        for key in ("prior_median", "expected_rank", "rank"):
            if key in c:
                row[key] = c[key]
        row["ok"] = c["ok"]
        rows.append(row)
    return rows


def evaluate_unpaired(cases: Sequence[UnpairedCase], options: UnpairedOptions, reference: Sequence[RealCase] = (),
                      progress: Callable[[str], None] | None = None) -> UnpairedEvaluation:
    """Judge every output without a paired real image (module docstring); ``reference``: real volumes for
    Fréchet-Seg / FID and, those with labels, for the segmenter's Dice on real images."""
    if not cases:
        raise InputError("nothing to evaluate: no subject given")
    opt, seg = options, options.segmenter
    methods = list(cases[0].predictions)
    ev: UnpairedEvaluation | None = None
    feats: dict[str, list[np.ndarray]] = {}
    slices: dict[str, list[np.ndarray]] = {}
    reports: dict[str, Any] = {}
    for case in cases:
        labels = None
        for method, path in case.predictions.items():
            if progress:
                progress(f"{case.subject}: {method}")
            pred = load_volume(path)
            check_is_image(pred, path, "--pred")
            modality, how = ((opt.modality, f"--modality {opt.modality}") if opt.modality != "auto"
                             else output_modality(path, pred))
            check_fits_modality(pred, path, "--pred", modality, how)
            if ev is None:
                ev = UnpairedEvaluation(modality, methods)
                if seg is not None:
                    check_segmenter_modality(seg, modality)
            elif modality != ev.modality:
                raise InputError(f"{path}: {modality.upper()} but earlier outputs are {ev.modality.upper()}")
            sequence = "ct" if modality == "ct" else (opt.sequence or output_sequence(path))
            if sequence is None:
                raise ConfigError(f"{path}: no generation sidecar names its MR sequence: give --sequence (the "
                                  "tissue order of the per-organ check depends on it)")
            if labels is None:  # read once per subject, after the checks that need no labels
                labels = opt.load_labels(case.labels, None, None)
                lab = np.asarray(labels.volume.array)
                inside = lab != 0
            check_same_grid(labels.volume, pred)
            qc = organ_qc(pred.array, lab, labels.scheme, modality, sequence, opt.tissues)
            s = qc["summary"]
            row = {"subject": case.subject, "method": method, "sequence": qc["sequence"], "organs_checked": s["checked"],
                   "organs_failed": s["failed"], "organs_ok_fraction": (1 - s["failed"] / s["checked"]) if s["checked"]
                   else float("nan"), "failed": ", ".join(s["failed_names"])}
            if modality == "mr":
                row["inverted_pairs"] = len(qc["inverted_pairs"])
            ev.qc_rows.append(row)
            ev.organ_rows += _organ_rows(qc, case.subject, method)
            if seg is not None:
                rows, report = resegmentation_rows(seg, pred, labels, case.subject, method)
                ev.dice_rows += rows
                ev.class_names.update({r["class"]: r["name"] for r in rows})
                if report is not None:
                    reports[f"{report['source']} -> {report['target']}"] = report["counts"]
                if hasattr(seg, "features"):
                    feats.setdefault(method, []).append(volume_features(pred, seg))  # its body from the image
            if opt.fid_weights is not None:
                slices.setdefault(method, []).append(_mask_slices(to_unit(pred.array, modality, inside), inside))
    assert ev is not None
    for real in reference:
        if progress:
            progress(f"reference {real.subject}")
        img = load_volume(real.image)
        check_is_image(img, real.image, "--ref")
        check_fits_modality(img, real.image, "--ref", ev.modality, f"the outputs are {ev.modality.upper()}")
        real_labels = opt.load_labels(real.labels, img, ev.modality) if real.labels is not None else None
        if real_labels is not None:
            check_same_grid(real_labels.volume, img)
        mask = body_mask(img, None if real_labels is None else real_labels.volume, ev.modality)
        if seg is not None and real_labels is not None:
            rows, _ = resegmentation_rows(seg, img, real_labels, real.subject, REAL)
            ev.dice_rows += rows
            ev.class_names.update({r["class"]: r["name"] for r in rows})
        if seg is not None and hasattr(seg, "features"):
            feats.setdefault("reference", []).append(volume_features(img, seg))  # as for the outputs
        if opt.fid_weights is not None:
            slices.setdefault("reference", []).append(_mask_slices(to_unit(img.array, ev.modality, mask), mask))
    if reference and (feats.get("reference") or slices.get("reference")):
        ev.distribution = distribution_distances(slices, feats, methods, opt.fid_weights)
        pooled = feats if feats.get("reference") else slices
        ev.slices = {k: int(sum(len(a) for a in v)) for k, v in pooled.items()}
    _notes(ev, opt, reference, reports)
    return ev


def _notes(ev: UnpairedEvaluation, opt: UnpairedOptions, reference: Sequence[RealCase], reports: Mapping[str, Any]) -> None:
    seg = opt.segmenter
    if seg is None:
        ev.notes.append("Re-segmentation Dice not computed: no segmenter given (--segmenter RUN | ct-seg-demo | "
                        "totalsegmentator).")
    elif not any(r["method"] == REAL for r in ev.dice_rows):
        ev.notes.append("No Dice of the segmenter on real images: give real volumes with their labels (--ref, "
                        "--ref-labels) to see how far the synthetic Dice is from the segmenter's own.")
    if not reference:
        ev.notes.append("No distribution distance: no reference set of real volumes given (--ref).")
    elif seg is None or not hasattr(seg, "features"):
        ev.notes.append("No Fréchet-Seg: it needs an own segmenter (train-segmenter run); TotalSegmentator gives none.")
    if opt.fid_weights is None:
        ev.notes.append("FID not computed: no Inception weights file (--fid-weights or $SEG2MED_FID_WEIGHTS); "
                        "nothing is downloaded.")
    if ev.slices and min(ev.slices.values()) < 200:
        ev.notes.append(f"Fréchet distances from few slices ({min(ev.slices.values())} on the smaller side) are biased "
                        "upwards and noisy: compare methods with each other, not with published values.")
    for walk, counts in reports.items():
        ev.notes.append(f"Labels brought to the segmenter's scheme through the crosswalk {walk}: {counts}.")


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not v.size:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def dice_summary(rows: Sequence[Mapping[str, Any]], method: str) -> dict[str, Any]:
    """Per class mean Dice / HD95 over subjects, their mean ± sd over classes, and the paper counts
    (classes with mean Dice > 0.9 / > 0.8)."""
    mine = [r for r in rows if r["method"] == method]
    per_class: dict[int, dict[str, Any]] = {}
    for c in sorted({r["class"] for r in mine}):
        rc = [r for r in mine if r["class"] == c]
        per_class[c] = {"name": rc[0]["name"], "dice": _mean_sd([r["dice"] for r in rc])["mean"],
                        "hd95": _mean_sd([r["hd95"] for r in rc])["mean"], "subjects": len(rc)}
    means = [e["dice"] for e in per_class.values()]
    out = {"classes": len(per_class), "dice": _mean_sd(means), "hd95": _mean_sd([e["hd95"] for e in per_class.values()]),
           "per_class": per_class}
    for t in DICE_COUNTS:
        out[f"classes_dice_above_{t:g}"] = int(sum(m is not None and m > t for m in means))
    return out


def summarize_unpaired(ev: UnpairedEvaluation) -> dict[str, Any]:
    """The summary: per method the per-organ check (fraction of organs in range / in order, mean ± sd over
    subjects), the re-segmentation Dice and counts, the distribution distances; the segmenter on real images."""
    methods: dict[str, Any] = {}
    for m in ev.methods:
        rows = [r for r in ev.qc_rows if r["method"] == m]
        entry: dict[str, Any] = {
            "organs_ok_fraction": _mean_sd([r["organs_ok_fraction"] for r in rows]),
            "organs_checked": int(sum(r["organs_checked"] for r in rows)),
            "organs_failed": int(sum(r["organs_failed"] for r in rows)),
            "subjects_passed": int(sum(r["organs_failed"] == 0 for r in rows)), "subjects": len(rows)}
        if ev.modality == "mr":
            entry["inverted_pairs"] = _mean_sd([r["inverted_pairs"] for r in rows])
        if any(r["method"] == m for r in ev.dice_rows):
            entry["resegmentation"] = dice_summary(ev.dice_rows, m)
        entry.update({k: {"value": v} for k, v in ev.distribution.get(m, {}).items()})
        methods[m] = entry
    real = dice_summary(ev.dice_rows, REAL) if any(r["method"] == REAL for r in ev.dice_rows) else None
    return {"kind": "seg2med-unpaired-evaluation", "modality": ev.modality,
            "subjects": len({r["subject"] for r in ev.qc_rows}), "methods": methods, "real_image": real,
            "distribution_slices": ev.slices, "dice_counts": list(DICE_COUNTS), "notes": ev.notes}


__all__ = ["DICE_COUNTS", "REAL", "RealCase", "UnpairedCase", "UnpairedEvaluation", "UnpairedOptions", "collect_unpaired",
           "dice_summary",
           "evaluate_unpaired", "output_modality", "output_sequence", "resegmentation_rows", "segmenter_scheme",
           "summarize_unpaired"]

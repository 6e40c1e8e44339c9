"""Evaluate synthetic volumes against real ones: intensity metrics, anatomical fidelity, distribution distances.

Every metric is computed per subject (one row per subject and method) inside
a mask: the body (label map != 0, or a body threshold of the reference when
no labels are given) or a mask file. Intensities are first brought to [0, 1]
the way the seg2med paper compares them:

* CT: the fixed window [-1000, 1000] HU (``data_range`` 1); MAE is also given
  in HU on the raw values.
* MR: each volume on its own, its 0.5th-99.5th percentiles inside the mask
  mapped to [0, 1] (MR intensities carry no absolute unit).

Anatomical fidelity needs a segmenter (``seg2med train-segmenter``) and the
label map: ``dice_gen`` compares the segmentation of the synthetic image with
the labels, ``dice_orig`` that of the real image (the upper bound).
Distribution distances are pooled over all slices of a method: FID (only
with a local Inception weights file) and the Fréchet distance in the
segmenter's feature space ("Fréchet-Seg", never called FID).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from seg2med.data.intensity import CT_AIR_BELOW, check_fits_modality, check_is_image
from seg2med.data.normalize import normalize_volume
from seg2med.errors import ConfigError, InputError
from seg2med.evaluation.pairs import Case
from seg2med.inference.segment import volume_features
from seg2med.io import Volume, load_volume
from seg2med.io.files import read_json
from seg2med.io.nifti import check_same_grid, sidecar_path
from seg2med.io.sidecars import read_label_table
from seg2med.metrics import (
    MS_SSIM_WEIGHTS,
    dice_per_class,
    fsim,
    hd95_per_class,
    histcc,
    mae,
    ms_ssim,
    ms_ssim_min_size,
    psnr,
    ssim,
)
from seg2med.metrics.stats import MetricAccumulator

log = logging.getLogger(__name__)

CT_RANGE = (-1000.0, 1000.0)
MR_PERCENTILES = (0.5, 99.5)
#: Per-subject intensity metrics, in report order, with "higher is better".
INTENSITY_METRICS = {"ssim": True, "ms_ssim": True, "psnr": True, "mae": False, "histcc": True, "fsim": True}
#: Every per-subject metric column, in report order.
METRIC_COLUMNS = (*INTENSITY_METRICS, "mae_hu", "dice_mean")
QUALITATIVE_SUBJECTS = 3
#: MS-SSIM window: 5 scales need slices of 16 x kernel pixels; 5 x 5 (sigma 0.8) fits the 128-pixel slices of
#: 3 mm abdominal volumes that 11 x 11 (176 pixels) does not.
MS_SSIM_WINDOW = {"kernel_size": 5, "kernel_sigma": 0.8}


@dataclass
class EvalOptions:
    """How volumes are compared (see the module docstring)."""

    modality: str = "auto"  # auto | ct | mr
    mask: str = "body"  # body | none | (a mask file given per case)
    metrics: Sequence[str] = tuple(INTENSITY_METRICS)
    fid_weights: str | Path | None = None
    segmenter: Any = None  # a loaded Segmenter (seg2med.inference.segment), a TotalSegmentatorRunner, or None

    def __post_init__(self) -> None:
        if self.modality not in ("auto", "ct", "mr"):
            raise ConfigError(f"--modality: expected auto, ct or mr, got {self.modality!r}")
        if self.mask not in ("body", "none"):
            raise ConfigError(f"--mask: expected body, none or a mask file, got {self.mask!r}")
        unknown = sorted(set(self.metrics) - set(INTENSITY_METRICS))
        if unknown:
            raise ConfigError(f"--metrics: unknown {unknown} (known: {', '.join(INTENSITY_METRICS)})")


def reference_method(methods: Sequence[str]) -> str:
    """The method the others are tested against: the diffusion model when present, else the first."""
    return "ddpm" if "ddpm" in methods else methods[0]


@dataclass
class CaseResult:
    """What :func:`evaluate_case` measured on one subject."""

    subject: str
    modality: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per method: subject, method, voxels, metric values
    dice_rows: list[dict[str, Any]] = field(default_factory=list)  # one per method (and "real image") x class
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # "reference" / method -> sampled [0, 1] values
    slices: dict[str, np.ndarray] = field(default_factory=dict)  # "reference" / method -> [0, 1] axial slices (FID)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "reference" / method -> segmenter features
    panel: dict[str, Any] | None = None  # the qualitative slices, when asked for
    notes: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """What :func:`evaluate_cases` measured: tables for the CSV / JSON, arrays for the report figures, and the
    accumulators the summary statistics come from (fed by :meth:`add`, one :class:`CaseResult` at a time)."""

    modality: str
    methods: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per subject x method (per_subject.csv)
    dice_rows: list[dict[str, Any]] = field(default_factory=list)  # one per subject x method x class (dice.csv)
    distribution: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> {fid, frechet_seg}
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # "reference" / method -> sampled [0,1] values
    panels: list[dict[str, Any]] = field(default_factory=list)  # qualitative slices of the first subjects
    notes: list[str] = field(default_factory=list)
    #: the metric values of ``rows`` per subject and method, tested against :func:`reference_method`
    scores: MetricAccumulator = field(init=False)
    #: the Dice of ``dice_rows``, one value per (subject, class) of each method
    dice: MetricAccumulator = field(init=False)

    def __post_init__(self) -> None:
        self.scores = MetricAccumulator(reference=reference_method(self.methods))
        self.dice = MetricAccumulator()

    def add(self, result: CaseResult) -> None:
        """Take in one subject's rows, Dice rows, panel and notes (its pooled arrays are left to the caller)."""
        if result.modality != self.modality:
            raise InputError(f"subject {result.subject}: {result.modality.upper()} but earlier subjects are "
                             f"{self.modality.upper()}")
        self.rows += result.rows
        self.dice_rows += result.dice_rows
        for row in result.rows:
            values = {m: row[m] for m in METRIC_COLUMNS if m in row}
            if values:
                self.scores.add(row["subject"], row["method"], values)
        for row in result.dice_rows:
            self.dice.add(f"{row['subject']} class {row['class']}", row["method"], dice=row["dice"])
        if result.panel is not None:
            self.panels.append(result.panel)
        self.notes += [n for n in result.notes if n not in self.notes]


# --------------------------------------------------------------------------- preparation
def detect_modality(case: Case, ref: Volume) -> tuple[str, str]:
    """``(modality, how it was found)``: CT when a generation sidecar says so or the reference holds
    air-like HU (minimum < -500); else MR."""
    for path in case.predictions.values():
        side = sidecar_path(path)
        if side.is_file():
            try:
                data = read_json(side)
            except InputError:
                data = None
            mod = data.get("modality") if isinstance(data, dict) else None
            if mod in ("ct", "mr"):
                return mod, f"--modality auto: {side.name} says {mod.upper()}"
    low = float(np.min(ref.array))
    mod = "ct" if low < CT_AIR_BELOW else "mr"
    return mod, f"--modality auto: {mod.upper()} from the minimum {low:g} of {case.reference.name}"


def check_segmenter_fits(segmenter: Any, modality: str, labels: Volume | None, labels_path: Path | None) -> None:
    """An own segmenter (``train-segmenter`` run) must have been trained on this modality and on labels of the
    scheme of ``labels``: its ids are compared with the reference labels' ids as they are (a ``total_mr``
    segmenter scored against ``total`` labels compares small bowel with a lung lobe)."""
    spec = getattr(segmenter, "spec", None)
    if spec is None:  # TotalSegmentator: its task follows the modality
        return
    name = getattr(segmenter, "path", "the segmenter")
    trained = spec.modality if spec.states("modality") else None
    if trained is not None and trained != modality:
        raise InputError(f"{name}: a segmenter trained on {trained.upper()} images, but these are {modality.upper()}")
    if labels is None or labels_path is None:
        return
    seg_scheme = (spec.scheme or "").split("+")[0]
    table = read_label_table(labels_path)  # a seg2med label volume names its scheme; other files do not
    lab_scheme = table.name.split("+")[0] if table is not None else ""
    if seg_scheme and lab_scheme and seg_scheme != lab_scheme:
        raise InputError(f"{name}: a segmenter of scheme {seg_scheme!r}, but {labels_path} is in scheme {lab_scheme!r}: "
                         "Dice would compare different classes")
    classes = set(getattr(segmenter, "classes", ()) or ())
    arr = np.asarray(labels.array)
    labelled = int(np.count_nonzero(arr))
    if classes and labelled:
        outside = int(np.count_nonzero(~np.isin(arr, list(classes)) & (arr != 0)))
        if outside > 0.5 * labelled:
            raise InputError(f"{labels_path}: {100 * outside / labelled:.0f} % of its labelled voxels have ids the "
                             f"segmenter {name} never predicts (another label scheme?)")


def body_mask(ref: Volume, labels: Volume | None, modality: str) -> np.ndarray:
    """Label map != 0, else a hole-filled threshold of the reference (CT > -500 HU; MR > 5 % of its 99th percentile)."""
    if labels is not None:
        return np.asarray(labels.array) != 0
    arr = np.asarray(ref.array, np.float64)
    thr = -500.0 if modality == "ct" else 0.05 * float(np.percentile(arr, 99))
    m = arr > thr
    for k in range(m.shape[2]):
        m[:, :, k] = ndimage.binary_fill_holes(m[:, :, k])
    return m


def to_unit(arr: np.ndarray, modality: str, mask: np.ndarray) -> np.ndarray:
    """[0, 1] intensities for comparison (see module docstring)."""
    if modality == "ct":
        lo, hi = CT_RANGE
        return np.clip((np.asarray(arr, np.float64) - lo) / (hi - lo), 0.0, 1.0)
    out, _ = normalize_volume(np.asarray(arr, np.float64), "mr", mask, mr_percentiles=MR_PERCENTILES)
    return np.asarray(out, np.float64)


def _load_on(path: Path, ref: Volume, kind: str = "image") -> Volume:
    vol = load_volume(path, kind=kind)
    check_same_grid(vol, ref)
    return vol


def _best_slice(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(-1, mask.shape[2]).sum(0)))


# --------------------------------------------------------------------------- metrics
def intensity_metrics(pred01: np.ndarray, ref01: np.ndarray, mask: np.ndarray, metrics: Sequence[str],
                      pred_raw: np.ndarray | None = None, ref_raw: np.ndarray | None = None) -> dict[str, float]:
    """The requested metrics of one prediction (in [0, 1]) inside ``mask``; ``mae_hu`` when raw CT is given."""
    fns: dict[str, Callable[[], float]] = {
        "ssim": lambda: ssim(pred01, ref01, data_range=1.0, mask=mask),
        "ms_ssim": lambda: ms_ssim(pred01, ref01, data_range=1.0, mask=mask, **MS_SSIM_WINDOW),
        "psnr": lambda: psnr(pred01, ref01, data_range=1.0, mask=mask),
        "mae": lambda: mae(pred01, ref01, mask),
        "histcc": lambda: histcc(pred01, ref01, mask=mask, value_range=(0.0, 1.0)),
        "fsim": lambda: fsim(pred01, ref01, data_range=1.0, mask=mask),
    }
    out = {name: float(fns[name]()) for name in metrics}
    if pred_raw is not None and ref_raw is not None:
        out["mae_hu"] = mae(pred_raw, ref_raw, mask)
    return out


def _segmentation_rows(seg: Any, case: Case, method: str, image: Volume, labels: Volume, spacing: Sequence[float],
                       body: np.ndarray) -> list[dict[str, Any]]:
    """Dice / HD95 per class of ``image`` re-segmented (own segmenter or TotalSegmentator) against ``labels``."""
    from seg2med.inference.segment import segment_volume
    from seg2med.inference.totalseg import TotalSegmentatorRunner

    if isinstance(seg, TotalSegmentatorRunner):
        predicted = seg.segment(image)
    else:
        predicted = segment_volume(image, seg, body=body)
    known = seg.classes if seg.classes is not None else np.unique(labels.array).tolist()
    classes = [int(c) for c in known if c != 0]
    dice = dice_per_class(predicted.array, labels.array, classes=classes)
    hd = hd95_per_class(predicted.array, labels.array, spacing=spacing, classes=classes)
    return [{"subject": case.subject, "method": method, "class": int(c), "dice": float(dice[c]), "hd95": float(hd[c])}
            for c in classes if np.any(labels.array == c)]


def _case_mask(case: Case, ref: Volume, labels: Volume | None, how: str, modality: str) -> np.ndarray:
    """The subject's mask file, else the body (``how`` "body") or everything ("none"); an empty one is refused."""
    if case.mask is not None:
        mask = np.asarray(_load_on(case.mask, ref, "labels").array) != 0
    elif how == "body":
        mask = body_mask(ref, labels, modality)
    else:
        mask = np.ones(ref.shape[:3], bool)
    if not mask.any():
        raise InputError(f"{case.mask or case.labels or case.reference}: empty mask for subject {case.subject}")
    return mask


def _metrics_that_fit(metrics: Sequence[str], shape: Sequence[int]) -> tuple[list[str], list[str], list[str]]:
    """``(computed, skipped, notes)``: MS-SSIM is skipped (NaN, with a note) on slices too small for its scales."""
    computed = list(metrics)
    k_size, scales = MS_SSIM_WINDOW["kernel_size"], len(MS_SSIM_WEIGHTS)
    min_side = ms_ssim_min_size(k_size, scales)
    if "ms_ssim" not in computed or min(shape[:2]) >= min_side:
        return computed, [], []
    computed.remove("ms_ssim")
    note = (f"MS-SSIM not computed (NaN): slices of {shape[0]} x {shape[1]} px are smaller than the "
            f"{min_side} px its {scales} scales with a {k_size} x {k_size} window need (each scale halves "
            f"the slice; MONAI needs side // {max(1, scales - 1) ** 2} >= kernel size).")
    return computed, ["ms_ssim"], [note]


def evaluate_case(case: Case, options: EvalOptions, rng: np.random.Generator, *, earlier_modality: str | None = None,
                  qualitative: bool = False, progress: Callable[[str], None] | None = None) -> CaseResult:
    """Measure one subject: every prediction against the reference inside the mask (see module docstring).

    ``rng`` draws the histogram samples (one generator for all subjects keeps them reproducible);
    ``earlier_modality`` is that of the subjects measured before (another one is refused before any scoring);
    ``qualitative`` adds the panel of the slice with the most mask voxels."""
    opt = options
    ref = load_volume(case.reference)
    check_is_image(ref, case.reference, "--ref")
    modality, how = (opt.modality, f"--modality {opt.modality}") if opt.modality != "auto" else detect_modality(case, ref)
    check_fits_modality(ref, case.reference, "--ref", modality, how)
    if earlier_modality is not None and modality != earlier_modality:
        raise InputError(f"{case.reference}: {modality.upper()} but earlier subjects are {earlier_modality.upper()}")
    labels = _load_on(case.labels, ref, "labels") if case.labels else None
    if opt.segmenter is not None:
        check_segmenter_fits(opt.segmenter, modality, labels, case.labels)
    mask = _case_mask(case, ref, labels, opt.mask, modality)
    ref01 = to_unit(ref.array, modality, mask)
    metrics, skipped, notes = _metrics_that_fit(opt.metrics, ref.shape)
    res = CaseResult(case.subject, modality, notes=notes)
    scores_dice = opt.segmenter is not None and labels is not None
    seg_feats = opt.segmenter is not None and hasattr(opt.segmenter, "features")

    def pool(name: str, vol: Volume, vol01: np.ndarray) -> None:  # the values distributions are pooled from
        res.samples[name] = _sample(vol01[mask], rng)
        if opt.fid_weights is not None:
            res.slices[name] = _mask_slices(vol01, mask)
        if seg_feats:
            res.features[name] = volume_features(vol, opt.segmenter, mask)

    pool("reference", ref, ref01)
    k = _best_slice(mask)
    prior = _load_on(case.prior, ref) if case.prior is not None else None
    if qualitative:
        res.panel = {"subject": case.subject, "slice": k, "reference": ref01[:, :, k], "mask": mask[:, :, k],
                     "labels": None if labels is None else np.asarray(labels.array)[:, :, k], "methods": {}}
        if prior is not None:
            res.panel["prior"] = to_unit(prior.array, modality, mask)[:, :, k]
    if scores_dice:
        res.dice_rows += _segmentation_rows(opt.segmenter, case, "real image", ref, labels, ref.spacing, mask)
    for method, path in case.predictions.items():
        if progress:
            progress(f"{case.subject}: {method}")
        pred = _load_on(path, ref)
        check_is_image(pred, path, "--pred")
        check_fits_modality(pred, path, "--pred", modality, how)
        pred01 = to_unit(pred.array, modality, mask)
        raw = (pred.array, ref.array) if modality == "ct" else (None, None)
        row = {"subject": case.subject, "method": method, "voxels": int(mask.sum()),
               **intensity_metrics(pred01, ref01, mask, metrics, *raw), **dict.fromkeys(skipped, float("nan"))}
        if scores_dice:
            seg_rows = _segmentation_rows(opt.segmenter, case, method, pred, labels, ref.spacing, mask)
            res.dice_rows += seg_rows
            row["dice_mean"] = float(np.nanmean([r["dice"] for r in seg_rows])) if seg_rows else float("nan")
        res.rows.append(row)
        pool(method, pred, pred01)
        if res.panel is not None:
            res.panel["methods"][method] = {"image": pred01[:, :, k],
                                            "ssim": ssim(pred01[:, :, k], ref01[:, :, k], 1.0, mask=mask[:, :, k])}
    return res


def evaluate_cases(cases: Sequence[Case], options: EvalOptions | None = None,
                   progress: Callable[[str], None] | None = None) -> Evaluation:
    """Measure every case (see module docstring); predictions and references must share their voxel grid.

    Each subject is one :func:`evaluate_case`; its :class:`CaseResult` goes into the :class:`Evaluation`, and its
    sampled intensities, slices and features are pooled per method for the histograms and distribution distances."""
    if not cases:
        raise InputError("nothing to evaluate: no subject given")
    opt = options or EvalOptions()
    methods = list(cases[0].predictions)
    rng = np.random.default_rng(0)
    ev: Evaluation | None = None
    pooled: dict[str, dict[str, list[np.ndarray]]] = {"samples": {}, "slices": {}, "features": {}}
    for i, case in enumerate(cases):
        res = evaluate_case(case, opt, rng, earlier_modality=ev.modality if ev else None,
                            qualitative=i < QUALITATIVE_SUBJECTS, progress=progress)
        ev = ev or Evaluation(res.modality, methods)
        ev.add(res)
        for kind, arrays in pooled.items():
            for name, a in getattr(res, kind).items():
                arrays.setdefault(name, []).append(a)
    assert ev is not None
    if opt.segmenter is not None and any(c.labels is None for c in cases):
        ev.notes.append("Dice needs --labels: subjects without labels have no Dice.")
    ev.histograms = {k: np.concatenate(v) for k, v in pooled["samples"].items()}
    ev.distribution = distribution_distances(pooled["slices"], pooled["features"], methods, opt.fid_weights)
    return ev


def _sample(values: np.ndarray, rng: np.random.Generator, n: int = 200_000) -> np.ndarray:
    return values if values.size <= n else rng.choice(values, n, replace=False)


def _mask_slices(vol01: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Axial slices [N, H, W] that hold any mask voxel (for distribution distances)."""
    keep = mask.reshape(-1, mask.shape[2]).any(0)
    return np.moveaxis(vol01[:, :, keep], 2, 0).astype(np.float32)


def distribution_distances(slices: Mapping[str, list[np.ndarray]], feats: Mapping[str, list[np.ndarray]],
                           methods: Sequence[str], fid_weights: str | Path | None) -> dict[str, dict[str, float]]:
    """FID (from [0, 1] slices, with local Inception weights) and Fréchet-Seg (from segmenter features) of each method."""
    out: dict[str, dict[str, float]] = {}
    if fid_weights is not None and slices:
        from seg2med.metrics import fid

        ref = np.concatenate(slices["reference"])
        for m in methods:
            out.setdefault(m, {})["fid"] = float(fid(np.concatenate(slices[m]), ref, weights=fid_weights))
    if feats:
        from seg2med.metrics import frechet_from_features

        ref_feats = np.concatenate(feats["reference"])
        for m in methods:
            out.setdefault(m, {})["frechet_seg"] = float(frechet_from_features(np.concatenate(feats[m]), ref_feats))
    return out

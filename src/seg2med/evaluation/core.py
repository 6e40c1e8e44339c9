"""Evaluate synthetic volumes against real ones: intensity metrics, anatomical fidelity, distribution distances.

Every metric is computed per subject (one row per subject and method) inside
a mask: the body (label map != 0, or a body threshold of the reference when
no labels are given) or a mask file. Intensities are first brought to [0, 1]
the way the seg2med paper compares them:

* CT: the fixed window [-1000, 1000] HU (``data_range`` 1); MAE is also given
  in HU on the raw values.
* MR: each volume on its own, its 0.5th-99.5th percentiles inside the mask
  mapped to [0, 1] (MR intensities carry no absolute unit).

Through-plane quality (a slice-wise generator streaks across slices): ``ssim``
compares axial planes, ``ssim_coronal`` / ``ssim_sagittal`` the planes along
voxel axes 1 / 0 (named for arrays in closest-RAS voxel order (x, y, z), as
seg2med writes them; a note says when a reference is stored otherwise);
``roughness_z`` is :func:`~seg2med.metrics.image.roughness_ratio` along axis 2
(mean squared difference of neighbouring slices, synthetic / real, inside the
mask) and ``roughness_xy`` the mean of the ratios along axes 0 and 1. A
roughness ratio is best at 1.0 (as smooth as the real volume): neither higher
nor lower is better (:data:`METRIC_GOALS`). Metrics that do not fit a volume
(planes under the SSIM window, no neighbouring pair in the mask) are NaN with a
note.

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
from seg2med.metrics.image import PLANE_AXES, SSIM_MIN_SIDE, roughness_ratio, ssim_plane_shape
from seg2med.metrics.stats import MetricAccumulator

log = logging.getLogger(__name__)

CT_RANGE = (-1000.0, 1000.0)
MR_PERCENTILES = (0.5, 99.5)
HIGHER, LOWER = "higher", "lower"
#: Per-subject intensity metrics (``--metrics``), in report order, with what is better: :data:`HIGHER`,
#: :data:`LOWER`, or a target value (a float: the best value, departures either way are worse; the roughness
#: ratios are best at 1.0, as smooth as the real volume).
INTENSITY_METRICS: dict[str, str | float] = {
    "ssim": HIGHER, "ssim_coronal": HIGHER, "ssim_sagittal": HIGHER, "ms_ssim": HIGHER, "psnr": HIGHER, "mae": LOWER,
    "histcc": HIGHER, "fsim": HIGHER, "roughness_z": 1.0, "roughness_xy": 1.0}
#: Every per-subject metric column, in report order.
METRIC_COLUMNS = (*INTENSITY_METRICS, "mae_hu", "dice_mean")
#: What is better for every number of an evaluation (per-subject columns, pooled Dice, distribution distances):
#: the one source of the summary's ``better`` entries and the report's column marks. The Mann-Whitney tests
#: are two-sided and use no direction.
METRIC_GOALS: dict[str, str | float] = {**INTENSITY_METRICS, "mae_hu": LOWER, "dice_mean": HIGHER,
                                        "dice_all_classes": HIGHER, "fid": LOWER, "frechet_seg": LOWER}
#: The SSIM metrics and the voxel axis each slices along.
SSIM_AXES = {"ssim": PLANE_AXES["axial"], "ssim_coronal": PLANE_AXES["coronal"], "ssim_sagittal": PLANE_AXES["sagittal"]}
#: The roughness metrics and the voxel axes each averages its ratio over.
ROUGHNESS_AXES = {"roughness_z": (2,), "roughness_xy": (0, 1)}
QUALITATIVE_SUBJECTS = 3
#: MS-SSIM window: 5 scales need slices of 16 x kernel pixels; 5 x 5 (sigma 0.8) fits the 128-pixel slices of
#: 3 mm abdominal volumes that 11 x 11 (176 pixels) does not.
MS_SSIM_WINDOW = {"kernel_size": 5, "kernel_sigma": 0.8}


def goal_text(metric: str) -> str:
    """``"higher"``, ``"lower"`` or ``"closer to 1"`` (a target value): what is better for ``metric``
    (:data:`METRIC_GOALS`); ``""`` for a name it does not know."""
    goal = METRIC_GOALS.get(metric)
    if goal is None:
        return ""
    return goal if isinstance(goal, str) else f"closer to {goal:g}"


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
def sidecar_field(path: Path, key: str) -> Any:
    """``key`` of the generation sidecar beside ``path`` (None when there is no readable sidecar or no such key)."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = read_json(side)
    except InputError:
        return None
    return data.get(key) if isinstance(data, dict) else None


def detect_modality(case: Case, ref: Volume) -> tuple[str, str]:
    """``(modality, how it was found)``: CT when a generation sidecar says so or the reference holds
    air-like HU (minimum < -500); else MR."""
    for path in case.predictions.values():
        mod = sidecar_field(path, "modality")
        if mod in ("ct", "mr"):
            return mod, f"--modality auto: {sidecar_path(path).name} says {mod.upper()}"
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


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the mask's centre of mass: where the sagittal and coronal panels cut."""
    cx, cy, _ = ndimage.center_of_mass(mask)
    return int(round(cx)), int(round(cy))


def _roughness(pred01: np.ndarray, ref01: np.ndarray, mask: np.ndarray, axes: Sequence[int]) -> float:
    return float(np.mean([roughness_ratio(pred01, ref01, mask, axis=a) for a in axes]))


def _plane_ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """SSIM of one 2D plane inside its mask; NaN when the plane is under the window or holds no mask pixel."""
    if min(pred.shape) < SSIM_MIN_SIDE or not mask.any():
        return float("nan")
    return ssim(pred, ref, 1.0, mask=mask)


# --------------------------------------------------------------------------- metrics
def intensity_metrics(pred01: np.ndarray, ref01: np.ndarray, mask: np.ndarray, metrics: Sequence[str],
                      pred_raw: np.ndarray | None = None, ref_raw: np.ndarray | None = None) -> dict[str, float]:
    """The requested metrics of one prediction (in [0, 1]) inside ``mask``; ``mae_hu`` when raw CT is given."""
    fns: dict[str, Callable[[], float]] = {
        "ssim": lambda: ssim(pred01, ref01, data_range=1.0, mask=mask, axis=SSIM_AXES["ssim"]),
        "ssim_coronal": lambda: ssim(pred01, ref01, data_range=1.0, mask=mask, axis=SSIM_AXES["ssim_coronal"]),
        "ssim_sagittal": lambda: ssim(pred01, ref01, data_range=1.0, mask=mask, axis=SSIM_AXES["ssim_sagittal"]),
        "ms_ssim": lambda: ms_ssim(pred01, ref01, data_range=1.0, mask=mask, **MS_SSIM_WINDOW),
        "psnr": lambda: psnr(pred01, ref01, data_range=1.0, mask=mask),
        "mae": lambda: mae(pred01, ref01, mask),
        "histcc": lambda: histcc(pred01, ref01, mask=mask, value_range=(0.0, 1.0)),
        "fsim": lambda: fsim(pred01, ref01, data_range=1.0, mask=mask),
        "roughness_z": lambda: _roughness(pred01, ref01, mask, ROUGHNESS_AXES["roughness_z"]),
        "roughness_xy": lambda: _roughness(pred01, ref01, mask, ROUGHNESS_AXES["roughness_xy"]),
    }
    out = {name: float(fns[name]()) for name in metrics}
    if pred_raw is not None and ref_raw is not None:
        out["mae_hu"] = mae(pred_raw, ref_raw, mask)
    return out


def _segmentation_rows(seg: Any, case: Case, method: str, image: Volume, labels: Volume, spacing: Sequence[float],
                       ) -> list[dict[str, Any]]:
    """Dice / HD95 per class of ``image`` re-segmented (own segmenter or TotalSegmentator) against ``labels``.

    The segmenter sees the image as a user would give it: its body contour comes from the image itself, not from
    the evaluation mask (a mask of the labelled organs would blank everything else out of its input)."""
    from seg2med.inference.segment import segment_volume
    from seg2med.inference.totalseg import TotalSegmentatorRunner

    if isinstance(seg, TotalSegmentatorRunner):
        predicted = seg.segment(image)
    else:
        predicted = segment_volume(image, seg)
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


def _roughness_unfit(ref01: np.ndarray, mask: np.ndarray, axis: int) -> str | None:
    """Why the roughness ratio along ``axis`` is undefined for this reference and mask, or None."""
    try:
        roughness_ratio(ref01, ref01, mask, axis=axis)
    except ValueError as err:
        return str(err)
    return None


def _metrics_that_fit(metrics: Sequence[str], shape: Sequence[int], ref01: np.ndarray | None = None,
                      mask: np.ndarray | None = None) -> tuple[list[str], list[str], list[str]]:
    """``(computed, skipped, notes)``: a metric that does not fit the volume is skipped (NaN, with a note):
    MS-SSIM on slices too small for its scales, an SSIM whose planes are under its window (e.g. coronal /
    sagittal planes of a volume of few slices), a roughness ratio with no neighbouring pair in the mask or a
    reference constant along its axis (checked when ``ref01`` and ``mask`` are given)."""
    computed = list(metrics)
    skipped: list[str] = []
    notes: list[str] = []
    k_size, scales = MS_SSIM_WINDOW["kernel_size"], len(MS_SSIM_WEIGHTS)
    min_side = ms_ssim_min_size(k_size, scales)
    if "ms_ssim" in computed and min(shape[:2]) < min_side:
        skipped.append("ms_ssim")
        notes.append(f"MS-SSIM not computed (NaN): slices of {shape[0]} x {shape[1]} px are smaller than the "
                     f"{min_side} px its {scales} scales with a {k_size} x {k_size} window need (each scale halves "
                     f"the slice; MONAI needs side // {max(1, scales - 1) ** 2} >= kernel size).")
    for name, axis in SSIM_AXES.items():
        plane = ssim_plane_shape(tuple(shape[:3]), axis)
        if name in computed and min(plane) < SSIM_MIN_SIDE:
            skipped.append(name)
            notes.append(f"{name} not computed (NaN): its planes (along voxel axis {axis}) are "
                         f"{' x '.join(map(str, plane))} px, under the {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} px "
                         f"of the SSIM window (the volume is {' x '.join(map(str, shape[:3]))} voxels).")
    if ref01 is not None and mask is not None:
        for name, axes in ROUGHNESS_AXES.items():
            why = [w for w in (_roughness_unfit(ref01, mask, a) for a in axes) if w] if name in computed else []
            if why:
                skipped.append(name)
                notes.append(f"{name} not computed (NaN): {why[0]}.")
    return [m for m in computed if m not in skipped], skipped, notes


def _orientation_note(ref: Volume, path: Path, metrics: Sequence[str]) -> list[str]:
    """A note when the reference's voxel axes are not in closest-RAS order: the plane names assume (x, y, z)."""
    import nibabel as nib

    codes = "".join(nib.orientations.aff2axcodes(ref.affine))
    planes = [m for m in ("ssim", "ssim_coronal", "ssim_sagittal", "roughness_z", "roughness_xy") if m in metrics]
    if not planes or (codes[0] in "LR" and codes[1] in "AP" and codes[2] in "SI"):
        return []
    return [f"{path.name}: voxel axes {codes} (not closest-RAS order): {', '.join(planes)} are measured along "
            f"voxel axes (axial = along axis 2, coronal = 1, sagittal = 0), which are not the anatomical planes here."]


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
    metrics, skipped, notes = _metrics_that_fit(opt.metrics, ref.shape, ref01, mask)
    notes += _orientation_note(ref, case.reference, opt.metrics)
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
    cx, cy = _centre(mask)

    def planes(vol01: np.ndarray) -> dict[str, np.ndarray]:  # the three planes of the through-plane figure
        return {"axial": vol01[:, :, k], "coronal": vol01[:, cy, :], "sagittal": vol01[cx, :, :]}

    if qualitative:
        res.panel = {"subject": case.subject, "slice": k, "reference": ref01[:, :, k], "mask": mask[:, :, k],
                     "labels": None if labels is None else np.asarray(labels.array)[:, :, k], "methods": {},
                     "centre": (cx, cy, k), "spacing": tuple(float(s) for s in ref.spacing[:3]),
                     "planes": {"reference": planes(ref01)}, "plane_masks": planes(mask)}
        if prior is not None:
            prior01 = to_unit(prior.array, modality, mask)
            res.panel["prior"] = prior01[:, :, k]
            res.panel["planes"]["prior"] = planes(prior01)
    if scores_dice:
        res.dice_rows += _segmentation_rows(opt.segmenter, case, "real image", ref, labels, ref.spacing)
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
            seg_rows = _segmentation_rows(opt.segmenter, case, method, pred, labels, ref.spacing)
            res.dice_rows += seg_rows
            row["dice_mean"] = float(np.nanmean([r["dice"] for r in seg_rows])) if seg_rows else float("nan")
        res.rows.append(row)
        pool(method, pred, pred01)
        if res.panel is not None:
            shown = planes(pred01)
            res.panel["methods"][method] = {
                "image": pred01[:, :, k], "ssim": ssim(pred01[:, :, k], ref01[:, :, k], 1.0, mask=mask[:, :, k]),
                "planes": shown, "roughness_z": row.get("roughness_z", float("nan")),
                "plane_ssim": {p: _plane_ssim(a, res.panel["planes"]["reference"][p], res.panel["plane_masks"][p])
                               for p, a in shown.items()}}
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

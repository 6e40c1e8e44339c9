"""Generalisation suite: does a model improve its physics prior on inputs unlike its training data?

Usage::

    python benchmarks/generalization.py [--data ../shared/data] [--models ct-demo,mr-demo[,RUN...]]
        [--strengths 1.0,0.7,0.5,0.3] [--steps 50] [--seeds 0,1,2] [--baseline unet=RUN]
        [--guidance default,0,4:0:15]
        [--cases heldout,spacing,interior,sparse,cta-like,mr-heldout] [--precision bf16]
        [--out benchmarks/results/generalization-cpu.md] [--quick]

Every case is built from the shared data only, from slices the shipped models never trained on
(the test z-blocks of ``scripts/build_demo_datasets.py``): subject A's CT block z 58-71 and subject
C's MR block z 8-11, then changed the way users' inputs differ from the training subject:

* ``heldout``      the block as it is (3 mm, whole cross-section, full TotalSegmentator labels);
* ``spacing``      resampled to 1.5 mm voxels (image linear, labels nearest);
* ``interior``     cropped in-plane to a box that lies entirely inside the body (no outline, no air);
* ``sparse``       only great vessels, one vertebra and the kidneys as organ labels, fat and muscle
                   from HU thresholds as tissue masks, the body mask given;
* ``cta-like``     all three at once (1.5 mm, interior crop, sparse labels): the new user's case;
* ``mr-heldout``   subject C's held-out MR slices (total_mr labels).

Per case and method it reports SSIM, PSNR (on the model's intensity window mapped to [0, 1]) and
MAE (HU for CT, normalised units for MR) inside the body, the through-plane metrics of ``seg2med
evaluate`` (SSIM of coronal and sagittal planes, roughness across slices: synthetic / real, 1 = as
smooth as the real volume; "—" for a volume under 7 slices), mean +- SD over the seeds, and the margin
over the prior alone, for each model (several per modality are compared side by side) at each
``--strength`` (prior-anchored start, 1 = pure noise) and ``--guidance`` (``default``: the model's
config.json ``sampling``; ``S:T:M``: prior anchor of sigma S mm and tolerance T, field-of-view margin M mm;
``0``: none), the prior alone (the floor a model must beat)
and any ``--baseline`` run. Writes one Markdown report and prints it.
``--quick`` (ct-demo-tiny, 2 cases, 1 seed, 10 steps) is the smoke run of the tests.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

import seg2med
from seg2med.io import Volume, load_volume
from seg2med.metrics.image import mae, psnr, ssim

log = logging.getLogger("generalization")

CT_TEST_BLOCK, MR_TEST_BLOCK = (58, 72), (8, 12)  # the test z-blocks of scripts/build_demo_datasets.py
SPARSE_ORGANS = ("aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "kidney_left", "kidney_right",
                 "vertebrae_L1")
FAT_HU, MUSCLE_HU = (-190.0, -30.0), (-29.0, 150.0)  # tissue thresholds (Alberta protocol, as TotalSegmentator's)


@dataclass
class Case:
    """One input: labels (as a user would give them), optional tissue masks and body mask, the real image."""

    name: str
    modality: str
    labels: Volume
    scheme: str
    image: Volume
    body: Volume | None = None
    tissue_masks: dict[str, Volume] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- geometry helpers (exact affines)
def resample(vol: Volume, factor: float, order: int) -> Volume:
    """``vol`` on a grid ``factor`` times finer along every axis (voxel centres of the new grid kept exact)."""
    arr = ndimage.zoom(vol.array.astype(np.float32 if order else vol.array.dtype), factor, order=order, mode="nearest",
                       grid_mode=True)
    scale = np.diag([1 / factor] * 3 + [1.0])
    scale[:3, 3] = (1 / factor - 1) / 2  # grid_mode: the old voxel's corner stays where it was
    out = arr if order else arr.astype(vol.array.dtype)
    return Volume(out, vol.affine @ scale, None, vol.path)


def interior_box(body: np.ndarray, inside: float = 0.995) -> tuple[slice, slice, slice]:
    """The largest centred in-plane box (all slices) whose voxels are at least ``inside`` body."""
    xs, ys = np.nonzero(body.any(axis=2).any(axis=1))[0], np.nonzero(body.any(axis=2).any(axis=0))[0]
    cx, cy = (xs[0] + xs[-1]) // 2, (ys[0] + ys[-1]) // 2
    best = (slice(cx - 4, cx + 4), slice(cy - 4, cy + 4), slice(None))
    for frac in np.linspace(0.95, 0.2, 31):
        hx, hy = int((xs[-1] - xs[0]) * frac / 2), int((ys[-1] - ys[0]) * frac / 2)
        box = (slice(cx - hx, cx + hx), slice(cy - hy, cy + hy), slice(None))
        if body[box].mean() >= inside:
            return box
    return best


# --------------------------------------------------------------------------- the cases
def _ct_block(data: Path) -> tuple[Volume, Volume]:
    ts = data / "totalsegmentator"
    img, lab = load_volume(ts / "example_ct.nii.gz"), load_volume(ts / "example_seg_fast_force_split.nii.gz")
    box = (slice(None), slice(None), slice(*CT_TEST_BLOCK))
    return img.crop(box), lab.crop(box)


def _body_from_ct(img: Volume) -> Volume:
    body = ndimage.binary_fill_holes(ndimage.binary_opening(img.array > -500, iterations=1), structure=np.ones((3, 3, 1)))
    return img.like(body.astype(np.uint8))


def _sparse(labels: Volume, img: Volume, body: Volume) -> tuple[Volume, dict[str, Volume]]:
    from seg2med.labels import get_scheme

    ids = get_scheme("total").classes
    keep = np.isin(labels.array, [ids[n] for n in SPARSE_ORGANS])
    sparse = labels.like(np.where(keep, labels.array, 0).astype(labels.array.dtype))
    hu, inside, free = img.array, body.array > 0, ~keep
    fat = inside & free & (hu >= FAT_HU[0]) & (hu <= FAT_HU[1])
    muscle = inside & free & (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
    return sparse, {"subcutaneous_fat": img.like(fat.astype(np.uint8)), "skeletal_muscle": img.like(muscle.astype(np.uint8))}


def build_cases(data: Path, names: list[str]) -> list[Case]:
    """The cases named in ``names`` (see the module docstring)."""
    out: list[Case] = []
    img, lab = _ct_block(data)
    body = _body_from_ct(img)
    fine_img, fine_lab = resample(img, 2.0, 1), resample(lab, 2.0, 0)
    fine_body = _body_from_ct(fine_img)
    for name in names:
        if name == "heldout":
            out.append(Case(name, "ct", lab, "total", img, note="test z-block, 3 mm, full labels"))
        elif name == "spacing":
            out.append(Case(name, "ct", fine_lab, "total", fine_img, note="1.5 mm voxels"))
        elif name == "interior":
            box = interior_box(body.array > 0)
            c_img = img.crop(box)
            out.append(Case(name, "ct", lab.crop(box), "total", c_img, body=c_img.like(np.ones(c_img.shape, np.uint8)),
                            note=f"in-plane crop {c_img.shape[0]}x{c_img.shape[1]} inside the body", extra={"box": box}))
        elif name == "sparse":
            s_lab, masks = _sparse(lab, img, body)
            out.append(Case(name, "ct", s_lab, "total", img, body=body, tissue_masks=masks,
                            note=f"{len(SPARSE_ORGANS)} organs + fat/muscle thresholds + body mask"))
        elif name == "cta-like":
            box = interior_box(fine_body.array > 0)
            c_img, c_lab = fine_img.crop(box), fine_lab.crop(box)
            c_body = c_img.like(np.ones(c_img.shape, np.uint8))
            s_lab, masks = _sparse(c_lab, c_img, c_body)
            out.append(Case(name, "ct", s_lab, "total", c_img, body=c_body, tissue_masks=masks,
                            note="1.5 mm, interior crop, sparse labels", extra={"box": box}))
        elif name == "mr-heldout":
            ts = data / "totalsegmentator"
            box = (slice(None), slice(None), slice(*MR_TEST_BLOCK))
            m_img, m_lab = load_volume(ts / "example_mr_sm.nii.gz").crop(box), load_volume(ts / "example_seg_mr.nii.gz").crop(box)
            out.append(Case(name, "mr", m_lab, "total_mr", m_img, note="subject C test z-block"))
        else:
            raise SystemExit(f"unknown case {name!r}")
    return out


# --------------------------------------------------------------------------- scoring
def _window(lm: Any) -> tuple[float, float]:
    """The model's intensity window (image units), as ``generate`` maps its [0, 1] output back."""
    window = lm.spec.image_window()
    return float(window["low"]), float(window["high"])


#: the through-plane metrics of ``seg2med evaluate`` (coronal / sagittal SSIM, roughness across slices)
THROUGH_PLANE = ("ssim_coronal", "ssim_sagittal", "roughness_z")


def score(pred01: np.ndarray, real01: np.ndarray, mask: np.ndarray, scale: float) -> dict[str, float]:
    """SSIM, PSNR on [0, 1] and MAE in ``scale`` units (HU for CT) inside ``mask``, and the through-plane metrics
    (:data:`THROUGH_PLANE`, as ``seg2med evaluate`` computes them; NaN for a volume thinner than SSIM's 7-voxel
    window)."""
    from seg2med.evaluation.core import intensity_metrics

    thick = min(pred01.shape) >= 7
    through = intensity_metrics(pred01, real01, mask, THROUGH_PLANE) if thick else dict.fromkeys(THROUGH_PLANE, float("nan"))
    return {"ssim": ssim(pred01, real01, data_range=1.0, mask=mask), "psnr": psnr(pred01, real01, data_range=1.0, mask=mask),
            "mae": mae(pred01, real01, mask) * scale, **through}


def run_case(case: Case, lms: list[Any], strengths: list[float], seeds: list[int], steps: int, precision: str,
             baselines: dict[str, Any], guidance: list[dict[str, float] | None] = (None,)) -> list[dict[str, Any]]:
    """Rows (method, strength, seed, metrics, seconds) of one case, for each diffusion model of ``lms`` (the first
    one's intensity window scores them all) at each strength and guidance (None: the model's defaults; else
    ``anchor_scale`` / ``anchor_tolerance`` / ``fov_margin``), and each one-shot baseline."""
    lm = lms[0]
    from seg2med.data.spec import DataSpec

    contour = {"body": case.body} if case.body is not None else {"image": case.image, "modality": case.modality}
    lv = seg2med.build_anatomy(case.labels, scheme=case.scheme, tissue_masks=case.tissue_masks, **contour)
    body = lv.volume.array != 0
    lo, hi = _window(lm)
    real01 = np.clip((case.image.array.astype(np.float64) - lo) / (hi - lo), 0, 1)
    scale = (hi - lo) if case.modality == "ct" else 1.0
    rows: list[dict[str, Any]] = []

    def gen(model: Any, strength: float, seed: int, how: dict[str, float] | None = None) -> Any:
        kw = {"strength": strength} if strength < 1.0 else {}
        return seg2med.generate(lv, model=model, steps=steps, seed=seed, precision=precision, device="cpu", **kw,
                                **(how or {}))

    from seg2med.inference.generate import Guidance

    first = None
    for model in lms:
        seen = set()
        for how in guidance:
            resolved = Guidance.of_model(model, **(how or {}))
            if resolved in seen:  # e.g. 'default' and '0' for a model without a sampling block: run once
                continue
            seen.add(resolved)
            for strength in strengths:
                for seed in seeds:
                    t0 = time.perf_counter()
                    res = gen(model, strength, seed, how)
                    first = first or res
                    gen01 = np.clip((res.samples[0].array.astype(np.float64) - lo) / (hi - lo), 0, 1)
                    rows.append({"case": case.name, "method": _label(model, res.metadata), "strength": strength, "seed": seed,
                                 **score(gen01, real01, body, scale), "seconds": time.perf_counter() - t0})
    spec = DataSpec.from_dict(lm.data, lm.path / "config.json", "data")
    prior01 = np.asarray(spec.normalize(first.prior.array, body)[0], dtype=np.float64)
    rows.append({"case": case.name, "method": "prior alone", "strength": None, "seed": None,
                 **score(prior01, real01, body, scale), "seconds": 0.0})
    for name, blm in baselines.items():
        res = gen(blm, 1.0, 0)
        out01 = np.clip((res.samples[0].array.astype(np.float64) - lo) / (hi - lo), 0, 1)
        rows.append({"case": case.name, "method": name, "strength": None, "seed": None, **score(out01, real01, body, scale),
                     "seconds": 0.0})
    return rows


def _label(model: Any, meta: dict[str, Any] | None = None) -> str:
    """A model's name in the tables: the shipped name, or the run folder's (marked ``residual``), with the
    guidance of its generation (``meta``: the sidecar) when it used any."""
    cfg = getattr(model, "model_cfg", None)
    name = model.path.name + (" (residual)" if getattr(cfg, "residual", False) else "")
    anchor, margin = (meta or {}).get("anchor"), (meta or {}).get("fov_margin_mm") or 0
    if anchor:
        name += f" + anchor {anchor['scale_mm']:g} mm / {anchor['tolerance']:g}"
    return name + (f" + margin {margin:g} mm" if margin else "")


def parse_guidance(text: str) -> list[dict[str, float] | None]:
    """``"default,0,4:0:15"`` -> ``[None, {0, 0, 0}, {4, 0, 15}]``: ``default`` (the model's config.json
    ``sampling``) or ``ANCHOR_SCALE_MM[:TOLERANCE[:FOV_MARGIN_MM]]`` (0: off)."""
    out: list[dict[str, float] | None] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "default":
            out.append(None)
            continue
        parts = [float(p) for p in item.split(":")] + [0.0, 0.0]
        out.append({"anchor_scale": parts[0], "anchor_tolerance": parts[1], "fov_margin": parts[2]})
    return out


# --------------------------------------------------------------------------- report
def _agg(vals: list[float], signed: bool = False) -> str:
    a = np.asarray(vals, float)
    mean = f"{a.mean():+.3f}" if signed else f"{a.mean():.3f}"
    return mean if a.size == 1 else f"{mean} ± {a.std(ddof=1):.3f}"


def table(rows: list[dict[str, Any]], cases: list[Case]) -> str:
    """Per case: one line per (method, strength): metrics mean ± SD over seeds; ``beats prior`` on SSIM and MAE."""
    notes = {c.name: c for c in cases}
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        c = notes[case]
        unit = "HU" if c.modality == "ct" else "norm."
        lines += [f"### {case} ({c.modality}: {c.note}; {c.labels.shape[0]}x{c.labels.shape[1]}x{c.labels.shape[2]} voxels)", "",
                  f"| method | strength | seeds | SSIM | PSNR dB | MAE {unit} | ΔSSIM vs prior | ΔMAE vs prior | "
                  "beats prior (SSIM and MAE) | s / run | SSIM coronal | SSIM sagittal | roughness z |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        mine = [r for r in rows if r["case"] == case]
        prior = next(r for r in mine if r["method"] == "prior alone")
        groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        for r in mine:
            groups.setdefault((r["method"], r["strength"]), []).append(r)
        for (method, strength), rs in groups.items():
            s, p, m = ([r[k] for r in rs] for k in ("ssim", "psnr", "mae"))
            beats = "—" if method == "prior alone" else (
                "yes" if np.mean(s) > prior["ssim"] and np.mean(m) < prior["mae"] else "**no**")
            ds, dm = ("—", "—") if method == "prior alone" else (
                _agg([v - prior["ssim"] for v in s], signed=True), _agg([v - prior["mae"] for v in m], signed=True))
            lines.append(f"| {method} | {'—' if strength is None else f'{strength:g}'} | {len(rs)} | {_agg(s)} | {_agg(p)} | "
                         f"{_agg(m)} | {ds} | {dm} | {beats} | {np.mean([r['seconds'] for r in rs]):.1f} | "
                         + " | ".join("—" if np.isnan(rs[0][k]) else _agg([r[k] for r in rs]) for k in THROUGH_PLANE) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--models", default="ct-demo,mr-demo")
    ap.add_argument("--cases", default="heldout,spacing,interior,sparse,cta-like,mr-heldout")
    ap.add_argument("--strengths", default="1.0,0.7,0.5,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--precision", default="bf16", help="bf16 on a CPU with AMX: 2.8x faster, same SSIM (see MODEL_CARD)")
    ap.add_argument("--guidance", default="default", help="comma-separated: 'default' (the model's) or "
                    "ANCHOR_SCALE_MM[:TOLERANCE[:FOV_MARGIN_MM]] (0: none)")
    ap.add_argument("--baseline", action="append", default=[], help="NAME=RUN: a one-shot run to compare (repeat)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.quick:
        args.models, args.cases, args.strengths, args.seeds, args.steps = "ct-demo-tiny", "heldout,cta-like", "1.0,0.5", "0", 10
    from seg2med.inference import load_model

    models: dict[str, list[Any]] = {}  # modality -> the models compared on its cases
    for name in args.models.split(","):
        lm = load_model(name.strip())
        models.setdefault(str(lm.data.get("modality", "ct")), []).append(lm)
    baselines = {}
    for spec in args.baseline:
        name, _, run = spec.partition("=")
        baselines[name] = load_model(run)
    cases = build_cases(args.data, [c.strip() for c in args.cases.split(",") if c.strip()])
    strengths, seeds = [float(s) for s in args.strengths.split(",")], [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for case in cases:
        if case.modality not in models:
            log.warning("%s: no %s model given, skipped", case.name, case.modality)
            continue
        bl = {k: v for k, v in baselines.items() if str(v.data.get("modality", "ct")) == case.modality}
        rows += run_case(case, models[case.modality], strengths, seeds, args.steps, args.precision, bl,
                         parse_guidance(args.guidance))
        print(f"{case.name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    head = [f"# Generalisation suite ({_dt.date.today()})", "",
            f"`python benchmarks/generalization.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
            f"{platform.machine()} ({platform.processor() or 'cpu'}), seg2med {seg2med.__version__}; models "
            f"{', '.join(_label(m) for ms in models.values() for m in ms)}; DDIM {args.steps} steps (a strength s runs the last "
            f"ceil(s * {args.steps})), {args.precision}; metrics inside the body on the model's intensity window. "
            "Cases: see the script's docstring.", ""]
    report = "\n".join(head) + table(rows, cases)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Through-plane quality of shipped models: do slice-wise volumes streak across slices?

Usage::

    python benchmarks/throughplane.py [--data ../shared/data] [--models ct-demo-tiny[,RUN...]] [--steps 8,20]
        [--seeds 0,1] [--cases heldout,spacing] [--precision bf16] [--variants defaults,tri-planar]
        [--out benchmarks/results/throughplane-cpu.md]

On the generalisation suite's cases (``benchmarks/generalization.py``: subject A's held-out CT z-block
as it is, and resampled to 1.5 mm) each model generates the volume from the labels (DDIM, each
``--steps``, each seed), scored against the real CT inside the body with the metrics of
``seg2med evaluate`` (:func:`seg2med.evaluation.core.intensity_metrics`, on the model's intensity window
mapped to [0, 1]): ``roughness_z`` (mean squared difference of neighbouring slices, synthetic / real;
1 = as smooth across slices as the real CT), ``roughness_xy`` (the same in-plane, mean over x and y),
SSIM of axial, coronal and sagittal planes. The prior alone (normalised as the suite does) is a row
too. Mean +- SD over the seeds. ``--variants``: generate settings beside the model's defaults (``tri-planar``
sampling, ``shared-noise``: every slice from the same start noise, ``correlated-C``: neighbouring slices' start noise
correlated by C per model spacing, ``no-guidance``: prior anchor and field-of-view
margin off, or combinations). Writes one Markdown table and
prints it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization import Case, _label, _window, build_cases  # noqa: E402

import seg2med  # noqa: E402
from seg2med.evaluation.core import intensity_metrics  # noqa: E402

#: generate settings measured side by side (the model's defaults, overridden by these)
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tri-planar": {"tri_planar": True},
    "single-plane": {"tri_planar": False},
    "no-guidance": {"anchor_scale": 0.0, "fov_margin": 0.0},
    "tri-planar-no-guidance": {"tri_planar": True, "anchor_scale": 0.0, "fov_margin": 0.0},
    "shared-noise": {"slice_noise": "shared"},
    "shared-noise-no-guidance": {"slice_noise": "shared", "anchor_scale": 0.0, "fov_margin": 0.0},
}
#: correlated start noise across slices (``--slice-noise correlated --slice-correlation c``), with and without guidance
for _c in ("0.5", "0.8", "0.9", "0.95", "0.99"):
    VARIANTS[f"correlated-{_c}"] = {"slice_noise": "correlated", "slice_correlation": float(_c)}
    VARIANTS[f"correlated-{_c}-no-guidance"] = {**VARIANTS[f"correlated-{_c}"], "anchor_scale": 0.0, "fov_margin": 0.0}

METRICS = ("roughness_z", "roughness_xy", "ssim", "ssim_coronal", "ssim_sagittal")
HEADS = ("roughness z", "roughness xy", "SSIM axial", "SSIM coronal", "SSIM sagittal")


def _neighbour_rms(arr: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Root mean squared difference of neighbouring voxels along ``axis`` with both inside ``mask`` (arr's units)."""
    lo, hi = [slice(None)] * 3, [slice(None)] * 3
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    pairs = mask[tuple(lo)] & mask[tuple(hi)]
    return float(np.sqrt(np.mean(np.diff(arr.astype(np.float64), axis=axis)[pairs] ** 2)))


def run_case(case: Case, lms: list[Any], steps: list[int], seeds: list[int], precision: str,
             variants: tuple[str, ...] = ("defaults",)) -> tuple[list[dict[str, Any]], str]:
    """Rows (method, steps, seed, metrics, seconds) of one case and a line on the real volume's own roughness."""
    from seg2med.data.spec import DataSpec

    contour = {"body": case.body} if case.body is not None else {"image": case.image, "modality": case.modality}
    lv = seg2med.build_anatomy(case.labels, scheme=case.scheme, tissue_masks=case.tissue_masks, **contour)
    body = lv.volume.array != 0
    lo, hi = _window(lms[0])
    real01 = np.clip((case.image.array.astype(np.float64) - lo) / (hi - lo), 0, 1)
    rows: list[dict[str, Any]] = []
    first = None
    for lm in lms:
        for variant in variants:
            label = _label(lm) if variant == "defaults" else f"{_label(lm)} ({variant})"
            for n in steps:
                for seed in seeds:
                    t0 = time.perf_counter()
                    res = seg2med.generate(lv, model=lm, steps=n, seed=seed, precision=precision, device="cpu",
                                           **VARIANTS[variant])
                    seconds = time.perf_counter() - t0
                    first = first or res
                    gen01 = np.clip((res.samples[0].array.astype(np.float64) - lo) / (hi - lo), 0, 1)
                    t1 = time.perf_counter()
                    m = intensity_metrics(gen01, real01, body, METRICS)
                    rows.append({"case": case.name, "method": label, "steps": n, "seed": seed, **m,
                                 "seconds": seconds, "metric_seconds": time.perf_counter() - t1})
    spec = DataSpec.from_dict(lms[0].data, lms[0].path / "config.json", "data")
    prior01 = np.asarray(spec.normalize(first.prior.array, body)[0], dtype=np.float64)
    rows.append({"case": case.name, "method": "prior alone", "steps": None, "seed": None,
                 **intensity_metrics(prior01, real01, body, METRICS), "seconds": 0.0, "metric_seconds": 0.0})
    hu = case.image.array
    sx, sy, sz = (float(s) for s in case.image.spacing[:3])
    real = (f"real CT inside the body ({int(body.sum())} voxels): rms difference of neighbouring voxels "
            f"{_neighbour_rms(hu, body, 2):.0f} HU across slices ({sz:g} mm), {_neighbour_rms(hu, body, 0):.0f} / "
            f"{_neighbour_rms(hu, body, 1):.0f} HU in-plane along x / y ({sx:g} / {sy:g} mm)")
    return rows, real


def _agg(vals: list[float]) -> str:
    a = np.asarray(vals, np.float64)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if a.size > 1 else f"{a.mean():.3f}"


def table(rows: list[dict[str, Any]], cases: list[Case], real: dict[str, str]) -> str:
    out: list[str] = []
    for case in cases:
        mine = [r for r in rows if r["case"] == case.name]
        if not mine:
            continue
        shape = "x".join(map(str, case.image.shape))
        out += ["", f"### {case.name} ({case.modality}: {case.note}; {shape} voxels)", "", real[case.name], "",
                "| method | DDIM steps | seeds | " + " | ".join(HEADS) + " | s / run | metrics s |",
                "|---|---|---|" + "---|" * len(HEADS) + "---|---|"]
        groups = list(dict.fromkeys((r["method"], r["steps"]) for r in mine))
        for method, steps in groups:
            g = [r for r in mine if (r["method"], r["steps"]) == (method, steps)]
            cells = [_agg([r[m] for r in g]) for m in METRICS]
            out.append(f"| {method} | {steps if steps is not None else '—'} | {len(g) if g[0]['seed'] is not None else '—'} | "
                       + " | ".join(cells) + f" | {np.mean([r['seconds'] for r in g]):.1f} | "
                       f"{np.mean([r['metric_seconds'] for r in g]):.2f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--models", default="ct-demo-tiny")
    ap.add_argument("--steps", default="8,20", help="DDIM step counts, comma-separated")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cases", default="heldout,spacing", help="CT cases of benchmarks/generalization.py")
    ap.add_argument("--precision", default="bf16", help="as the generalisation suite (bf16: same SSIM, 2.8x faster on AMX)")
    ap.add_argument("--variants", default="defaults", help=f"comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    from seg2med.inference import load_model

    lms = [load_model(name.strip()) for name in args.models.split(",") if name.strip()]
    cases = [c for c in build_cases(args.data, [c.strip() for c in args.cases.split(",") if c.strip()]) if c.modality == "ct"]
    steps, seeds = [int(s) for s in args.steps.split(",")], [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    real: dict[str, str] = {}
    t0 = time.perf_counter()
    for case in cases:
        case_rows, real[case.name] = run_case(case, lms, steps, seeds, args.precision, variants)
        rows += case_rows
        print(f"{case.name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    head = [f"# Through-plane quality ({_dt.date.today()})", "",
            f"`python benchmarks/throughplane.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
            f"{platform.machine()} ({platform.processor() or 'cpu'}), seg2med {seg2med.__version__}; models "
            f"{', '.join(_label(m) for m in lms)}; {args.precision}; {time.perf_counter() - t0:.0f} s in all. Metrics of "
            "`seg2med evaluate` inside the body, on the model's intensity window mapped to [0, 1]: roughness = mean "
            "squared difference of neighbouring voxels, synthetic / real (1 = as smooth as the real CT; z = across "
            "axial slices, xy = mean of the in-plane ratios along x and y); SSIM of axial / coronal / sagittal planes. "
            "Mean ± SD over the seeds.", ""]
    report = "\n".join(head) + table(rows, cases, real)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``seg2med benchmark``: every method trained for the same time budget, generated on the test split, evaluated.

Layout of the output folder::

    runs/<method>/                 training runs (seg2med train --method <method>)
    runs/segmenter/                the auxiliary segmenter (when trained here)
    test/reference/<subject>.nii.gz  real images of the test subjects on their original grid
    test/labels/, test/prior/      their label maps and physics priors
    test/<method>/<subject>.nii.gz   each method's synthetic volume (+ .json sidecar)
    report/                        seg2med evaluate's report (per_subject.csv, summary.json, report.html)
    benchmark.json, benchmark.md   training budget, steps and time per method, and the Table-II-style comparison

Every method sees the same train split, the same batch size and the same
wall-clock budget (``budget_minutes`` each, capped at ``max_steps``); the
diffusion model is sampled with DDIM ``sample_steps``. Statistics are over
the test subjects (Mann-Whitney U against ``ddpm``): with the shared example
data that is a single subject, so p-values carry no weight there — the
report says how many subjects there are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg2med.checks import check_int, check_non_negative, check_positive, check_seed
from seg2med.errors import ConfigError, InputError
from seg2med.evaluation.core import EvalOptions, evaluate_cases
from seg2med.evaluation.pairs import collect_cases
from seg2med.evaluation.report import LABELS_OF_METRICS, summarize, write_report
from seg2med.io import save_volume, write_json
from seg2med.io.files import write_text
from seg2med.io.outputs import claim_folder
from seg2med.models.config import PREDICTION_TYPES, PRESETS
from seg2med.models.registry import GENERATORS, REGISTRY

log = logging.getLogger(__name__)

ALL_METHODS = GENERATORS  # every image generator of the method registry


@dataclass
class BenchmarkConfig:
    """What is trained and how (all methods alike)."""

    methods: Sequence[str] = ALL_METHODS
    budget_minutes: float = 10.0  # wall-clock training time per method
    max_steps: int = 100_000
    preset: str = "tiny"
    batch: int = 8
    lr: float = 2e-4
    seed: int = 0
    sample_steps: int = 20  # DDIM steps of the diffusion model
    prediction: str = "sample"  # diffusion target (x0 trains fastest on small budgets; see MODEL_CARD.md)
    split: str = "test"
    segmenter_minutes: float = 0.0  # > 0: also train the auxiliary segmenter for Dice / Fréchet-Seg
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        unknown = sorted(set(self.methods) - set(ALL_METHODS))
        if unknown or not self.methods:
            raise ConfigError(f"--methods: unknown {unknown} (known: {', '.join(ALL_METHODS)})" if unknown
                              else "--methods: give at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("--methods: a method is listed twice")
        self.budget_minutes = check_positive(self.budget_minutes, "--budget")
        self.segmenter_minutes = check_non_negative(self.segmenter_minutes, "--segmenter-budget")
        self.max_steps, self.sample_steps = check_int(self.max_steps, "--max-steps"), check_int(self.sample_steps, "--sample-steps")
        self.batch, self.seed = check_int(self.batch, "--batch"), check_seed(self.seed)
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ConfigError(f"--preset: unknown model preset {self.preset!r} (known: {', '.join(PRESETS)})")
        self.lr = check_positive(self.lr, "BenchmarkConfig: lr")
        if self.prediction not in PREDICTION_TYPES:
            raise ConfigError(f"BenchmarkConfig: unknown prediction {self.prediction!r} (known: {', '.join(PREDICTION_TYPES)})")


def _train_all(data: Path, out: Path, cfg: BenchmarkConfig, progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    from seg2med.training import train_method

    results: dict[str, dict[str, Any]] = {}
    training = {"steps": cfg.max_steps, "batch": cfg.batch, "lr": cfg.lr, "seed": cfg.seed, "ckpt_every": 0,
                "val_every": 0, "max_minutes": cfg.budget_minutes, "device": cfg.device}
    for method in cfg.methods:
        progress(f"train {method}")
        t0 = time.perf_counter()
        res = train_method(method, data, out / method, preset=cfg.preset, training=training, overwrite=True, progress=False,
                           scheduler={"prediction_type": cfg.prediction} if REGISTRY[method].takes_scheduler else None)
        results[method] = {"steps": int(res.get("step", 0)), "seconds": round(time.perf_counter() - t0, 1),
                           "final_loss": res.get("final_loss")}
        log.info("%s: %d steps in %.0f s", method, results[method]["steps"], results[method]["seconds"])
    if cfg.segmenter_minutes > 0:
        from seg2med.training.segmenter import default_train_config, train_segmenter

        progress("train segmenter")
        t0 = time.perf_counter()
        seg_cfg = default_train_config(steps=cfg.max_steps, seed=cfg.seed, ckpt_every=0, val_every=0,
                                       max_minutes=cfg.segmenter_minutes, device=cfg.device)
        res = train_segmenter(data, out / "segmenter", train_cfg=seg_cfg, overwrite=True, progress=False)
        results["segmenter"] = {"steps": int(res.get("step", 0)), "seconds": round(time.perf_counter() - t0, 1)}
    return results


def _generate_all(data: Path, runs: Path, test: Path, cfg: BenchmarkConfig, progress: Callable[[str], None]) -> list[str]:
    from seg2med.inference import load_model
    from seg2med.inference.generate import pick_device
    from seg2med.inference.split import plan_split

    device = pick_device(cfg.device)
    models = {m: load_model(runs / m, device=device) for m in cfg.methods}
    for sub in ("reference", "labels", "prior", *cfg.methods):
        (test / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for case in plan_split(data, cfg.split).generate(models, steps=cfg.sample_steps, seed=cfg.seed, device=device,
                                                     progress=progress):
        rs = case.subject
        ids.append(rs.subject_id)
        name = f"{rs.subject_id}.nii.gz"
        save_volume(rs.image, test / "reference" / name, overwrite=True, dtype=np.float32)
        save_volume(rs.labels, test / "labels" / name, overwrite=True)
        for method, res in case.results.items():
            save_volume(res.samples[0], test / method / name, overwrite=True, dtype=np.float32)
            write_json(test / method / f"{rs.subject_id}.json", res.metadata, overwrite=True)
        if not (test / "prior" / name).exists():  # the same prior for every method (cfg.methods is never empty)
            save_volume(next(iter(case.results.values())).prior, test / "prior" / name, dtype=np.float32)
    return ids


def table_markdown(summary: dict[str, Any], training: dict[str, dict[str, Any]]) -> str:
    """Paper-Table-II-style comparison: mean ± sd per method and metric, p vs the reference method, training cost."""
    ref = summary["reference_method"]
    methods = summary["methods"]
    metrics = [m for m in ("ssim", "ms_ssim", "psnr", "mae", "mae_hu", "histcc", "fsim", "dice_mean", "fid", "frechet_seg")
               if any(m in e for e in methods.values())]
    head = ["method", "train steps", "train s", *[LABELS_OF_METRICS.get(m, m) for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for meth, entries in methods.items():
        if meth not in training:
            continue
        cells = [meth, str(training[meth]["steps"]), f"{training[meth]['seconds']:.0f}"]
        for m in metrics:
            e = entries.get(m)
            if e is None or not np.isfinite(e.get("value", e.get("mean", np.nan))):
                cells.append("–")
            elif "value" in e:
                cells.append(f"{e['value']:.3f}")
            else:
                p = e.get(f"p_vs_{ref}")
                txt = f"{e['mean']:.4g}" + (f" ± {e['sd']:.2g}" if e["n"] > 1 else "")
                cells.append(txt + (f" (p={p:.2g})" if p is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    real = methods.get("real image", {}).get("dice_all_classes")
    if real is not None:
        lines.append(f"\nDice_orig (the segmenter on the real test images, the upper bound of Dice): {real['mean']:.3f}"
                     + (f" ± {real['sd']:.2g}" if real["n"] > 1 else ""))
    return "\n".join(lines) + "\n"


def benchmark(
    data: str | Path,
    out: str | Path,
    cfg: BenchmarkConfig | None = None,
    *,
    segmenter: str | Path | None = None,
    fid_weights: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every method for the same budget, generate the test split, evaluate; returns the summary (see module docstring)."""
    cfg = cfg or BenchmarkConfig()
    data, out = Path(data), Path(out)
    say = progress or (lambda msg: None)
    from seg2med.data.dataset import SliceDataset
    from seg2med.data.prepare import MANIFEST
    from seg2med.data.spec import DataSpec
    from seg2med.inference.split import plan_split

    manifest = SliceDataset(data, split=None).manifest  # the manifest's blocks and every shard checked first
    if not DataSpec.from_dict(manifest["config"], data / MANIFEST, "config").scheme:
        raise InputError(f"{data / 'manifest.json'}: config.scheme is empty: the test subjects are generated from "
                         f"their labels, whose scheme the dataset must name (seg2med prepare records it)")
    plan_split(data, cfg.split)  # a clear error (bad dataset, empty test split) before any training or writing
    if segmenter is not None and cfg.segmenter_minutes > 0:
        raise ConfigError("give either --segmenter RUN or --segmenter-budget, not both")
    from seg2med.inference.segment import load_segmenter

    # the evaluation's inputs are loaded before any training or writing (a bad one failed after all the work)
    seg = load_segmenter(segmenter) if segmenter is not None else None
    if fid_weights is not None:
        from seg2med.metrics.frechet import load_inception

        load_inception(fid_weights)  # the file is checked (and the network cached) for the FID of the evaluation
    claim_folder(out, "benchmark", ("runs", "test", "report", "benchmark.json", "benchmark.md"), overwrite,
                 inputs=(data, segmenter, fid_weights))
    t0 = time.perf_counter()
    training = _train_all(data, out / "runs", cfg, say)
    ids = _generate_all(data, out / "runs", out / "test", cfg, say)
    if cfg.segmenter_minutes > 0:
        seg = load_segmenter(out / "runs" / "segmenter")
    test = out / "test"
    cases = collect_cases({m: test / m for m in cfg.methods}, test / "reference", labels=test / "labels", prior=test / "prior")
    say("evaluate")
    ev = evaluate_cases(cases, EvalOptions(fid_weights=fid_weights, segmenter=seg))
    ev.notes.append(f"{len(ids)} test subject(s): {', '.join(ids)}. Each method trained {cfg.budget_minutes:g} min "
                    f"(at most {cfg.max_steps} steps), batch {cfg.batch}, preset {cfg.preset}; DDIM {cfg.sample_steps} steps.")
    if len(ids) < 5:
        ev.notes.append(f"Only {len(ids)} test subject(s): the p-values cannot show a difference; read the means only.")
    if fid_weights is None:
        ev.notes.append("FID not computed: no Inception weights file (--fid-weights); nothing is downloaded.")
    summary = summarize(ev)
    table = table_markdown(summary, training)
    extra = "<h2>Training budget</h2><pre>" + table + "</pre>"
    write_report(ev, out / "report", overwrite=True, title="seg2med benchmark", extra_html=extra)
    result = {"kind": "seg2med-benchmark", "config": asdict(cfg), "data": str(data), "training": training, "subjects": ids, "summary": summary,
              "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "benchmark.json", result, overwrite=True)
    write_text(out / "benchmark.md", f"# seg2med benchmark on {data.name}\n\n{table}\n" + "\n".join(f"- {n}" for n in ev.notes) + "\n",
               overwrite=True)
    return result

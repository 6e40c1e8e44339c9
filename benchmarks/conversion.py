"""CT <-> MR conversion of the shared subjects, judged without a same-patient pair.

Usage::

    python benchmarks/conversion.py [--data ../shared/data] [--ct-model ct-demo] [--mr-model mr-demo]
        [--seeds 0,1] [--steps 8] [--out docs/conversion.md]

Subject A's CT (``example_ct_sm`` with its ``total`` labels) is converted to MR by ``--mr-model`` and subject C's
MR (``example_mr_sm`` with its ``total_mr`` labels) to CT by ``--ct-model`` (``seg2med convert``: labels given,
body contour from the image, crosswalk to the model's scheme, prior, generate). A and C are different people, so
there is no real image to compare with; what is reported is what can be checked without one:

* the crosswalk: what each class present became;
* CT output: every organ's median HU against its plausible range (the quality check of ``generate``);
* MR output: the order of the organ medians against the order the sequence's physics predicts (inverted pairs);
* Spearman rank correlation of the organ medians of the output with those of the prior (tissue ordering);

* the re-segmentation loop (``seg2med evaluate --unpaired``): the CT outputs segmented by ``--segmenter``
  (default the shipped ``ct-seg-demo``), Dice / HD95 per class against C's labels crosswalked to the segmenter's
  scheme, beside the same segmenter on real CT it never saw (subject A's held-out block z 58-71 with its labels),
  and the Fréchet-Seg distance of the outputs to that real block (no MR segmenter ships: the MR outputs get none);

mean +- SD over ``--seeds``. Writes one Markdown report and prints it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

import seg2med

CASES = {
    "A CT -> MR": ("totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg.nii.gz", "ct", "mr"),
    "C MR -> CT": ("totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz", "mr", "ct"),
}


#: subject A's held-out block (scripts/build_demo_datasets.py): real CT that neither ct-seg-demo nor ct-demo saw
HELD_OUT = (58, 72)


def run_case(data: Path, name: str, model: str, seeds: list[int], steps: int, work: Path) -> dict[str, Any]:
    image, labels, modality, to = CASES[name]
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        res = seg2med.convert(data / image, modality, to, model=model, labels=data / labels, seed=seed, steps=steps,
                              precision="auto")
        seg2med.save_generated(res, work / name.split()[0] / f"seed{seed}" / "out.nii.gz", overwrite=True)
        qc = res.metadata["qc"]
        classes = [c for c in qc["classes"] if c["name"] != "body"]
        out_m = np.array([c["median"] for c in classes])
        pri_m = np.array([c.get("prior_median", np.nan) for c in classes])
        ok = np.isfinite(pri_m)
        rho = float(stats.spearmanr(out_m[ok], pri_m[ok]).statistic) if ok.sum() > 2 else float("nan")
        runs.append({"seed": seed, "seconds": time.perf_counter() - t0, "qc": qc, "classes": classes, "rho": rho,
                     "crosswalk": res.metadata.get("crosswalk"), "sequence": res.metadata["sequence"]["name"]})
    return {"name": name, "model": model, "to": to, "runs": runs, "outputs": work / name.split()[0],
            "labels": data / labels}


def resegment(data: Path, result: dict[str, Any], segmenter: str, work: Path) -> dict[str, Any]:
    """``evaluate --unpaired`` of a case's CT outputs (one method per seed) with the real held-out block of A."""
    from seg2med.io import Volume, load_volume, save_volume

    shift = np.eye(4)
    shift[2, 3] = HELD_OUT[0]
    ts = data / "totalsegmentator"
    for src, kind, dst in (("example_ct.nii.gz", "image", "real"), ("example_seg_fast_force_split.nii.gz", "labels",
                                                                    "real_labels")):
        v = load_volume(ts / src, kind=kind)
        save_volume(Volume(np.ascontiguousarray(v.array[:, :, HELD_OUT[0]:HELD_OUT[1]]), v.affine @ shift),
                    work / dst / "A_heldout.nii.gz")
    preds = {f"seed{x['seed']}": result["outputs"] / f"seed{x['seed']}" / "out.nii.gz" for x in result["runs"]}
    written = seg2med.evaluate_unpaired(preds, result["labels"], work / "report", ref=work / "real",
                                        ref_labels=work / "real_labels", segmenter=segmenter, overwrite=True)
    return json.loads(Path(written["summary"]).read_text())


def render_reseg(summary: dict[str, Any], segmenter: str, name: str) -> list[str]:
    real = summary["real_image"]
    methods = summary["methods"]
    dice = [e["resegmentation"]["dice"]["mean"] for e in methods.values()]
    hd = [e["resegmentation"]["hd95"]["mean"] for e in methods.values()]
    fd = [e["frechet_seg"]["value"] for e in methods.values()]
    counts = {t: [e["resegmentation"][f"classes_dice_above_{t:g}"] for e in methods.values()] for t in (0.9, 0.8)}
    n = next(iter(methods.values()))["resegmentation"]["classes"]
    lines = [f"## Re-segmentation of {name} (`seg2med evaluate --unpaired --segmenter {segmenter}`)", "",
             f"The CT outputs segmented by `{segmenter}` and scored against C's labels in its scheme; beside it the same "
             f"segmenter on real CT it never saw (A's held-out block z {HELD_OUT[0]}-{HELD_OUT[1] - 1}). Different "
             "patients and fields of view: the comparison says how far the synthetic CT is from CT this segmenter "
             "reads, not how accurate the conversion is.", "",
             "| image | classes | Dice (mean over classes) | HD95 mm | classes Dice > 0.9 | > 0.8 | Fréchet-Seg to the real block |",
             "|---|---|---|---|---|---|---|",
             f"| synthetic CT of C (mean ± SD over seeds) | {n} | {_ms(dice, '{:.3f}')} | {_ms(hd, '{:.1f}')} | "
             f"{_ms(counts[0.9], '{:.1f}')} | {_ms(counts[0.8], '{:.1f}')} | {_ms(fd, '{:.3f}')} |",
             f"| real CT (A held-out) | {real['classes']} | {real['dice']['mean']:.3f} | {real['hd95']['mean']:.1f} | "
             f"{real['classes_dice_above_0.9']} | {real['classes_dice_above_0.8']} | — |", "",
             "| class | synthetic CT of C, seed 0 | real CT (A held-out) |", "|---|---|---|"]
    first = next(iter(methods.values()))["resegmentation"]["per_class"]
    for c in sorted(set(first) | set(real["per_class"]), key=int):
        a, b = first.get(c), real["per_class"].get(c)
        name_c = (a or b)["name"]
        lines.append(f"| {name_c} | {a['dice']:.3f} |" if a else f"| {name_c} | — |")
        lines[-1] += f" {b['dice']:.3f} |" if b else " — |"
    return lines + [""]


def _ms(values: list[float], fmt: str = "{:.2f}") -> str:
    a = np.asarray(values, dtype=float)
    return f"{fmt.format(a.mean())} ± {fmt.format(a.std())}"


def render(results: list[dict[str, Any]], cmd: str, reseg: list[str] = ()) -> str:
    lines = [f"# CT ↔ MR conversion without a same-patient pair ({_dt.date.today().isoformat()})", "",
             f"`{cmd}` on {platform.machine()} ({platform.system()}). Generated by `benchmarks/conversion.py`; "
             "subjects A (CT) and C (MR) of the shared TotalSegmentator data are different people, so no output "
             "here is compared with a real image of the same patient.", ""]
    for r in results:
        runs = r["runs"]
        first = runs[0]
        cw = first["crosswalk"]
        lines += [f"## {r['name']} (`{r['model']}`, sequence {first['sequence']}, {len(runs)} seeds)", ""]
        if cw:
            counts = ", ".join(f"{v} {k}" for k, v in sorted(cw["counts"].items()))
            changed = [f"{c['class']} → {c['kind']}{' ' + c['target'] if c['target'] else ''}" for c in cw["classes"]
                       if c["kind"] not in ("same", "seg2med class")]
            lines += [f"Crosswalk {cw['source']} → {cw['target']}: {counts} (classes present). Not kept as they are: "
                      + ", ".join(changed) + ".", ""]
        qcs = [x["qc"]["summary"] for x in runs]
        lines += [f"- quality check ({first['qc']['check']}): {_ms([q['checked'] for q in qcs], '{:.0f}')} organs checked, "
                  f"{_ms([q['failed'] for q in qcs], '{:.1f}')} failed (seed 0: "
                  f"{', '.join(qcs[0]['failed_names']) or 'none'})",
                  f"- Spearman ρ of organ medians, output vs prior: {_ms([x['rho'] for x in runs], '{:.3f}')}"]
        if r["to"] == "mr":
            pairs = first["qc"].get("inverted_pairs", [])
            lines.append(f"- inverted pairs (seed 0): {len(pairs)}"
                         + (": " + "; ".join(f"{p['expected_brighter']} > {p['expected_darker']}" for p in pairs[:6])
                            if pairs else ""))
        lines += ["", "| organ | voxels | prior median | output median (mean ± SD over seeds) | "
                  + ("plausible HU range | ok |" if r["to"] == "ct" else "expected rank | rank (seed 0) | ok |"),
                  "|---|---|---|---|---|---|" if r["to"] == "ct" else "|---|---|---|---|---|---|---|"]
        for k, c in enumerate(first["classes"]):
            meds = [x["classes"][k]["median"] for x in runs]
            row = f"| {c['name']} | {c['voxels']} | {c.get('prior_median', float('nan')):.4g} | {_ms(meds, '{:.4g}')} |"
            if r["to"] == "ct":
                rng = c["range"]
                row += f" {rng[0]:.0f} … {rng[1]:.0f} | {'yes' if c['ok'] else 'no'} |" if rng else " — | — |"
            else:
                row += f" {c['expected_rank']} | {c['rank']} | {'yes' if c['ok'] else 'no'} |"
            lines.append(row)
        lines.append("")
    lines += [*reseg, "No MR segmenter ships, so the CT -> MR outputs have no re-segmentation Dice.", ""]
    lines += ["What this does not show: accuracy. With registered same-patient CT/MR pairs (SynthRAD-style), "
              "`seg2med convert` one from the other and `seg2med evaluate --pred Y --ref REAL` measure it.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--ct-model", default="ct-demo")
    ap.add_argument("--mr-model", default="mr-demo")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--segmenter", default="ct-seg-demo", help="CT segmenter of the re-segmentation ('none': skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "conversion.md")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="seg2med-conversion-"))
    results = [run_case(args.data, "A CT -> MR", args.mr_model, seeds, args.steps, work),
               run_case(args.data, "C MR -> CT", args.ct_model, seeds, args.steps, work)]
    reseg = ([] if args.segmenter == "none" else
             render_reseg(resegment(args.data, results[1], args.segmenter, work), args.segmenter, "C MR -> CT"))
    cmd = "python benchmarks/conversion.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    text = render(results, cmd.strip(), reseg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

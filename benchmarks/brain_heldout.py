"""Held-out quality of a four-contrast brain model (the brain-demo model card's numbers).

Usage::

    python benchmarks/brain_heldout.py --model runs/brain-demo-tiny [--segmenter RUN] [--data ../shared/data]
        [--seeds 0,1] [--steps 8] [--out benchmarks/results/brain-heldout-cpu.md]

The held-out block is TCGA-DU-7294 z 100-115 (through the upper part of its tumour; ``scripts/build_demo_datasets.py
--only brain`` keeps it out of training): its BraTS-Toolkit tumour fusion over the brain of its skull-stripped images is
the label map, its four real contrasts the reference. For each contrast: SSIM (axial) and PSNR inside the brain after
each image's own 0.5-99.5th percentile window (:mod:`seg2med.evaluation.brain`), for the model (mean +- SD over the
seeds) and for the prior alone (the same per-image window: the physics alone, a baseline the model must beat). Also the
median of each compartment, synthetic vs real, in those windows. With ``--segmenter`` (a four-contrast
``train-segmenter`` run or shipped segmenter): its Dice per BraTS region (whole tumour, tumour core, enhancing) on the
synthetic contrasts against the mask they were made from, beside its Dice on the real images and on the priors alone
(:func:`seg2med.evaluation.brain.evaluate_brain`) — Med-DDPM's closed-loop check.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import time
from pathlib import Path

import numpy as np

import seg2med
from seg2med.anatomy.brain import BRAIN_SCHEME, brain_label_map, brain_mask_from_images
from seg2med.api import BRAIN_CONTRASTS
from seg2med.evaluation.brain import WINDOW_PERCENTILES, contrast_similarity, evaluate_brain, unit_in_brain
from seg2med.io import load_volume

HELD_OUT = (100, 116)
FILES = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"}
COMPARTMENTS = (1, 2, 3, 4)  # brats_medddpm: necrotic core, oedema, enhancing, non-tumour brain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--segmenter", default=None, help="four-contrast segmenter run or shipped name (Dice per region)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/brain-heldout-cpu.md"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    tc = args.data / "brainlesion-tutorials" / "TCGA-DU-7294"
    raw = {n: load_volume(tc / "raw_bet" / f"TCGA-DU-7294_{f}_bet.nii.gz") for n, f in FILES.items()}
    labels = brain_label_map(load_volume(tc / "fusion" / "mav.nii.gz", kind="labels"), "brats2021",
                             brain_mask_from_images(list(raw.values())))
    box = np.s_[:, :, slice(*HELD_OUT)]
    labels, real = labels.crop(box), {n: v.crop(box) for n, v in raw.items()}
    lab = np.asarray(labels.array)
    brain = lab != 0
    lv = seg2med.build_anatomy(labels, scheme=BRAIN_SCHEME)
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in BRAIN_CONTRASTS}
    medians: dict[str, dict[int, list[float]]] = {n: {} for n in BRAIN_CONTRASTS}
    seconds = []
    from seg2med.inference import load_model
    from seg2med.inference.segment import load_segmenter
    from seg2med.labels import get_scheme

    model = load_model(args.model)
    seg = load_segmenter(args.segmenter) if args.segmenter else None
    order = list(seg.spec.contrast_names) if seg is not None else None
    scheme = get_scheme(BRAIN_SCHEME)
    dice: dict[str, dict[str, list[float]]] = {}  # region -> {"synthetic": [per seed], "real": [..], "prior": [..]}

    def add_dice(ev, kinds):
        for region, vals in ev.regions.items():
            for kind, key in kinds:
                if vals.get(key) is not None and np.isfinite(vals[key]):  # NaN: the region is in neither map
                    dice.setdefault(region, {}).setdefault(kind, []).append(float(vals[key]))
    for seed in seeds:
        t0 = time.perf_counter()
        res = seg2med.generate(lv, model=model, steps=args.steps, seed=seed, precision="auto")
        seconds.append(time.perf_counter() - t0)
        for n in BRAIN_CONTRASTS:
            sim = contrast_similarity(res.channels[n][0], real[n], brain)
            for k in ("ssim", "psnr"):
                rows[n].setdefault(k, []).append(sim[k])
            syn = unit_in_brain(res.channels[n][0], brain)
            for cid in COMPARTMENTS:
                if (lab == cid).any():
                    medians[n].setdefault(cid, []).append(float(np.median(syn[lab == cid])))
        if seg is not None:
            first = {n: v[0] for n, v in res.channels.items()}
            ev = evaluate_brain(first, labels, scheme, seg, real=real if seed == seeds[0] else None, contrasts=order)
            add_dice(ev, [("synthetic", "synthetic"), ("real", "real")])
    priors = res.channel_priors  # the priors the model was conditioned on (its own sequences; the same every seed)
    prior_rows = {n: contrast_similarity(priors[n], real[n], brain) for n in BRAIN_CONTRASTS}
    if seg is not None:
        add_dice(evaluate_brain(priors, labels, scheme, seg, contrasts=order), [("prior", "synthetic")])
    lines = [f"# Brain model on held-out slices ({_dt.date.today().isoformat()})", "",
             f"`python benchmarks/brain_heldout.py --model {args.model}"
             + (f" --segmenter {args.segmenter}" if args.segmenter else "")
             + f" --seeds {args.seeds} --steps {args.steps}` on "
             f"{platform.machine()} (cpu), seg2med {seg2med.__version__}; TCGA-DU-7294 z {HELD_OUT[0]}-{HELD_OUT[1] - 1} "
             f"({lab.shape[0]} x {lab.shape[1]} x {lab.shape[2]} voxels, 1 mm), never trained on; metrics inside the "
             f"brain, each image in its own {WINDOW_PERCENTILES[0]}-{WINDOW_PERCENTILES[1]}th percentile window; "
             f"mean +- SD over {len(seeds)} seeds; {np.mean(seconds):.1f} s per volume (four contrasts).", "",
             "| contrast | SSIM model | PSNR dB model | SSIM prior alone | PSNR dB prior alone |",
             "|---|---|---|---|---|"]
    for n in BRAIN_CONTRASTS:
        s, q = np.array(rows[n]["ssim"]), np.array(rows[n]["psnr"])
        lines.append(f"| {n} | {s.mean():.3f} ± {s.std(ddof=1) if len(s) > 1 else 0:.3f} | "
                     f"{q.mean():.2f} ± {q.std(ddof=1) if len(q) > 1 else 0:.2f} | {prior_rows[n]['ssim']:.3f} | "
                     f"{prior_rows[n]['psnr']:.2f} |")
    lines += ["", "Compartment medians, each image in its own window (synthetic, mean over seeds / real):", "",
              "| contrast | necrotic core | oedema | enhancing | brain |", "|---|---|---|---|---|"]
    for n in BRAIN_CONTRASTS:
        r = unit_in_brain(real[n], brain)
        cells = []
        for cid in COMPARTMENTS:
            if cid in medians[n]:
                real_med = float(np.median(r[lab == cid]))
                cells.append(f"{np.mean(medians[n][cid]):.3f} / {real_med:.3f}")
            else:
                cells.append("-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if seg is not None:
        lines += ["", f"Dice per region of the segmenter `{args.segmenter}` against the mask (synthetic: mean +- SD over "
                  "the seeds; real: the real four contrasts of these slices; prior: the four priors alone). A region "
                  "the mask lacks is '-':", "", "| region | synthetic | real | prior alone |", "|---|---|---|---|"]
        for region in scheme.regions:
            d = dice.get(region, {})
            cells = []
            for kind in ("synthetic", "real", "prior"):
                v = np.array(d.get(kind, []))
                cells.append("-" if v.size == 0 else f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if v.size > 1 else ""))
            lines.append(f"| {region} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

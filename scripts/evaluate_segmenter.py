"""Dice of a CT segmenter on subject A's held-out block: on the real CT (Dice_orig) and on synthetic CTs of the same
labels (Dice_gen, the seg2med paper's re-segmentation loop, Table VII); prints Markdown.

Usage::

    python scripts/evaluate_segmenter.py [--segmenter ct-seg-demo] [--model ct-demo] [--data ../shared/data]
        [--seeds 0,1] [--steps 8] [--out DIR]

The block is z 58-71 of ``example_ct`` / ``example_seg_fast_force_split`` (the test block of
``scripts/build_demo_datasets.py``: neither the segmenter nor the models trained on it). The synthetic CT is
``seg2med generate`` from the block's labels with the body contour of the real CT. Dice per class through
``seg2med evaluate --segmenter`` (classes present in the labels, background excluded); the counts of classes with
Dice above 0.9 and 0.8 as in the paper.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

import seg2med
from seg2med.io import Volume, load_volume, save_volume

BLOCK = (58, 72)


def _block(v: Volume) -> Volume:
    shift = np.eye(4)
    shift[2, 3] = BLOCK[0]
    return Volume(np.ascontiguousarray(v.array[:, :, BLOCK[0]:BLOCK[1]]), v.affine @ shift)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segmenter", default="ct-seg-demo")
    ap.add_argument("--model", default="ct-demo")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    ts = args.data / "totalsegmentator"
    work = Path(args.out or tempfile.mkdtemp(prefix="seg2med-segeval-"))
    work.mkdir(parents=True, exist_ok=True)
    ct = save_volume(_block(load_volume(ts / "example_ct.nii.gz")), work / "real" / "A.nii.gz")
    lab = save_volume(_block(load_volume(ts / "example_seg_fast_force_split.nii.gz", kind="labels")),
                      work / "labels" / "A.nii.gz")
    lv = seg2med.build_anatomy(lab, image=ct, modality="ct")
    preds = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        res = seg2med.generate(lv, model=args.model, steps=args.steps, seed=seed)
        path = work / f"synthetic_seed{seed}" / "A.nii.gz"
        seg2med.save_generated(res, path, overwrite=True)
        preds[f"seed{seed}"] = path
    seg2med.evaluate(preds, work / "real", work / "report", labels=work / "labels", segmenter=args.segmenter,
                     overwrite=True)
    rows = list(csv.DictReader(open(work / "report" / "dice.csv")))
    from seg2med.labels import get_scheme

    names = get_scheme("total").id_to_name
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[int(r["class"])] = float(r["dice"])
    real = by.pop("real image")
    gen = {c: [by[m][c] for m in by if c in by[m]] for c in real}
    print(f"Segmenter `{args.segmenter}` on subject A's held-out block (z {BLOCK[0]}-{BLOCK[1] - 1}); synthetic: "
          f"`{args.model}`, DDIM {args.steps}, seeds {args.seeds} (mean over seeds).\n")
    print("| | classes | mean Dice | Dice > 0.9 | Dice > 0.8 |\n|---|---|---|---|---|")
    for what, d in (("real CT (Dice_orig)", real), ("synthetic CT (Dice_gen)", {c: float(np.mean(v)) for c, v in gen.items()})):
        vals = np.array(list(d.values()))
        print(f"| {what} | {len(vals)} | {vals.mean():.3f} | {(vals > 0.9).sum()} | {(vals > 0.8).sum()} |")
    print("\n| class | Dice real | Dice synthetic |\n|---|---|---|")
    for c in sorted(real, key=lambda c: -real[c]):
        print(f"| {names.get(c, c)} | {real[c]:.3f} | {np.mean(gen[c]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Held-out evaluation of a (shipped) model on its dataset's test split; prints Markdown + JSON.

Usage: python scripts/evaluate_demo_model.py MODEL DATASET [--steps 50] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seg2med.inference import load_model
from seg2med.evaluation.heldout import evaluate_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = evaluate_split(load_model(args.model), args.dataset, args.split, steps=args.steps, seed=args.seed)
    p = res["pooled"]
    print(f"| | SSIM (body) | PSNR dB | MAE [0,1] |{' MAE HU |' if 'model_mae_hu' in p else ''}")
    print(f"|---|---|---|---|{'---|' if 'model_mae_hu' in p else ''}")
    for name in ("model", "prior"):
        hu = f" {p[name + '_mae_hu']:.1f} |" if f"{name}_mae_hu" in p else ""
        print(f"| {name} | {p[name + '_ssim']:.4f} | {p[name + '_psnr']:.2f} | {p[name + '_mae01']:.4f} |{hu}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

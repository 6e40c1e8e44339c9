#!/usr/bin/env bash
# The CPU benchmark of docs/benchmark-ct-demo.md: every method, 9 minutes of training each, on the
# demo CT dataset (subject A; built by scripts/build_demo_datasets.py), evaluated on its test block.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SEG2MED=${SEG2MED:-.venv/bin/seg2med}
[ -d runs/datasets/ct-demo ] || .venv/bin/python scripts/build_demo_datasets.py --out runs/datasets
$SEG2MED benchmark --data runs/datasets/ct-demo --out runs/bench-ct-demo --methods ddpm,unet,pix2pix,cyclegan,prior \
  --budget 9 --segmenter-budget 4 --preset tiny --batch 8 --sample-steps 20 --seed 0 --overwrite

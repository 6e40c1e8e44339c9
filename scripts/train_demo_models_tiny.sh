#!/usr/bin/env bash
# Rebuild the demo datasets and train the two fast `tiny` demo models exactly as shipped as
# `ct-demo-tiny` / `mr-demo-tiny` (see src/seg2med/resources/models/MODEL_CARD.md).
# CPU, 2 threads: CT ~18 min, MR ~8 min. Ship with scripts/ship_demo_model.py runs/ct-demo ct-demo-tiny ...
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SEG2MED=${SEG2MED:-.venv/bin/seg2med}
PY=${PY:-.venv/bin/python}
$PY scripts/build_demo_datasets.py --out runs/datasets --overwrite
$SEG2MED train --data runs/datasets/ct-demo --out runs/ct-demo --preset tiny --prediction sample \
  --steps 1200 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 400 --overwrite
$SEG2MED train --data runs/datasets/mr-demo --out runs/mr-demo --preset tiny --prediction sample \
  --steps 600 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 300 --overwrite

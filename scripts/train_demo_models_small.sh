#!/usr/bin/env bash
# The `small`-preset variant of the demo models (channels 32, 64, 128, 128; 6.3 M parameters):
# fewer steps than the tiny ones because a small step costs ~5x a tiny step on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SEG2MED=${SEG2MED:-.venv/bin/seg2med}
[ -d runs/datasets/ct-demo ] || .venv/bin/python scripts/build_demo_datasets.py --out runs/datasets
$SEG2MED train --data runs/datasets/ct-demo --out runs/ct-demo-small --preset small --prediction sample \
  --steps 800 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 400 --overwrite
$SEG2MED train --data runs/datasets/mr-demo --out runs/mr-demo-small --preset small --prediction sample \
  --steps 300 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 300 --overwrite

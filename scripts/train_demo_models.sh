#!/usr/bin/env bash
# Train the two embedded default models `ct-demo` / `mr-demo` exactly as shipped (preset `small`:
# channels 32, 64, 128, 128; 6.3 M parameters); see src/seg2med/resources/models/MODEL_CARD.md.
# CPU, 2 threads: CT ~60-100 min, MR ~35 min. Each model was trained to 800 (CT) / 300 (MR) steps,
# copied to runs/*-small-long and resumed to 1400 / 600 steps (resuming is exact,
# tests/test_training.py), which is what the commands below do. Then ship them:
#   python scripts/ship_demo_model.py runs/ct-demo-small-long ct-demo --command "<the CT command>"
#   python scripts/ship_demo_model.py runs/mr-demo-small-long mr-demo --command "<the MR command>"
# The run folders keep their historical names (they are recorded in the shipped config.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SEG2MED=${SEG2MED:-.venv/bin/seg2med}
[ -d runs/datasets/ct-demo ] || .venv/bin/python scripts/build_demo_datasets.py --out runs/datasets
$SEG2MED train --data runs/datasets/ct-demo --out runs/ct-demo-small --preset small --prediction sample \
  --steps 800 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 400 --overwrite
rm -rf runs/ct-demo-small-long && cp -r runs/ct-demo-small runs/ct-demo-small-long
$SEG2MED train --data runs/datasets/ct-demo --out runs/ct-demo-small-long --preset small --prediction sample \
  --steps 1400 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 400 --resume
$SEG2MED train --data runs/datasets/mr-demo --out runs/mr-demo-small --preset small --prediction sample \
  --steps 300 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 300 --overwrite
rm -rf runs/mr-demo-small-long && cp -r runs/mr-demo-small runs/mr-demo-small-long
$SEG2MED train --data runs/datasets/mr-demo --out runs/mr-demo-small-long --preset small --prediction sample \
  --steps 600 --batch 8 --lr 2e-4 --seed 0 --ckpt-every 100 --val-every 300 --resume

"""Copy a trained run into the package as a shipped model: fp16 EMA weights + a cleaned config.json.

Usage: python scripts/ship_demo_model.py RUN_DIR NAME [--command "exact training command"] [--sampling JSON]
Writes src/seg2med/resources/models/NAME/{config.json, ema.safetensors}; a train-segmenter run goes to
src/seg2med/resources/segmenters/NAME/{config.json, model.safetensors}. ``--sampling`` (a JSON object, e.g.
'{"slice_noise": "shared"}') becomes the model's ``sampling`` block: its generation defaults
(:class:`seg2med.inference.generate.Guidance`), checked before anything is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path

import torch

from seg2med.io.checkpoints import EMA_WEIGHTS, WEIGHTS, load_weights, read_checkpoint_config, save_weights, write_checkpoint_config

DEST = Path(__file__).resolve().parents[1] / "src" / "seg2med" / "resources" / "models"
SEGMENTERS = DEST.parent / "segmenters"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("name")
    ap.add_argument("--command", default="", help="the exact training command (recorded in config.json)")
    ap.add_argument("--sampling", default=None, help="JSON object: the model's generation defaults (config.json sampling)")
    args = ap.parse_args()
    cfg = read_checkpoint_config(args.run)
    if args.sampling is not None:
        from seg2med.inference.generate import Guidance

        sampling = json.loads(args.sampling)
        if not isinstance(sampling, dict) or set(sampling) - set(Guidance.OPTIONS):
            ap.error(f"--sampling must be a JSON object with keys among {', '.join(Guidance.OPTIONS)}")
        Guidance(**sampling)  # the values' checks
        cfg["sampling"] = sampling
    segmenter = cfg.get("method") == "segmenter"  # a train-segmenter run: its weights, under resources/segmenters
    weights = WEIGHTS if segmenter else EMA_WEIGHTS
    state = load_weights(args.run / cfg.get("weights", {}).get("model" if segmenter else "ema", weights))
    out = (SEGMENTERS if segmenter else DEST) / args.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_weights(out / weights, state, dtype=torch.float16)
    data = dict(cfg.get("data", {}))
    data["path"] = f"runs/datasets/{Path(str(data.get('path', ''))).name} (built by scripts/build_demo_datasets.py)"
    cfg.pop("format", None), cfg.pop("format_version", None), cfg.pop("seg2med_version", None)
    cfg.update({
        "data": data,
        "weights": {"model" if segmenter else "ema": weights, "dtype": "float16"},
        "shipped": {"name": args.name, "date": dt.date.today().isoformat(), "training_command": args.command,
                    "model_card": "MODEL_CARD.md"},
    })
    write_checkpoint_config(out, cfg)
    print(f"shipped {args.run} as {out} ({(out / weights).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

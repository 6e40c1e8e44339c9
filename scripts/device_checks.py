"""The GPU checks of issue #3 as one short script (also runs on CPU, as a dry run).

    python scripts/device_checks.py --out DIR [--device auto|cpu|cuda]

Checks, each recorded as pass / fail with its numbers in ``DIR/device-checks.json``:

1. ``generate``: the shipped ``ct-demo`` on a phantom, twice with the same seed, DDIM and DDPM
   (the DDPM steps draw noise on the device) in fp32, and DDIM with ``precision="bf16"``:
   bit-identical volumes, the input's affine and shape; bf16 within 5 HU (mean) of fp32.
2. ``train``: a tiny model trains 30 steps with ``--precision auto`` (bf16 autocast on a bf16 GPU),
   the loss is finite and falls, the run records its precision; ``--resume`` continues to 40 steps.
3. ``torchrun``: ``torchrun --nproc_per_node=1 -m seg2med train`` on the device (NCCL on CUDA,
   gloo on CPU) writes one checkpoint with world size 1.

Needs only the repository (phantom data, shipped models); exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import seg2med
from seg2med.data import PrepareConfig, prepare_dataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.inference.generate import pick_device
from seg2med.io.checkpoints import read_checkpoint_config
from seg2med.models import ModelConfig, SchedulerConfig
from seg2med.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TINY = {"channels": (16, 32, 32, 32), "norm_num_groups": 16, "num_head_channels": 16}


def check_generate(device: torch.device) -> dict[str, Any]:
    lv = seg2med.make_phantom(seed=0, slices=8)
    body = lv.volume.array != 0
    out: dict[str, Any] = {}
    volumes: dict[str, np.ndarray] = {}
    for name, sampler, steps, precision in (("ddim", "ddim", 10, "fp32"), ("ddpm", "ddpm", 20, "fp32"),
                                            ("ddim_bf16", "ddim", 10, "bf16")):
        kw = dict(model="ct-demo", steps=steps, seed=0, sampler=sampler, device=str(device), batch=8, precision=precision)
        t0 = time.perf_counter()
        a = seg2med.generate(lv, "ct", **kw)
        seconds = time.perf_counter() - t0
        b = seg2med.generate(lv, "ct", **kw)
        va, vb = a.samples[0], b.samples[0]
        volumes[name] = va.array
        out[name] = {
            "identical": bool(np.array_equal(va.array, vb.array)),
            "affine_kept": bool(np.array_equal(va.affine, lv.volume.affine)),
            "shape_kept": va.shape == lv.volume.shape,
            "seconds_first": round(seconds, 2),
            "body_mean_hu": float(va.array[body].mean()),
        }
    # bf16 autocast vs fp32, same seed: on the development CPU the mean difference was about 1 HU
    out["ddim_bf16"]["mean_abs_diff_hu_vs_fp32"] = float(np.abs(volumes["ddim_bf16"] - volumes["ddim"])[body].mean())
    out["ok"] = (all(v["identical"] and v["affine_kept"] and v["shape_kept"] for v in out.values())
                 and out["ddim_bf16"]["mean_abs_diff_hu_vs_fp32"] < 5.0)
    return out


def build_dataset(root: Path) -> Path:
    out = root / "dataset"
    prepare_dataset(phantom_subjects(3, size=64, spacing=6.0, slices=8), out, PrepareConfig(modality="ct", spacing=6.0, size=64, split=(0.6, 0.4, 0.0)), overwrite=True)
    return out


def check_train(device: torch.device, data: Path, root: Path) -> dict[str, Any]:
    run = root / "train"
    model = ModelConfig.from_preset("tiny", **TINY)
    base = dict(batch=8, lr=1e-3, ckpt_every=10, val_every=30, log_every=1, val_steps=5, seed=0, device=device.type)
    t0 = time.perf_counter()
    s1 = train(data, run, model, SchedulerConfig(), TrainConfig(steps=30, **base), progress=False)
    seconds = time.perf_counter() - t0
    s2 = train(data, run, model, SchedulerConfig(), TrainConfig(steps=40, **base), resume=True, progress=False)
    losses = s1["losses"]
    tr = read_checkpoint_config(run)["training"]
    falls = bool(np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]))
    return {
        "precision": tr["precision"], "device": tr["device"], "steps": tr["step"], "resumed_from": s2.get("resumed_from"),
        "loss_first5": float(np.mean(losses[:5])), "loss_last5": float(np.mean(losses[-5:])), "loss_falls": falls,
        "finite": bool(np.all(np.isfinite(losses + s2["losses"]))), "seconds_30_steps": round(seconds, 2),
        "ok": falls and tr["step"] == 40 and s2.get("resumed_from") == 30 and bool(np.all(np.isfinite(losses))),
    }


def check_torchrun(device: torch.device, data: Path, root: Path) -> dict[str, Any]:
    out = root / "ddp"
    cfg = root / "ddp.yaml"
    cfg.write_text("model:\n  preset: tiny\n  channels: [16, 32, 32, 32]\n  norm_num_groups: 16\n  num_head_channels: 16\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "seg2med", "train",
           "--data", str(data), "--out", str(out), "--config", str(cfg), "--steps", "4", "--batch", "4",
           "--ckpt-every", "0", "--val-every", "4", "--device", device.type]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    result: dict[str, Any] = {"returncode": res.returncode, "backend": "nccl" if device.type == "cuda" else "gloo"}
    if res.returncode != 0:
        result["stderr_tail"] = res.stderr[-2000:]
        result["ok"] = False
        return result
    tr = read_checkpoint_config(out)["training"]
    result.update(world_size=tr["world_size"], steps=tr["step"], device=tr["device"], precision=tr["precision"])
    result["ok"] = tr["world_size"] == 1 and tr["step"] == 4 and (out / "model.safetensors").is_file()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for device-checks.json and the work files")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    report: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    data = build_dataset(work)
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "generate": lambda: check_generate(device),
        "train": lambda: check_train(device, data, work),
        "torchrun": lambda: check_torchrun(device, data, work),
    }
    for name, fn in checks.items():
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as exc:  # a failed check is a result to report, not a crash of the others
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        sys.stderr.write(f"{name}: {'pass' if report[name]['ok'] else 'FAIL'} ({report[name]['wall_s']} s)\n")
    (args.out / "device-checks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if all(report[n]["ok"] for n in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Checkpoint folders: safetensors weights + a JSON config that describes them fully.

Layout of a run / checkpoint folder::

    config.json          model, scheduler, data, training summary, code version
    model.safetensors    network weights (fp32, or fp16 for shipped models)
    ema.safetensors      exponential moving average of the weights (used for sampling)
    state/               resume state: optimizer.safetensors + optimizer.json, rng.safetensors, progress.json

Only tensors are stored, never pickled objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from seg2med._version import __version__
from seg2med.errors import InputError
from seg2med.io.files import atomic_write, read_json, write_json

CHECKPOINT_FORMAT = "seg2med-checkpoint"
CHECKPOINT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor], overwrite: bool = True,
                 dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as safetensors, atomically (optionally cast floating tensors to ``dtype``)."""
    from safetensors.torch import save_file

    tensors = {}
    for k, v in state.items():
        t = v.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous()
    with atomic_write(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


def load_weights(path: str | Path, dtype: torch.dtype | None = torch.float32) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict (floating tensors cast to ``dtype``); clear error when missing/corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: weights file not found")
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{p}: corrupt or unreadable safetensors file ({str(exc).splitlines()[0]})") from None
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    return state


def load_weights_into(net: torch.nn.Module, path: str | Path, what: str = "model") -> None:
    """Load a safetensors file into ``net``, which was built from the folder's config.json.

    Weights of another network (another preset, channel count or number of neighbours) are a
    one-line :class:`InputError` naming the file and the first tensor that differs, not the
    many-line ``RuntimeError`` of ``load_state_dict``.
    """
    p = Path(path)
    state = load_weights(p)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        first = (f"{reshaped[0]} is {list(state[reshaped[0]].shape)} in the file, {list(expected[reshaped[0]].shape)} "
                 f"for the config" if reshaped else f"{(missing or unexpected)[0]} is "
                 f"{'missing from the file' if missing else 'not in the config'}")
        raise InputError(f"{p}: weights do not match the {what} in {CONFIG} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(reshaped)} of another shape; e.g. {first})")
    net.load_state_dict(state)


def write_checkpoint_config(folder: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` (adds format, version and code version)."""
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "seg2med_version": __version__, **config}
    return write_json(Path(folder) / CONFIG, data, overwrite=True)


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, with its article: "an array", "a string"..."""
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint folder's ``config.json``."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: checkpoint folder not found")
    cfg_path = d / CONFIG
    if not cfg_path.is_file():
        raise InputError(f"{d}: not a seg2med checkpoint (no {CONFIG})")
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise InputError(f"{cfg_path}: not a seg2med checkpoint config (it holds {_json_kind(cfg)}, not a JSON object)")
    if cfg.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{cfg_path}: not a seg2med checkpoint config")
    if cfg.get("format_version") != CHECKPOINT_VERSION:
        raise InputError(f"{cfg_path}: unsupported checkpoint format version {cfg.get('format_version')!r}")
    for key in ("model", "method"):
        if key not in cfg:
            raise InputError(f"{cfg_path}: checkpoint config lacks {key!r}")
    for key in ("model", "scheduler", "data", "weights"):
        if key in cfg and not isinstance(cfg[key], dict):
            raise InputError(f"{cfg_path}: {key!r} must be a JSON object, not {_json_kind(cfg[key])}")
    return cfg


def save_optimizer_state(folder: str | Path, state: Mapping[str, Any]) -> None:
    """Optimizer ``state_dict()`` as safetensors (tensors) + JSON (everything else)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, val in per_param.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    save_weights(folder / "optimizer.safetensors", tensors)
    write_json(folder / "optimizer.json", {"param_groups": state["param_groups"], "scalars": scalars}, overwrite=True)


def load_optimizer_state(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    tensors = load_weights(folder / "optimizer.safetensors", dtype=None)
    meta = read_json(folder / "optimizer.json")
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    for idx, vals in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    return {"state": state, "param_groups": meta["param_groups"]}


def dumps_config(config: Mapping[str, Any]) -> str:
    """Compact JSON of a config (stored as safetensors metadata for self-description)."""
    return json.dumps(config, sort_keys=True, default=str)

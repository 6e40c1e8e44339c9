"""Start a diffusion run from the EMA weights of a trained one (``seg2med train --init-from RUN``).

The source run must have the same network (preset, channels, blocks, attention, image channels, residual) and the
same scheduler (kind, schedule, prediction type), so that its output means the same thing. It may have fewer
neighbouring prior slices (``--neighbours``): a 2D model then starts a 2.5D one by *channel inflation*, as
pretrained 2D networks are inflated to more input channels. The first convolution's weights of the image and the
centre prior channel are copied, those of the new neighbour channels start at zero, so the new network computes
exactly what the source network computed and training only has to learn what the neighbours add.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from seg2med.errors import ConfigError
from seg2med.io.checkpoints import EMA_WEIGHTS, load_weights, read_checkpoint_config
from seg2med.models.config import ModelConfig, SchedulerConfig

log = logging.getLogger(__name__)

#: scheduler fields that change what the network's output means
_SCHEDULER_FIELDS = ("kind", "schedule", "prediction_type", "num_train_timesteps", "beta_start", "beta_end")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_compatible(folder: Path, config: dict[str, Any], model_cfg: ModelConfig, sched_cfg: SchedulerConfig) -> int:
    """The source run's neighbours ``k0`` if its network and scheduler can start this run; ConfigError otherwise."""
    if config.get("method") != "ddpm":
        raise ConfigError(f"--init-from {folder}: a {config.get('method')!r} run; only a diffusion run can start one")
    src = ModelConfig.from_dict(config["model"]).to_dict()
    dst = model_cfg.to_dict()
    differ = [k for k in dst if k != "neighbours" and src.get(k) != dst[k]]
    if differ:
        k = differ[0]
        raise ConfigError(f"--init-from {folder}: its model has {k} = {src.get(k)!r}, this run {dst[k]!r} "
                          f"(only --neighbours may differ)")
    s_src, s_dst = SchedulerConfig.from_dict(config.get("scheduler", {})).to_dict(), sched_cfg.to_dict()
    bad = [k for k in _SCHEDULER_FIELDS if s_src.get(k) != s_dst.get(k)]
    if bad:
        raise ConfigError(f"--init-from {folder}: its scheduler has {bad[0]} = {s_src.get(bad[0])!r}, this run "
                          f"{s_dst.get(bad[0])!r}")
    k0 = int(src["neighbours"])
    if k0 != model_cfg.neighbours and model_cfg.image_channels != 1:
        raise ConfigError(f"--init-from {folder}: inflating to more neighbouring slices is for single-contrast models; "
                          f"this one has {model_cfg.image_channels} image channels")
    if k0 > model_cfg.neighbours:
        raise ConfigError(f"--init-from {folder}: it uses {k0} neighbouring slices, this run {model_cfg.neighbours}; "
                          "a run can only start from one with as many or fewer")
    return k0


def inflate_input(weight: torch.Tensor, image_channels: int, k0: int, k: int) -> torch.Tensor:
    """First-convolution weights ``[out, image + 1 + 2 k0, ...]`` -> ``[out, image + 1 + 2 k, ...]``: the image
    channels and the source's prior slices at their place around the centre (channel ``image + k``), zeros for the
    new neighbours."""
    out = torch.zeros((weight.shape[0], image_channels + 1 + 2 * k, *weight.shape[2:]), dtype=weight.dtype)
    out[:, :image_channels] = weight[:, :image_channels]
    lo = image_channels + (k - k0)
    out[:, lo:lo + 1 + 2 * k0] = weight[:, image_channels:]
    return out


def init_from_run(net: torch.nn.Module, folder: str | Path, model_cfg: ModelConfig, sched_cfg: SchedulerConfig,
                  ) -> dict[str, Any]:
    """Load the EMA weights of run ``folder`` into ``net`` (built from ``model_cfg``), inflating the input
    convolution for more neighbours; the record of what was loaded (for config.json)."""
    folder = Path(folder)
    config = read_checkpoint_config(folder)
    k0 = check_compatible(folder, config, model_cfg, sched_cfg)
    path = folder / str(config.get("weights", {}).get("ema", EMA_WEIGHTS))
    state = load_weights(path)
    expected = net.state_dict()
    inflated = []
    for name, tensor in expected.items():
        if name not in state:
            raise ConfigError(f"--init-from {path}: no tensor {name}")
        if tuple(state[name].shape) != tuple(tensor.shape):
            if k0 == model_cfg.neighbours or state[name].ndim < 2 or state[name].shape[1] != model_cfg.image_channels + 1 + 2 * k0:
                raise ConfigError(f"--init-from {path}: {name} is {list(state[name].shape)}, this network "
                                  f"{list(tensor.shape)}")
            state[name] = inflate_input(state[name], model_cfg.image_channels, k0, model_cfg.neighbours)
            inflated.append(name)
    net.load_state_dict({n: state[n].to(expected[n].dtype) for n in expected})
    log.info("initialised from %s (%s)%s", path, f"{k0} -> {model_cfg.neighbours} neighbours" if inflated else "same network",
             f", inflated {', '.join(inflated)}" if inflated else "")
    return {"run": str(folder.resolve()), "weights": path.name, "sha256": _sha256(path),
            "neighbours": [k0, model_cfg.neighbours], "inflated": inflated,
            "training_command": config.get("shipped", {}).get("training_command")}


__all__ = ["check_compatible", "inflate_input", "init_from_run"]

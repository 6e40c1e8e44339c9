"""Run folders of the non-diffusion methods (baselines, segmenter): several networks and optimizers per checkpoint.

Same layout and write order as :mod:`seg2med.training.state`, generalised to
any set of weight files named in ``config.json["weights"]``::

    config.json  model.safetensors  [ema.safetensors]  [<network>.safetensors ...]   latest checkpoint
    checkpoints/step_NNNNNN/                           config.json + every weight file
    state/progress.json                                step reached, wall time, losses, loss scaler
    state/step_NNNNNN/<optimizer>/optimizer.{safetensors,json}   one folder per optimizer (latest only)
    val/step_NNNNNN.png  log.csv

A checkpoint is complete once ``state/progress.json`` names its step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seg2med.errors import ConfigError
from seg2med.io.checkpoints import (
    load_optimizer_state,
    load_weights,
    read_checkpoint_config,
    save_optimizer_state,
)
from seg2med.training.state import STATE, checkpoint_weights_dir, read_progress, write_checkpoint, write_weight_files


def save_nets_checkpoint(
    out: Path,
    step: int,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    optimizers: Mapping[str, Mapping[str, Any]],
    progress: Mapping[str, Any],
) -> None:
    """Write the checkpoint of ``step``: ``weights`` maps file names to state dicts, ``optimizers`` names to states."""

    def write_state(folder: Path) -> None:
        for opt_name, state in optimizers.items():
            (folder / opt_name).mkdir()
            save_optimizer_state(folder / opt_name, state)

    write_checkpoint(out, step, lambda folder: write_weight_files(folder, weights, config), write_state, progress)


@dataclass
class NetsState:
    """The latest complete checkpoint of a multi-network run."""

    step: int
    config: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]  # file name -> state dict
    optimizers: dict[str, dict[str, Any]]  # optimizer name -> state dict
    progress: dict[str, Any]


def load_nets_checkpoint(out: Path, optimizer_names: tuple[str, ...]) -> NetsState:
    """Read the latest complete checkpoint (every file of ``config.json["weights"]`` and the named optimizers)."""
    progress, step, name = read_progress(out)
    config = read_checkpoint_config(out)
    files = sorted(set(config.get("weights", {}).values()))
    folder = checkpoint_weights_dir(out, config, step, name, files)
    missing = [o for o in optimizer_names if not (out / STATE / name / o).is_dir()]
    if missing:
        raise ConfigError(f"{out}: no optimizer state {missing} in {STATE}/{name} (not a run of this method?)")
    return NetsState(step, config, {f: load_weights(folder / f) for f in files},
                     {o: load_optimizer_state(out / STATE / name / o) for o in optimizer_names}, progress)


def check_run_method(stored: Mapping[str, Any], method: str, out: Path) -> None:
    """Refuse to resume (or load) a run of another method."""
    old = stored.get("method", "ddpm")
    if old != method:
        raise ConfigError(f"resume: {out} was trained with method {old!r}, not {method!r}")

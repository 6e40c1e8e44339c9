"""The run folder: checkpoints (safetensors + JSON), resume state and the CSV log.

Layout (every method; the weight files are those ``config.json["weights"]`` names)::

    config.json  model.safetensors  [ema.safetensors]  [<network>.safetensors ...]   latest checkpoint
    checkpoints/step_NNNNNN/                  config.json + every weight file, one per checkpoint
    state/progress.json                       step reached, wall time, losses, loss scaler
    state/step_NNNNNN/optimizer.{safetensors,json}               the optimizer of a one-optimizer run
    state/step_NNNNNN/<optimizer>/optimizer.{safetensors,json}   one folder per optimizer otherwise
                                              (only the latest step's state is kept)
    val/step_NNNNNN.png                       validation grids
    log.csv                                   step, loss, val_loss, lr, it_s, seconds

A checkpoint is complete once ``state/progress.json`` names its step: the
step's folders are written (atomically) first, so a run killed at any moment
resumes from a consistent set of weights, EMA and optimizer state.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seg2med.errors import ConfigError, InputError, OutputExistsError
from seg2med.io.checkpoints import (
    CONFIG,
    EMA_WEIGHTS,
    WEIGHTS,
    load_optimizer_state,
    load_weights,
    read_checkpoint_config,
    save_optimizer_state,
    save_weights,
    write_checkpoint_config,
)
from seg2med.io.files import atomic_dir, read_json, write_json, write_text
from seg2med.io.outputs import (
    check_location,
    inside,
    marked_as,
    write_folder_marker,
    written_by_seg2med,
)

log = logging.getLogger(__name__)

STATE, PROGRESS, CHECKPOINTS, VAL, LOG = "state", "progress.json", "checkpoints", "val", "log.csv"
LOG_FIELDS = ("step", "loss", "val_loss", "lr", "it_s", "seconds")
RUN_ITEMS = (CONFIG, WEIGHTS, EMA_WEIGHTS, STATE, CHECKPOINTS, VAL, LOG)


def step_name(step: int) -> str:
    return f"step_{step:06d}"


RUN_KIND = "run"


def is_run_folder(out: Path) -> bool:
    """``out`` holds a seg2med run: its ``config.json`` is a seg2med checkpoint config, or it carries the
    run marker :func:`clear_run` writes (a run stopped before its first checkpoint)."""
    return written_by_seg2med(out / CONFIG) or marked_as(out, RUN_KIND)


def check_out_dir(out: Path, resume: bool, overwrite: bool, data: str | Path | None = None) -> bool:
    """Decide what to do with ``out``; True when an existing run is resumed. Writes nothing.

    ``overwrite`` replaces only a seg2med run (and of it only the run's own items, :func:`clear_run`);
    a non-empty folder that is not one is refused, as is a run folder that is, holds or lies inside the
    dataset ``data`` it would train on."""
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    check_location(out)
    if data is not None and Path(data).exists() and (inside(out, data) or inside(data, out)):
        raise ConfigError(f"{out}: the run folder and the dataset {data} may not hold one another")
    is_run = is_run_folder(out)
    if resume:
        if not (is_run and (out / STATE / PROGRESS).is_file()):
            hint = " (a run stopped before its first checkpoint: start it again with --overwrite)" if is_run else ""
            raise ConfigError(f"{out}: no checkpoint to resume from (no {CONFIG} and {STATE}/{PROGRESS}){hint}")
        return True
    nonempty = out.is_dir() and any(out.iterdir())
    if nonempty and not overwrite:
        what = "a training run" if is_run else "a non-empty folder"
        raise OutputExistsError(f"{out}: is {what} (pass --resume to continue it or --overwrite to replace it)")
    if nonempty and not is_run:
        raise OutputExistsError(f"{out}: is a non-empty folder that is not a seg2med run; --overwrite replaces only "
                                "seg2med's own outputs (choose a new folder)")
    return False


def clear_run(out: Path) -> None:
    """Remove the artefacts of a previous run from ``out`` (nothing else) and create the folder.

    Besides :data:`RUN_ITEMS`, the weight files named by an existing
    ``config.json`` (e.g. the discriminators of a baseline run) are removed.
    """
    extra: list[str] = []
    if (out / CONFIG).is_file():
        try:
            weights = read_json(out / CONFIG).get("weights", {})
            extra = [w for w in weights.values() if isinstance(w, str) and w == Path(w).name and w.endswith(".safetensors")]
        except (InputError, AttributeError):
            extra = []
    for name in (*RUN_ITEMS, *extra):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    # marks the folder as a run from its first moment: a run stopped before its first checkpoint
    # (Ctrl-C, SIGTERM) can be started again with --overwrite
    write_folder_marker(out, RUN_KIND, RUN_ITEMS)


def write_weight_files(folder: Path, weights: Mapping[str, Mapping[str, torch.Tensor]], config: Mapping[str, Any]) -> None:
    """Safetensors files (file name -> state dict) and ``config.json`` into ``folder``."""
    for name, state in weights.items():
        save_weights(folder / name, state, overwrite=True)
    write_checkpoint_config(folder, config)


def write_checkpoint(out: Path, step: int, write_weights: Callable[[Path], None], write_state: Callable[[Path], None],
                     progress: Mapping[str, Any]) -> None:
    """The checkpoint protocol of every run folder (module docstring): weights into ``checkpoints/step_N``,
    optimizer state into ``state/step_N``, then ``state/progress.json`` names the step (the commit), older
    states are pruned and the top-level weights replaced. ``write_weights`` / ``write_state`` fill a folder."""
    name = step_name(step)
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / CHECKPOINTS / name, overwrite=True) as tmp:
        write_weights(tmp)
    (out / STATE).mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / STATE / name, overwrite=True) as tmp:
        write_state(tmp)
    write_json(out / STATE / PROGRESS, {**progress, "step": step, "state": name}, overwrite=True)
    for old in (out / STATE).glob("step_*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old)
    write_weights(out)
    log.debug("checkpoint %s written", name)


def read_progress(out: Path) -> tuple[dict[str, Any], int, str]:
    """``state/progress.json`` of a run: (progress, step, name of its state folder)."""
    progress = read_json(out / STATE / PROGRESS)
    if not isinstance(progress, dict) or not isinstance(progress.get("step"), int):
        raise InputError(f"{out / STATE / PROGRESS}: not a seg2med progress file")
    return progress, progress["step"], progress.get("state", step_name(progress["step"]))


def checkpoint_weights_dir(out: Path, config: Mapping[str, Any], step: int, name: str, files: Iterable[str]) -> Path:
    """Where the weights of checkpoint ``name`` are: ``checkpoints/name``, or the top-level files when that folder
    was pruned and they are of the same step."""
    folder = out / CHECKPOINTS / name
    if all((folder / f).is_file() for f in files):
        return folder
    if config.get("training", {}).get("step") != step:
        raise InputError(f"{out}: weights of step {step} not found (neither {folder} nor the top-level files)")
    return out


#: The optimizer of a one-optimizer run (diffusion): its state lies at the top of ``state/step_N``.
SINGLE_OPTIMIZER = ""


def save_checkpoint(
    out: Path,
    step: int,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, torch.Tensor]],
    optimizers: Mapping[str, Mapping[str, Any]],
    progress: Mapping[str, Any],
) -> None:
    """Write the checkpoint of ``step``: ``weights`` maps file names to state dicts, ``optimizers`` names to
    states (one folder each in ``state/step_N``; :data:`SINGLE_OPTIMIZER` in the folder itself)."""

    def write_state(folder: Path) -> None:
        for name, state in optimizers.items():
            (folder / name).mkdir(exist_ok=True)
            save_optimizer_state(folder / name, state)

    write_checkpoint(out, step, lambda folder: write_weight_files(folder, weights, config), write_state, progress)


@dataclass
class ResumeState:
    """The latest complete checkpoint of a run: everything it needs to continue exactly where it left off."""

    step: int
    config: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]  # file name -> state dict
    optimizers: dict[str, dict[str, Any]]  # optimizer name -> state dict
    progress: dict[str, Any]


def load_checkpoint(out: Path, optimizer_names: tuple[str, ...] = (SINGLE_OPTIMIZER,)) -> ResumeState:
    """Read the latest complete checkpoint (every file of ``config.json["weights"]`` and the named optimizers)."""
    progress, step, name = read_progress(out)
    config = read_checkpoint_config(out)
    files = sorted(set(config.get("weights", {}).values()))
    folder = checkpoint_weights_dir(out, config, step, name, files)
    missing = [o or "optimizer" for o in optimizer_names if not (out / STATE / name / o / "optimizer.json").is_file()]
    if missing:
        raise ConfigError(f"{out}: no optimizer state {missing} in {STATE}/{name} (not a run of this method?)")
    return ResumeState(step, config, {f: load_weights(folder / f) for f in files},
                       {o: load_optimizer_state(out / STATE / name / o) for o in optimizer_names}, progress)


def check_run_method(stored: Mapping[str, Any], method: str, out: Path) -> None:
    """Refuse to resume (or load) a run of another method."""
    old = stored.get("method", "ddpm")
    if old != method:
        raise ConfigError(f"resume: {out} was trained with method {old!r}, not {method!r}")


class RunLog:
    """``log.csv``, appended row by row (rank 0 only); on resume, rows after the checkpoint are dropped."""

    def __init__(self, out: Path, resume_step: int | None = None) -> None:
        self.path = out / LOG
        if resume_step is None or not self.path.is_file():
            write_text(self.path, ",".join(LOG_FIELDS) + "\n", overwrite=True)
        else:
            with self.path.open(encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, LOG_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text(self.path, buf.getvalue(), overwrite=True)

    def append(self, step: int, loss: float, val_loss: float | None, lr: float, it_s: float, seconds: float) -> None:
        vals = (step, f"{loss:.6g}", "" if val_loss is None else f"{val_loss:.6g}", f"{lr:.6g}", f"{it_s:.4g}", f"{seconds:.2f}")
        with self.path.open("a", encoding="utf-8") as f:
            f.write(",".join(str(v) for v in vals) + "\n")

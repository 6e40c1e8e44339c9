"""The one training loop of every method (diffusion, UNet, pix2pix, CycleGAN, prior map, segmenter).

A method contributes a :class:`Recipe` (its configs, how it checks the data
and a resumed run, how it builds its :class:`Learner`); :func:`run_training`
does everything else once: the run folder (:func:`check_out_dir`, resume or
:func:`clear_run`), the runtime (device, precision, torchrun ranks), the
step-seeded loop, validation, ``log.csv``, atomic checkpoints and exact
resume, the progress bar and the summary. Step ``s`` draws all its randomness
from generators seeded by ``(seed, s[, rank])``, so an interrupted and
resumed run reproduces an uninterrupted one bit for bit (same device,
precision and number of processes). Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from seg2med.data.dataset import SliceDataset
from seg2med.errors import ConfigError, raise_if_interrupted
from seg2med.io.checkpoints import read_checkpoint_config
from seg2med.training.config import TrainConfig, out_of_time
from seg2med.training.data import check_batch_memory, data_summary, open_split, require_slices
from seg2med.training.runtime import Runtime, runtime
from seg2med.training.state import (
    ResumeState,
    RunLog,
    check_out_dir,
    check_run_method,
    clear_run,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)
LAST_LOSSES = 10


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class Tracker:
    """Losses, timing and the latest validation loss of a run (carried over on resume)."""

    step: int = 0
    seconds_before: float = 0.0
    last: deque = field(default_factory=lambda: deque(maxlen=LAST_LOSSES))
    losses: list[float] = field(default_factory=list)  # this invocation, one per step
    window: list[float] = field(default_factory=list)  # since the last log row
    val_loss: float | None = None
    t0: float = field(default_factory=time.perf_counter)
    t_window: float = field(default_factory=time.perf_counter)

    @classmethod
    def resumed(cls, progress: dict[str, Any]) -> Tracker:
        tr = cls(step=int(progress["step"]), seconds_before=float(progress.get("seconds", 0.0)), val_loss=progress.get("val_loss"))
        tr.last.extend(progress.get("last_losses", []))
        return tr

    def add(self, step: int, loss: float) -> None:
        self.step = step
        self.losses.append(loss)
        self.window.append(loss)
        self.last.append(loss)

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def flush_window(self) -> tuple[float, float]:
        """(mean loss, it/s) since the previous call."""
        now = time.perf_counter()
        n, dt = len(self.window), max(now - self.t_window, 1e-9)
        mean = sum(self.window) / n if n else float("nan")
        self.window, self.t_window = [], now
        return mean, n / dt

    def info(self) -> dict[str, Any]:
        last = list(self.last)
        return {"step": self.step, "seconds": round(self.seconds, 3), "final_loss": (sum(last) / len(last)) if last else None,
                "last_losses": last, "val_loss": self.val_loss}


@contextlib.contextmanager
def progress_bar(enabled: bool, start: int, total: int) -> Iterator[Callable[[int, float], None]]:
    """A rich progress bar (stderr) showing loss and it/s; yields ``update(step, loss)``."""
    if not enabled:
        yield lambda step, loss: None
        return
    cols = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[its]} it/s"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, console=Console(stderr=True)) as prog:
        task = prog.add_task("train", total=total, completed=start, loss="-", its="-")
        t_last, s_last = time.perf_counter(), start

        def update(step: int, loss: float) -> None:
            nonlocal t_last, s_last
            now = time.perf_counter()
            fields = {"loss": f"{loss:.4f}"}
            if now - t_last > 0.5:
                fields["its"] = f"{(step - s_last) / (now - t_last):.2f}"
                t_last, s_last = now, step
            prog.update(task, completed=step, **fields)

        yield update


def due(step: int, every: int, last: int) -> bool:
    """True at the last step and every ``every`` steps (``every`` = 0: only at the last)."""
    return step == last or (every > 0 and step % every == 0)


# --------------------------------------------------------------------------- a method's part
class Learner(ABC):
    """One method's networks, optimizers and objective, driven by :func:`run_loop`."""

    method: str
    cfg: TrainConfig
    rt: Runtime
    scaler: torch.amp.GradScaler

    @abstractmethod
    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """File name -> state dict of everything saved with a checkpoint."""

    @abstractmethod
    def optimizer_states(self) -> dict[str, dict[str, Any]]:
        """Optimizer name -> state dict (the names of the method's :attr:`Recipe.optimizers`)."""

    @abstractmethod
    def load(self, state: ResumeState) -> None:
        """Restore networks, optimizers and loss scaler from a checkpoint."""

    @abstractmethod
    def batches(self, ds: SliceDataset, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of steps ``start + 1 .. stop`` (step-seeded; this process's share under torchrun)."""

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        """One optimisation step; returns the loss that is logged (mean over processes)."""

    @abstractmethod
    def validate(self, step: int) -> float | None:
        """Validation loss (and, where meaningful, a PNG in ``val/``); rank 0 only."""

    @abstractmethod
    def run_config(self, tracker: Tracker) -> dict[str, Any]:
        """The ``config.json`` of a checkpoint."""

    def load_scaler(self, state: ResumeState) -> None:
        if state.progress.get("scaler"):
            self.scaler.load_state_dict(state.progress["scaler"])

    def training_info(self, tracker: Tracker) -> dict[str, Any]:
        """The ``training`` block of ``config.json`` after ``config``/``objective``: progress and where it ran."""
        return {**tracker.info(), "device": str(self.rt.device), "precision": self.rt.precision,
                "world_size": self.rt.world_size}


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                   scaler: torch.amp.GradScaler, grad_clip: float) -> None:
    """Backward, optional gradient clipping and the step of one optimizer (loss scaling aware)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)


def new_scaler(rt: Runtime) -> torch.amp.GradScaler:
    """The loss scaler of a learner: active in fp16 only."""
    return torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")


# --------------------------------------------------------------------------- the loop
def run_loop(out: Path, learner: Learner, train_ds: SliceDataset, val_ds: SliceDataset, state: ResumeState | None,
             progress: bool) -> Tracker:
    """Train ``learner`` up to ``cfg.steps`` (from the checkpoint ``state`` if given); returns the tracker.

    Every process steps; rank 0 alone validates, logs and writes checkpoints.
    The time budget stops all processes at the same step (any rank out of time).
    """
    cfg, rt = learner.cfg, learner.rt
    tracker = Tracker.resumed(state.progress) if state is not None else Tracker()
    start = tracker.step
    if state is not None:
        learner.load(state)
    runlog = RunLog(out, start if state is not None else None) if rt.is_main else None
    if rt.is_main:
        if state is not None:
            log.info("resuming at step %d of %d", start, cfg.steps)
        if cfg.val_every and not len(val_ds):
            log.warning("the val split holds no slices: no validation")
    with progress_bar(progress and rt.is_main, start, cfg.steps) as update:
        for step, batch in zip(range(start + 1, cfg.steps + 1), learner.batches(train_ds, start, cfg.steps)):
            raise_if_interrupted()
            tracker.add(step, learner.step(batch, step))
            stop = rt.mean(torch.tensor(float(out_of_time(cfg, tracker.seconds)))) > 0
            if rt.is_main:
                _after_step(out, learner, tracker, runlog, val_ds, step, step if stop else cfg.steps)
                update(step, tracker.losses[-1])
            if stop:
                log.info("time budget of %g min reached at step %d", cfg.max_minutes, step)
                break
    rt.barrier()
    if start >= cfg.steps and rt.is_main:
        log.info("%s: already at step %d (>= %d steps): nothing to train", out, start, cfg.steps)
    return tracker


def _after_step(out: Path, learner: Learner, tracker: Tracker, runlog: RunLog, val_ds: SliceDataset, step: int,
                last: int) -> None:
    """Validation, log row and checkpoint when due; ``last`` is the final step of this invocation."""
    cfg = learner.cfg
    validated = len(val_ds) > 0 and cfg.val_every > 0 and due(step, cfg.val_every, last)
    if validated:
        tracker.val_loss = learner.validate(step)
    if validated or due(step, cfg.log_every, last):
        loss, its = tracker.flush_window()
        runlog.append(step, loss, tracker.val_loss if validated else None, cfg.lr, its, tracker.seconds)
    if due(step, cfg.ckpt_every, last):
        info = {**tracker.info(), "scaler": learner.scaler.state_dict(), "world_size": learner.rt.world_size}
        save_checkpoint(out, step, learner.run_config(tracker), learner.weights(), learner.optimizer_states(), info)
        log.info("step %d: loss %.4f, checkpoint written", step, tracker.info()["final_loss"])


# --------------------------------------------------------------------------- the run
@dataclass
class Context:
    """What a recipe's learner is built from."""

    out: Path
    rt: Runtime
    train_ds: SliceDataset
    val_ds: SliceDataset
    data: dict[str, Any]  # the run's ``data`` block (see :func:`seg2med.training.data.data_summary`)


@dataclass
class Recipe:
    """A method's part of a training run; :func:`run_training` does the rest.

    ``check_data`` refuses a dataset the method cannot train on (slice size, stored labels ...);
    ``check_resumable`` a resumed run's ``config.json`` trained with other settings;
    ``build`` makes the learner (before a checkpoint is loaded into it); ``describe`` is the
    start-of-run log line. ``batch_items`` (slices per batch, default ``cfg.batch``) and
    ``activation_bytes`` (network activations per pixel and slice, on a CPU) size the memory check. A ``one_pass`` method (the prior map) has no steps: it is called
    instead of the loop and returns the summary's extra keys.
    """

    method: str
    cfg: TrainConfig
    neighbours: int = 0
    optimizers: tuple[str, ...] = ()
    what: str = "train"
    multi_process: bool = False
    batch_items: int | None = None
    activation_bytes: float = 0.0
    check_data: Callable[[SliceDataset], None] = lambda ds: None
    check_resumable: Callable[[dict[str, Any]], None] = lambda stored: None
    build: Callable[[Context], Learner] | None = None
    describe: Callable[[Learner, Context], str] = lambda learner, ctx: ""
    one_pass: Callable[[Context], dict[str, Any]] | None = None


def run_training(recipe: Recipe, data_dir: str | Path, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``recipe`` on a prepared slice dataset into the run folder ``out_dir``; returns a summary.

    An existing run is refused unless ``resume`` (continue it: same method, networks and optimisation
    settings, new ``steps`` total) or ``overwrite`` (only a seg2med run, and of it only its own items).
    Under torchrun (``WORLD_SIZE`` > 1) a ``multi_process`` method trains each process on its share of
    the batch; the others are refused.
    """
    cfg, out = recipe.cfg, Path(out_dir)
    if recipe.one_pass is not None and resume:
        raise ConfigError(f"method {recipe.method} has nothing to resume (it fits in one pass; use --overwrite to refit)")
    with runtime(cfg.device, cfg.precision) as rt:
        if rt.distributed and not recipe.multi_process:
            raise ConfigError(f"method {recipe.method} trains in one process: torchrun (WORLD_SIZE > 1) is supported "
                              "for ddpm only")
        if cfg.batch % rt.world_size:
            raise ConfigError(f"batch {cfg.batch} is not divisible by the {rt.world_size} processes")
        resuming = check_out_dir(out, resume, overwrite, data_dir)
        train_ds = open_split(data_dir, "train", recipe.neighbours)
        require_slices(train_ds, "train")
        recipe.check_data(train_ds)
        if recipe.one_pass is None:
            acts = recipe.activation_bytes if rt.device.type == "cpu" else 0.0  # on a GPU only the batch is in host memory
            check_batch_memory(train_ds, recipe.batch_items or cfg.batch, recipe.what, acts)
        val_ds = open_split(data_dir, "val", recipe.neighbours)
        state = _resume_state(out, recipe, rt, data_dir) if resuming else None
        rt.barrier()  # every rank has checked the folder before rank 0 touches it
        if rt.is_main and state is None:
            clear_run(out)
        ctx = Context(out, rt, train_ds, val_ds, data_summary(data_dir, train_ds, val_ds, recipe.neighbours))
        if recipe.one_pass is not None:
            return recipe.one_pass(ctx)
        learner = recipe.build(ctx)
        if rt.is_main:
            log.info(recipe.describe(learner, ctx))
        tracker = run_loop(out, learner, train_ds, val_ds, state, progress)
    return {"out": str(out), **tracker.info(), "losses": tracker.losses, "resumed_from": state.step if state else None,
            "device": str(rt.device), "precision": rt.precision, "world_size": rt.world_size}


def _resume_state(out: Path, recipe: Recipe, rt: Runtime, data_dir: str | Path) -> ResumeState:
    """The checkpoint to continue, after refusing a run of another method or settings."""
    stored = read_checkpoint_config(out)
    check_run_method(stored, recipe.method, out)
    recipe.check_resumable(stored)
    state = load_checkpoint(out, recipe.optimizers)
    if state.config.get("data", {}).get("path") != str(Path(data_dir).resolve()):
        log.warning("resuming on another dataset (%s, was %s)", data_dir, state.config.get("data", {}).get("path"))
    if state.progress.get("world_size", rt.world_size) != rt.world_size:
        log.warning("resuming with %d processes (was %d): not identical to an uninterrupted run",
                    rt.world_size, state.progress["world_size"])
    return state

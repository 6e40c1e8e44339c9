"""The step loop shared by the non-diffusion methods (baselines, segmenter).

A :class:`Learner` owns its networks, optimizers and loss; :func:`run_loop`
drives it with the diffusion trainer's bookkeeping: step-seeded batches, the
rich progress bar, ``log.csv``, validation when due and atomic checkpoints
(:mod:`seg2med.training.netstate`). Single process only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from seg2med.data.dataset import SliceDataset
from seg2med.errors import ConfigError
from seg2med.training.config import TrainConfig, out_of_time
from seg2med.training.netstate import NetsState, save_nets_checkpoint
from seg2med.training.runtime import Runtime
from seg2med.training.state import RunLog
from seg2med.training.trainer import Tracker, progress_bar

log = logging.getLogger(__name__)


def due(step: int, every: int, last: int) -> bool:
    """True at the last step and every ``every`` steps (``every`` = 0: only at the last)."""
    return step == last or (every > 0 and step % every == 0)


def require_single_process(rt: Runtime, method: str) -> None:
    if rt.distributed:
        raise ConfigError(f"method {method} trains in one process: torchrun (WORLD_SIZE > 1) is supported for ddpm only")


class Learner(ABC):
    """One method's networks, optimizers and objective (see :func:`run_loop`)."""

    method: str
    cfg: TrainConfig
    rt: Runtime
    scaler: torch.amp.GradScaler

    @abstractmethod
    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """File name -> state dict of everything saved with a checkpoint."""

    @abstractmethod
    def optimizer_states(self) -> dict[str, dict[str, Any]]:
        """Optimizer name -> state dict."""

    @abstractmethod
    def load(self, state: NetsState) -> None:
        """Restore networks, optimizers and loss scaler from a checkpoint."""

    @abstractmethod
    def batches(self, ds: SliceDataset, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of steps ``start + 1 .. stop`` (step-seeded)."""

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        """One optimisation step; returns the loss that is logged (the generator's objective)."""

    @abstractmethod
    def validate(self, step: int) -> float | None:
        """Validation loss (and, where meaningful, a PNG in ``val/``)."""

    @abstractmethod
    def run_config(self, tracker: Tracker) -> dict[str, Any]:
        """The ``config.json`` of a checkpoint."""

    def load_scaler(self, state: NetsState) -> None:
        if state.progress.get("scaler"):
            self.scaler.load_state_dict(state.progress["scaler"])


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                   scaler: torch.amp.GradScaler, grad_clip: float) -> None:
    """Backward, optional gradient clipping and the step of one optimizer (loss scaling aware)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)


def run_loop(out: Path, learner: Learner, train_ds: SliceDataset, val_ds: SliceDataset, state: NetsState | None,
             progress: bool) -> Tracker:
    """Train ``learner`` up to ``cfg.steps`` (from the checkpoint ``state`` if given); returns the tracker."""
    cfg = learner.cfg
    tracker = Tracker.resumed(state.progress) if state is not None else Tracker()
    start = tracker.step
    if state is not None:
        learner.load(state)
        log.info("resuming at step %d of %d", start, cfg.steps)
    runlog = RunLog(out, start if state is not None else None)
    if cfg.val_every and not len(val_ds):
        log.warning("the val split holds no slices: no validation")
    with progress_bar(progress, start, cfg.steps) as update:
        for step, batch in zip(range(start + 1, cfg.steps + 1), learner.batches(train_ds, start, cfg.steps)):
            tracker.add(step, learner.step(batch, step))
            stop = out_of_time(cfg, tracker.seconds)
            last = step if stop else cfg.steps
            validated = len(val_ds) > 0 and cfg.val_every > 0 and due(step, cfg.val_every, last)
            if validated:
                tracker.val_loss = learner.validate(step)
            if validated or due(step, cfg.log_every, last):
                loss, its = tracker.flush_window()
                runlog.append(step, loss, tracker.val_loss if validated else None, cfg.lr, its, tracker.seconds)
            if due(step, cfg.ckpt_every, last):
                progress_info = {**tracker.info(), "scaler": learner.scaler.state_dict(), "world_size": 1}
                save_nets_checkpoint(out, step, learner.run_config(tracker), learner.weights(), learner.optimizer_states(),
                                     progress_info)
                log.info("step %d: loss %.4f, checkpoint written", step, tracker.info()["final_loss"])
            update(step, tracker.losses[-1])
            if stop:
                log.info("time budget of %g min reached at step %d", cfg.max_minutes, step)
                break
    if start >= cfg.steps:
        log.info("%s: already at step %d (>= %d steps): nothing to train", out, start, cfg.steps)
    return tracker


def summary(out: Path, tracker: Tracker, rt: Runtime, resumed_from: int | None) -> dict[str, Any]:
    """What the train functions return (same keys as :func:`seg2med.training.train`)."""
    return {"out": str(out), **tracker.info(), "losses": tracker.losses, "resumed_from": resumed_from,
            "device": str(rt.device), "precision": rt.precision, "world_size": rt.world_size}

"""The training loop: conditional diffusion prior -> image on 2D slices, with exact resume and torchrun DDP.

Step ``s`` draws all its randomness (batch, augmentation, noise, timesteps)
from generators seeded by ``(seed, s[, rank])`` (:func:`step_generator`), so
an interrupted and resumed run reproduces an uninterrupted one bit for bit
(same device, precision and number of processes).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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
from seg2med.data.normalize import to_signed
from seg2med.errors import ConfigError
from seg2med.io.checkpoints import EMA_WEIGHTS, WEIGHTS, read_checkpoint_config
from seg2med.models.config import (
    ModelConfig,
    SchedulerConfig,
    build_model,
    build_scheduler,
    count_parameters,
)
from seg2med.sampling import training_target
from seg2med.training.config import TrainConfig, check_resumable, out_of_time
from seg2med.training.data import (
    StepBatches,
    augment,
    batches,
    check_batch_memory,
    check_slice_size,
    data_summary,
    ddpm_activation_bytes,
    open_split,
    require_slices,
)
from seg2med.training.ema import EMA
from seg2med.training.netstate import check_run_method
from seg2med.training.runtime import Runtime, runtime, step_generator, step_seed
from seg2med.training.state import (
    VAL,
    ResumeState,
    RunLog,
    check_out_dir,
    clear_run,
    load_checkpoint,
    save_checkpoint,
    step_name,
)
from seg2med.training.validation import save_grid, val_loss, val_samples

log = logging.getLogger(__name__)
LAST_LOSSES = 10


# --------------------------------------------------------------------------- the diffusion objective
def draw_timesteps(cfg: SchedulerConfig, scheduler: Any, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training timesteps for a CPU batch: uniform integers (DDPM) or the rectified-flow sampler, seeded by ``g``."""
    if cfg.kind != "rflow":
        return torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), generator=g)
    with torch.random.fork_rng(devices=[]):  # MONAI draws from the global RNG
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        return scheduler.sample_timesteps(x0)


def diffusion_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], g: torch.Generator, cfg: SchedulerConfig,
                   scheduler: Any, rt: Runtime) -> torch.Tensor:
    """MSE between the network output and its target for a batch in [0, 1] (mapped to [-1, 1])."""
    x0 = to_signed(batch["image"])
    noise = torch.randn(x0.shape, generator=g)
    t = draw_timesteps(cfg, scheduler, x0, g)
    x0, noise, t = x0.to(rt.device), noise.to(rt.device), t.to(rt.device)
    cond = to_signed(batch["prior"]).to(rt.device)
    noisy = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
    target = training_target(cfg, scheduler, x0, noise, t)
    with rt.autocast():
        pred = model(torch.cat([noisy, cond], dim=1), timesteps=t)
    return F.mse_loss(pred.float(), target.float())


# --------------------------------------------------------------------------- one training process
@dataclass
class Session:
    """The objects of one training process."""

    rt: Runtime
    net: torch.nn.Module  # the bare network (what is saved)
    model: torch.nn.Module  # net, or its DistributedDataParallel wrapper
    ema: EMA
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sched_cfg: SchedulerConfig
    scheduler: Any
    cfg: TrainConfig

    def step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        """One optimisation step; returns the loss (mean over processes)."""
        g = step_generator(self.cfg.seed, step, self.rt.rank)
        torch.manual_seed(step_seed(self.cfg.seed, step, self.rt.rank))  # anything using the global RNG
        batch = augment(batch, g, self.cfg.augment_flips, self.cfg.intensity_jitter)
        self.model.train()
        loss = diffusion_loss(self.model, batch, g, self.sched_cfg, self.scheduler, self.rt)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.ema.update(self.net, step)
        return self.rt.mean(loss.detach())

    def val_loss_fn(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
        return diffusion_loss(model, batch, g, self.sched_cfg, self.scheduler, self.rt)


def build_session(rt: Runtime, model_cfg: ModelConfig, sched_cfg: SchedulerConfig, cfg: TrainConfig,
                  state: ResumeState | None) -> Session:
    """Seeded network, EMA, Adam and loss scaler; loaded from ``state`` when resuming; DDP-wrapped under torchrun."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_model(model_cfg)
    if state is not None:
        net.load_state_dict(state.model)
    net.to(rt.device)
    ema = EMA(net, cfg.ema_decay)
    if state is not None:
        ema.load_state_dict(state.ema)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
    if state is not None:
        opt.load_state_dict(state.optimizer)
        if state.progress.get("scaler"):
            scaler.load_state_dict(state.progress["scaler"])
    model = net
    if rt.distributed:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    return Session(rt, net, model, ema, opt, scaler, sched_cfg, build_scheduler(sched_cfg), cfg)


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
def progress_bar(enabled: bool, start: int, total: int) -> Iterator[Any]:
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


def run_config(model_cfg: ModelConfig, sched_cfg: SchedulerConfig, cfg: TrainConfig, data: dict[str, Any],
               rt: Runtime, tracker: Tracker) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint (see :func:`train`)."""
    training = {"config": cfg.to_dict(), **tracker.info(), "device": str(rt.device), "precision": rt.precision,
                "world_size": rt.world_size}
    return {"method": "ddpm", "model": model_cfg.to_dict(), "scheduler": sched_cfg.to_dict(), "data": data,
            "training": training, "weights": {"model": WEIGHTS, "ema": EMA_WEIGHTS}}


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


# --------------------------------------------------------------------------- the run
@dataclass
class Run:
    """A training run in ``out``: the session plus what is written to the run folder (rank 0)."""

    out: Path
    s: Session
    model_cfg: ModelConfig
    data: dict[str, Any]
    val_ds: SliceDataset
    tracker: Tracker
    runlog: RunLog | None

    def validate(self, step: int) -> None:
        ema, cfg = self.s.ema.module, self.s.cfg
        self.tracker.val_loss = val_loss(ema, self.val_ds, self.s.val_loss_fn, cfg.batch, cfg.seed)
        prior, gen, real = val_samples(ema, self.val_ds, self.s.sched_cfg, self.s.rt, cfg.val_slices, cfg.val_steps, cfg.seed)
        save_grid(self.out / VAL / f"{step_name(step)}.png", prior, gen, real,
                  f"step {step} — val loss {self.tracker.val_loss:.4f} (EMA, {cfg.val_steps} steps)")

    def checkpoint(self, step: int) -> None:
        progress = {**self.tracker.info(), "scaler": self.s.scaler.state_dict(), "world_size": self.s.rt.world_size}
        config = run_config(self.model_cfg, self.s.sched_cfg, self.s.cfg, self.data, self.s.rt, self.tracker)
        save_checkpoint(self.out, step, config, self.s.net.state_dict(), self.s.ema.state_dict(), self.s.opt.state_dict(), progress)

    def after_step(self, step: int, last: int) -> None:
        """Validation, log row and checkpoint when due (rank 0); ``last`` is the final step of this run."""
        cfg = self.s.cfg
        validated = len(self.val_ds) > 0 and cfg.val_every > 0 and _due(step, cfg.val_every, last)
        if validated:
            self.validate(step)
        if validated or _due(step, cfg.log_every, last):
            loss, its = self.tracker.flush_window()
            self.runlog.append(step, loss, self.tracker.val_loss if validated else None, cfg.lr, its, self.tracker.seconds)
        if _due(step, cfg.ckpt_every, last):
            self.checkpoint(step)
            log.info("step %d: loss %.4f, checkpoint written", step, self.tracker.info()["final_loss"])


def _open_data(data_dir: str | Path, model_cfg: ModelConfig) -> tuple[SliceDataset, SliceDataset]:
    train_ds = open_split(data_dir, "train", model_cfg.neighbours)
    require_slices(train_ds, "train")
    check_slice_size(train_ds, len(model_cfg.channels))
    return train_ds, open_split(data_dir, "val", model_cfg.neighbours)


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    model_cfg: ModelConfig | None = None,
    scheduler_cfg: SchedulerConfig | None = None,
    train_cfg: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the conditional diffusion model prior -> image on a prepared slice dataset; returns a summary.

    ``out_dir`` receives ``config.json`` (keys ``method``, ``model``,
    ``scheduler``, ``data``, ``training``, ``weights``), ``model.safetensors``,
    ``ema.safetensors``, ``checkpoints/``, ``state/``, ``val/*.png`` and
    ``log.csv`` (see :mod:`seg2med.training.state`). An existing run is
    refused unless ``resume`` (continue it: same model, scheduler and
    optimisation settings, new ``steps`` total) or ``overwrite``. Under
    torchrun (``WORLD_SIZE`` > 1) each process trains on its share of the
    batch with DDP and only rank 0 writes.
    """
    model_cfg, scheduler_cfg, train_cfg = model_cfg or ModelConfig(), scheduler_cfg or SchedulerConfig(), train_cfg or TrainConfig()
    for cfg in (model_cfg, scheduler_cfg, train_cfg):  # checked again (they are mutable) before the run folder is touched
        cfg.__post_init__()
    out = Path(out_dir)
    with runtime(train_cfg.device, train_cfg.precision) as rt:
        if train_cfg.batch % rt.world_size:
            raise ConfigError(f"batch {train_cfg.batch} is not divisible by the {rt.world_size} processes")
        resuming = check_out_dir(out, resume, overwrite, data_dir)
        train_ds, val_ds = _open_data(data_dir, model_cfg)
        acts = ddpm_activation_bytes(model_cfg.channels, model_cfg.num_res_blocks) if rt.device.type == "cpu" else 0.0
        check_batch_memory(train_ds, train_cfg.batch, "train", acts)  # on a GPU only the batch is in host memory
        if resuming:
            check_run_method(read_checkpoint_config(out), "ddpm", out)
        state = load_checkpoint(out) if resuming else None
        if state is not None:
            check_resumable(state.config, model_cfg, scheduler_cfg, train_cfg)
            if state.config.get("data", {}).get("path") != str(Path(data_dir).resolve()):
                log.warning("resuming on another dataset (%s, was %s)", data_dir, state.config.get("data", {}).get("path"))
            if state.progress.get("world_size", rt.world_size) != rt.world_size:
                log.warning("resuming with %d processes (was %d): not identical to an uninterrupted run",
                            rt.world_size, state.progress["world_size"])
        rt.barrier()  # every rank has checked the folder before rank 0 touches it
        if rt.is_main and state is None:
            clear_run(out)
        session = build_session(rt, model_cfg, scheduler_cfg, train_cfg, state)
        tracker = Tracker.resumed(state.progress) if state is not None else Tracker()
        start = tracker.step
        data = data_summary(data_dir, train_ds, val_ds, model_cfg.neighbours)
        run = Run(out, session, model_cfg, data, val_ds, tracker, RunLog(out, start if state else None) if rt.is_main else None)
        if rt.is_main:
            _log_start(rt, model_cfg, session, train_ds, val_ds, start, train_cfg)
        sampler = StepBatches(len(train_ds), train_cfg.batch, train_cfg.seed, start, train_cfg.steps, rt.rank, rt.world_size)
        with progress_bar(progress and rt.is_main, start, train_cfg.steps) as update:
            for step, batch in zip(range(start + 1, train_cfg.steps + 1), batches(train_ds, sampler, train_cfg.num_workers)):
                tracker.add(step, session.step(batch, step))
                stop = rt.mean(torch.tensor(float(out_of_time(train_cfg, tracker.seconds)))) > 0  # any rank out of time
                if rt.is_main:
                    run.after_step(step, step if stop else train_cfg.steps)
                    update(step, tracker.losses[-1])
                if stop:
                    log.info("time budget of %g min reached at step %d", train_cfg.max_minutes, step)
                    break
        rt.barrier()
    if start >= train_cfg.steps and rt.is_main:
        log.info("%s: already at step %d (>= %d steps): nothing to train", out, start, train_cfg.steps)
    return {"out": str(out), **tracker.info(), "losses": tracker.losses, "resumed_from": start if state is not None else None,
            "device": str(rt.device), "precision": rt.precision, "world_size": rt.world_size}


def _log_start(rt: Runtime, model_cfg: ModelConfig, s: Session, train_ds: SliceDataset, val_ds: SliceDataset,
               start: int, cfg: TrainConfig) -> None:
    log.info("model %s (%.2f M parameters), %s %s, %d process(es), train %d slices, val %d slices",
             model_cfg.preset, count_parameters(s.net) / 1e6, rt.device, rt.precision, rt.world_size, len(train_ds), len(val_ds))
    if start:
        log.info("resuming at step %d of %d", start, cfg.steps)
    if cfg.val_every and not len(val_ds):
        log.warning("the val split holds no slices: no validation")

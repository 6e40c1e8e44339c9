"""The ``ddpm`` method: the conditional diffusion model prior -> image on 2D slices, with EMA and torchrun DDP.

Its :class:`DiffusionLearner` runs in the one loop of :mod:`seg2med.training.loop`;
step ``s`` draws all its randomness (batch, augmentation, noise, timesteps) from
generators seeded by ``(seed, s[, rank])`` (:func:`step_generator`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seg2med.data.dataset import SliceDataset
from seg2med.data.normalize import to_signed
from seg2med.io.checkpoints import EMA_WEIGHTS, WEIGHTS, read_checkpoint_config
from seg2med.models.config import (
    ModelConfig,
    SchedulerConfig,
    build_model,
    build_scheduler,
    count_parameters,
)
from seg2med.sampling import training_target
from seg2med.training.config import TrainConfig, check_resumable, resolve_configs
from seg2med.training.data import (
    StepBatches,
    augment_step,
    batches,
    check_channels,
    check_slice_size,
    ddpm_activation_bytes,
)
from seg2med.training.ema import EMA
from seg2med.training.loop import Context, Learner, Recipe, Tracker, new_scaler, optimizer_step, run_training
from seg2med.training.runtime import Runtime, step_generator, step_seed
from seg2med.training.state import SINGLE_OPTIMIZER, VAL, ResumeState, step_name
from seg2med.training.validation import save_grid, val_loss, val_samples
from seg2med.training.warmstart import check_compatible, init_from_run

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the diffusion objective
def draw_timesteps(cfg: SchedulerConfig, scheduler: Any, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training timesteps for a CPU batch: uniform integers (DDPM) or the rectified-flow sampler, seeded by ``g``."""
    if cfg.kind != "rflow":
        return torch.randint(0, cfg.num_train_timesteps, (x0.shape[0],), generator=g)
    with torch.random.fork_rng(devices=[]):  # MONAI draws from the global RNG
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        return scheduler.sample_timesteps(x0)


def diffusion_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], g: torch.Generator, cfg: SchedulerConfig,
                   scheduler: Any, rt: Runtime, model_cfg: ModelConfig) -> torch.Tensor:
    """MSE between the network output and its target for a batch in [0, 1] (mapped to [-1, 1])."""
    cond = to_signed(batch["prior"])
    x0 = model_cfg.to_sample(to_signed(batch["image"]), cond)  # the image, or its residual
    noise = torch.randn(x0.shape, generator=g)
    t = draw_timesteps(cfg, scheduler, x0, g)
    x0, noise, t, cond = x0.to(rt.device), noise.to(rt.device), t.to(rt.device), cond.to(rt.device)
    noisy = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
    target = training_target(cfg, scheduler, x0, noise, t)
    with rt.autocast():
        pred = model(torch.cat([noisy, cond], dim=1), timesteps=t)
    return F.mse_loss(pred.float(), target.float())


# --------------------------------------------------------------------------- the learner
class DiffusionLearner(Learner):
    """Seeded network, its EMA, Adam and the loss scaler; the network DDP-wrapped under torchrun."""

    method = "ddpm"

    def __init__(self, ctx: Context, model_cfg: ModelConfig, sched_cfg: SchedulerConfig, cfg: TrainConfig) -> None:
        self.out, self.rt, self.val_ds, self.data = ctx.out, ctx.rt, ctx.val_ds, ctx.data
        self.model_cfg, self.sched_cfg, self.cfg = model_cfg, sched_cfg, cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = build_model(model_cfg)  # the bare network (what is saved)
        self.init_record = init_from_run(self.net, cfg.init_from, model_cfg, sched_cfg) if cfg.init_from else None
        self.net = self.net.to(self.rt.device)
        self.ema = EMA(self.net, cfg.ema_decay)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.scaler = new_scaler(self.rt)
        self.model = self.net  # or its DistributedDataParallel wrapper
        if self.rt.distributed:
            dev = self.rt.device
            self.model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.scheduler = build_scheduler(sched_cfg)

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {WEIGHTS: self.net.state_dict(), EMA_WEIGHTS: self.ema.state_dict()}

    def optimizer_states(self) -> dict[str, dict[str, Any]]:
        return {SINGLE_OPTIMIZER: self.opt.state_dict()}

    def load(self, state: ResumeState) -> None:
        self.net.load_state_dict(state.weights[WEIGHTS])
        self.ema.load_state_dict(state.weights[EMA_WEIGHTS])
        self.opt.load_state_dict(state.optimizers[SINGLE_OPTIMIZER])
        self.load_scaler(state)

    def run_config(self, tracker: Tracker) -> dict[str, Any]:
        return {"method": "ddpm", "model": self.model_cfg.to_dict(), "scheduler": self.sched_cfg.to_dict(), "data": self.data,
                "training": {"config": self.cfg.to_dict(), **self.training_info(tracker),
                             **({"init_from": self.init_record} if self.init_record else {})},
                "weights": {"model": WEIGHTS, "ema": EMA_WEIGHTS}}

    def batches(self, ds: SliceDataset, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        rt, cfg = self.rt, self.cfg
        return batches(ds, StepBatches(len(ds), cfg.batch, cfg.seed, start, stop, rt.rank, rt.world_size), cfg.num_workers)

    def step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        g = step_generator(self.cfg.seed, step, self.rt.rank)
        torch.manual_seed(step_seed(self.cfg.seed, step, self.rt.rank))  # anything using the global RNG
        batch = augment_step(batch, g, self.cfg, self.data, self.method)
        self.model.train()
        loss = diffusion_loss(self.model, batch, g, self.sched_cfg, self.scheduler, self.rt, self.model_cfg)
        optimizer_step(loss, self.opt, list(self.net.parameters()), self.scaler, self.cfg.grad_clip)
        self.scaler.update()
        self.ema.update(self.net, step)
        return self.rt.mean(loss.detach())

    def validate(self, step: int) -> float | None:
        ema, cfg = self.ema.module, self.cfg

        def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
            return diffusion_loss(model, batch, g, self.sched_cfg, self.scheduler, self.rt, self.model_cfg)

        loss = val_loss(ema, self.val_ds, loss_fn, cfg.batch, cfg.seed)
        prior, gen, real = val_samples(ema, self.val_ds, self.sched_cfg, self.rt, cfg.val_slices, cfg.val_steps, cfg.seed,
                                       self.model_cfg)
        save_grid(self.out / VAL / f"{step_name(step)}.png", prior, gen, real,
                  f"step {step} — val loss {loss:.4f} (EMA, {cfg.val_steps} steps)")
        return loss


def diffusion_recipe(model_cfg: ModelConfig, sched_cfg: SchedulerConfig, cfg: TrainConfig) -> Recipe:
    """The ``ddpm`` method's part of a run (see :func:`seg2med.training.loop.run_training`)."""

    def describe(learner: Learner, ctx: Context) -> str:
        rt = ctx.rt
        return (f"model {model_cfg.preset} ({count_parameters(learner.net) / 1e6:.2f} M parameters), {rt.device} "
                f"{rt.precision}, {rt.world_size} process(es), train {len(ctx.train_ds)} slices, val {len(ctx.val_ds)} slices")

    if cfg.init_from:  # refused before the run folder is made
        check_compatible(Path(cfg.init_from), read_checkpoint_config(cfg.init_from), model_cfg, sched_cfg)
    return Recipe(
        method="ddpm", cfg=cfg, neighbours=model_cfg.neighbours, optimizers=(SINGLE_OPTIMIZER,), multi_process=True,
        activation_bytes=ddpm_activation_bytes(model_cfg.channels, model_cfg.num_res_blocks),
        check_data=lambda ds: (check_slice_size(ds, len(model_cfg.channels)), check_channels(ds, model_cfg.image_channels)),
        check_resumable=lambda stored: check_resumable(stored, model_cfg, sched_cfg, cfg),
        build=lambda ctx: DiffusionLearner(ctx, model_cfg, sched_cfg, cfg),
        describe=describe,
    )


def recipe_from_options(method: str, preset: str | None = None, blocks: Mapping[str, Any] | None = None,
                        model: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
                        training: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> Recipe:
    """The method registry's builder: configs combined as in :func:`seg2med.training.resolve_configs`."""
    model_cfg, sched_cfg, train_cfg = resolve_configs(preset, blocks, model=model, scheduler=scheduler, training=training,
                                                      base=base)
    return diffusion_recipe(model_cfg, sched_cfg, train_cfg)


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
    ``log.csv`` (see :mod:`seg2med.training.state`); ``resume`` / ``overwrite``
    and torchrun as in :func:`seg2med.training.loop.run_training`.
    """
    model_cfg, scheduler_cfg, train_cfg = model_cfg or ModelConfig(), scheduler_cfg or SchedulerConfig(), train_cfg or TrainConfig()
    for cfg in (model_cfg, scheduler_cfg, train_cfg):  # checked again (they are mutable) before the run folder is touched
        cfg.__post_init__()
    return run_training(diffusion_recipe(model_cfg, scheduler_cfg, train_cfg), data_dir, out_dir, resume=resume,
                        overwrite=overwrite, progress=progress)

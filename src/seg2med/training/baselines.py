"""Baselines trained by the same pipeline and data as the diffusion model: ``unet``, ``pix2pix``, ``cyclegan``, ``prior``.

* ``unet``: AttentionUnet regression prior -> image, L1, Adam (betas 0.9, 0.999).
* ``pix2pix``: the same generator + a conditional PatchDiscriminator on
  (prior, image); LSGAN + ``lambda_l1`` (100) x L1; Adam(lr, betas 0.5, 0.999).
* ``cyclegan``: generators G prior -> image and F image -> prior, a
  PatchDiscriminator per domain; LSGAN + ``lambda_cycle`` (10) x cycle L1 +
  ``lambda_identity`` (0.5) x ``lambda_cycle`` x identity L1. Image and prior
  batches are drawn with independent step-seeded indices (unpaired). With
  2.5D conditions (``neighbours`` k > 0) the identity terms feed G the image
  repeated over the 1 + 2k channels and F the centre prior slice. No image
  pool (history buffer) is used.
* ``prior``: no learning (:func:`train_prior`): the floor. The prior is mapped
  to the target range by ``image01 = clip(a * prior01 + b, 0, 1)`` with
  ``(a, b)`` fitted by least squares over every body pixel of the train
  split, in the dataset's normalised [0, 1] units; generation denormalises
  with ``data.image_normalization`` exactly like the other methods.

Generators work in [-1, 1] like the diffusion model. Every step draws its
batch, augmentation and any global randomness from ``(seed, step)``, so runs
are exactly reproducible and resumable (single process; torchrun is for
``ddpm``). The run folder has the diffusion layout (see
:mod:`seg2med.training.state`); ``config.json`` holds ``method``,
``model`` (:class:`~seg2med.models.baselines.BaselineConfig`: every network
as a MONAI class + constructor arguments), ``data`` (as for ``ddpm``),
``training`` (options, objective, progress) and ``weights`` (``model`` = the
prior -> image generator, ``ema`` its moving average, then one file per
other network).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from seg2med.checks import check_int
from seg2med.data.dataset import SliceDataset
from seg2med.data.normalize import to_signed, to_unit
from seg2med.errors import ConfigError
from seg2med.io.checkpoints import EMA_WEIGHTS, WEIGHTS, write_checkpoint_config
from seg2med.models.baselines import (
    BASELINE_PRESETS,
    METHOD_NETWORKS,
    BaselineConfig,
    OneShotGenerator,
    PriorMap,
    apply_activation,
)
from seg2med.models.config import count_parameters
from seg2med.models.registry import BASELINE_METHODS, check_method
from seg2med.training.config import TRAJECTORY_FIELDS, TrainConfig, _block, check_blocks, check_trajectory_unchanged
from seg2med.training.data import StepBatches, augment_step, batch_indices, batches, collate
from seg2med.training.ema import EMA
from seg2med.training.loop import Context, Learner, Recipe, Tracker, new_scaler, optimizer_step, run_training
from seg2med.training.runtime import step_generator, step_seed
from seg2med.training.state import VAL, ResumeState, step_name
from seg2med.training.validation import save_grid, spread, val_loss

log = logging.getLogger(__name__)

#: Optimizer name -> the networks it updates.
OPTIMIZERS: dict[str, dict[str, tuple[str, ...]]] = {
    "unet": {"generator": ("generator",)},
    "pix2pix": {"generator": ("generator",), "discriminator": ("discriminator",)},
    "cyclegan": {"generators": ("generator", "generator_inverse"),
                 "discriminators": ("discriminator_image", "discriminator_prior")},
}
DEFAULT_BETA1 = {"unet": 0.9, "pix2pix": 0.5, "cyclegan": 0.5}
BASELINE_TRAJECTORY = (*TRAJECTORY_FIELDS, "lambda_l1", "lambda_cycle", "lambda_identity", "beta1", "beta2")
MODEL_KEYS = ("preset", "neighbours", "generator", "discriminator", "output_activation")
PRIOR_STREAM = 1 << 20  # "rank" key of the unpaired prior indices (never a real rank)


# --------------------------------------------------------------------------- options
@dataclass
class BaselineTrainConfig(TrainConfig):
    """:class:`TrainConfig` plus the loss weights and Adam betas of the baselines.

    ``beta1`` None means the method's default (0.9 for unet, 0.5 for the GANs);
    the resolved value is stored in the run. ``val_steps`` is unused.
    """

    lambda_l1: float = 100.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # times lambda_cycle
    beta1: float | None = None
    beta2: float = 0.999

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lambda_l1, self.lambda_cycle, self.lambda_identity = (float(v) for v in
                                                                   (self.lambda_l1, self.lambda_cycle, self.lambda_identity))
        if min(self.lambda_l1, self.lambda_cycle, self.lambda_identity) < 0:
            raise ConfigError("training: lambda_l1, lambda_cycle and lambda_identity must be >= 0")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= float(v) < 1.0:
                raise ConfigError(f"training: {name} must be in [0, 1), got {v}")
        self.beta2 = float(self.beta2)

    def for_method(self, method: str) -> BaselineTrainConfig:
        """A copy with ``beta1`` resolved for ``method``."""
        return dataclasses.replace(self, beta1=DEFAULT_BETA1[method] if self.beta1 is None else float(self.beta1))

    @classmethod
    def from_train_config(cls, cfg: TrainConfig | None) -> BaselineTrainConfig:
        if cfg is None:
            return cls()
        return cfg if isinstance(cfg, cls) else cls(**cfg.to_dict())


def resolve_baseline_configs(
    method: str,
    preset: str | None = None,
    blocks: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> tuple[BaselineConfig, BaselineTrainConfig]:
    """Like :func:`seg2med.training.resolve_configs` for a baseline (defaults/``base`` < preset < YAML < explicit).

    The YAML ``model:`` block may hold ``preset``, ``neighbours``,
    ``generator`` / ``discriminator`` (constructor-argument overrides, e.g.
    ``channels``) and ``output_activation``; a ``scheduler:`` block is an error.
    """
    method = check_method(method, BASELINE_METHODS)
    blocks = check_blocks(blocks)
    if blocks.get("scheduler"):
        raise ConfigError(f"config file: a scheduler: block only applies to --method ddpm, not {method}")
    m_over = {**_block(blocks, "model"), **dict(model or {})}
    unknown = sorted(set(m_over) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"model config of {method}: unknown keys {unknown} (known: {list(MODEL_KEYS)})")
    name = preset or m_over.pop("preset", None)
    m_over.pop("preset", None)
    if name is None and base is not None and not m_over:
        model_cfg = BaselineConfig.from_dict(base["model"], method)
    else:
        if name is None and base is not None:
            name = base["model"].get("preset", "small")
        if name is not None and name not in BASELINE_PRESETS:
            raise ConfigError(f"unknown model preset {name!r} (known: {', '.join(BASELINE_PRESETS)})")
        model_cfg = BaselineConfig.create(method, name or "small", **m_over)
    t_base = {}
    if base is not None:
        known = {f.name for f in dataclasses.fields(BaselineTrainConfig)}
        t_base = {k: v for k, v in base.get("training", {}).get("config", {}).items() if k in known}
    train_cfg = BaselineTrainConfig.from_dict({**t_base, **_block(blocks, "training"), **dict(training or {})})
    return model_cfg, train_cfg


def check_baseline_resumable(stored: Mapping[str, Any], model_cfg: BaselineConfig, cfg: BaselineTrainConfig) -> None:
    """Refuse to resume a baseline run with other networks or optimisation settings."""
    old = BaselineConfig.from_dict(stored["model"], stored.get("method")).to_dict()
    new = model_cfg.to_dict()
    changed = sorted(k for k in new if k != "networks" and old.get(k) != new[k])
    changed += sorted(f"networks.{k}" for k in new["networks"] if old["networks"].get(k) != new["networks"][k])
    if changed:
        raise ConfigError(f"resume: the run was trained with other networks ({', '.join(changed)} differ)")
    check_trajectory_unchanged(stored, cfg, BASELINE_TRAJECTORY)


# --------------------------------------------------------------------------- unpaired batches (cyclegan)
class UnpairedBatches(Sampler[list[int]]):
    """Per step: the image indices of :func:`batch_indices` followed by independently drawn prior indices."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int) -> None:
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start + 1, self.stop + 1):
            g = step_generator(self.seed, step, PRIOR_STREAM)
            prior_idx = (torch.randperm(self.n, generator=g)[: self.batch] if self.n >= self.batch
                         else torch.randint(self.n, (self.batch,), generator=g))
            yield batch_indices(self.n, self.batch, self.seed, step, 0, 1) + prior_idx.tolist()

    def __len__(self) -> int:
        return self.stop - self.start


def collate_unpaired(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """First half: image (and its body mask); second half: prior (another slice)."""
    half = len(items) // 2
    out = collate(items[:half])
    out["prior"] = torch.stack([it["prior"] for it in items[half:]])
    return out


# --------------------------------------------------------------------------- the learner
def _objective(method: str, cfg: BaselineTrainConfig) -> str:
    if method == "unet":
        return "L1(G(prior), image)"
    if method == "pix2pix":
        return f"LSGAN(D(prior, G(prior))) + {cfg.lambda_l1:g} * L1(G(prior), image); D: LSGAN real/fake on (prior, image)"
    return (f"LSGAN(D_image(G(prior))) + LSGAN(D_prior(F(image))) + {cfg.lambda_cycle:g} * [L1(F(G(prior)), prior) + "
            f"L1(G(F(image)), image)] + {cfg.lambda_cycle * cfg.lambda_identity:g} * [L1(G(image), image) + "
            "L1(F(prior), prior)]; unpaired batches")


def _params(*nets: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(itertools.chain.from_iterable(n.parameters() for n in nets))


class BaselineLearner(Learner):
    """Networks, EMA of the generator, optimizers and the objective of one baseline method."""

    def __init__(self, ctx: Context, model_cfg: BaselineConfig, cfg: BaselineTrainConfig) -> None:
        self.out, self.rt, self.val_ds, self.data = ctx.out, ctx.rt, ctx.val_ds, ctx.data
        self.model_cfg, self.cfg, self.method = model_cfg, cfg, model_cfg.method
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.nets = {name: model_cfg.build(name).to(self.rt.device) for name in METHOD_NETWORKS[self.method]}
        self.ema = EMA(self.nets["generator"], cfg.ema_decay)
        self.opts = {name: torch.optim.Adam(_params(*(self.nets[n] for n in nets)), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
                     for name, nets in OPTIMIZERS[self.method].items()}
        self.scaler = new_scaler(self.rt)
        from monai.losses import PatchAdversarialLoss

        self.adv = PatchAdversarialLoss(criterion="least_squares")
        self.parts: dict[str, float] = {}

    # -- files
    @staticmethod
    def files(method: str) -> dict[str, str]:
        """The ``weights`` block: model / ema = the generator, then ``<network>.safetensors``."""
        names = {"model": WEIGHTS, "ema": EMA_WEIGHTS}
        names.update({n: f"{n}.safetensors" for n in METHOD_NETWORKS[method] if n != "generator"})
        return names

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        files = self.files(self.method)
        out = {files["model"]: self.nets["generator"].state_dict(), files["ema"]: self.ema.state_dict()}
        out.update({files[n]: net.state_dict() for n, net in self.nets.items() if n != "generator"})
        return out

    def optimizer_states(self) -> dict[str, dict[str, Any]]:
        return {n: o.state_dict() for n, o in self.opts.items()}

    def load(self, state: ResumeState) -> None:
        files = self.files(self.method)
        self.nets["generator"].load_state_dict(state.weights[files["model"]])
        self.ema.load_state_dict(state.weights[files["ema"]])
        for n, net in self.nets.items():
            if n != "generator":
                net.load_state_dict(state.weights[files[n]])
        for n, o in self.opts.items():
            o.load_state_dict(state.optimizers[n])
        self.load_scaler(state)

    def run_config(self, tracker: Tracker) -> dict[str, Any]:
        training = {"config": self.cfg.to_dict(), "objective": _objective(self.method, self.cfg), **self.training_info(tracker)}
        return {"method": self.method, "model": self.model_cfg.to_dict(), "data": self.data, "training": training,
                "weights": self.files(self.method)}

    # -- data
    def batches(self, ds: SliceDataset, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.cfg
        if self.method != "cyclegan":
            return batches(ds, StepBatches(len(ds), cfg.batch, cfg.seed, start, stop), cfg.num_workers)
        sampler = UnpairedBatches(len(ds), cfg.batch, cfg.seed, start, stop)
        if cfg.num_workers == 0:
            return (collate_unpaired([ds[i] for i in idx]) for idx in sampler)
        return iter(DataLoader(ds, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate_unpaired,
                               pin_memory=torch.cuda.is_available()))

    # -- optimisation
    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return apply_activation(x, self.model_cfg.output_activation)

    def step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        g = step_generator(self.cfg.seed, step, 0)
        torch.manual_seed(step_seed(self.cfg.seed, step, 0))  # anything using the global RNG (dropout)
        batch = augment_step(batch, g, self.cfg, self.data, self.method)
        for net in self.nets.values():
            net.train()
        cond = to_signed(batch["prior"]).to(self.rt.device)
        real = to_signed(batch["image"]).to(self.rt.device)
        loss = {"unet": self._unet, "pix2pix": self._pix2pix, "cyclegan": self._cyclegan}[self.method](cond, real)
        self.scaler.update()
        self.ema.update(self.nets["generator"], step)
        return loss

    def _unet(self, cond: torch.Tensor, real: torch.Tensor) -> float:
        gen = self.nets["generator"]
        with self.rt.autocast():
            pred = self._act(gen(cond))
        loss = F.l1_loss(pred.float(), real)
        optimizer_step(loss, self.opts["generator"], _params(gen), self.scaler, self.cfg.grad_clip)
        self.parts = {"l1": float(loss.detach())}
        return float(loss.detach())

    def _pix2pix(self, cond: torch.Tensor, real: torch.Tensor) -> float:
        gen, disc = self.nets["generator"], self.nets["discriminator"]
        with self.rt.autocast():
            fake = self._act(gen(cond))
            d_real = disc(torch.cat([cond, real], dim=1))[-1]
            d_fake = disc(torch.cat([cond, fake.detach()], dim=1))[-1]
        d_loss = 0.5 * (self.adv(d_real.float(), target_is_real=True, for_discriminator=True)
                        + self.adv(d_fake.float(), target_is_real=False, for_discriminator=True))
        optimizer_step(d_loss, self.opts["discriminator"], _params(disc), self.scaler, self.cfg.grad_clip)
        disc.requires_grad_(False)
        with self.rt.autocast():
            g_fake = disc(torch.cat([cond, fake], dim=1))[-1]
        l1 = F.l1_loss(fake.float(), real)
        g_adv = self.adv(g_fake.float(), target_is_real=True, for_discriminator=False)
        g_loss = g_adv + self.cfg.lambda_l1 * l1
        optimizer_step(g_loss, self.opts["generator"], _params(gen), self.scaler, self.cfg.grad_clip)
        disc.requires_grad_(True)
        self.parts = {"l1": float(l1.detach()), "g_adv": float(g_adv.detach()), "d": float(d_loss.detach())}
        return float(g_loss.detach())

    def _cyclegan(self, prior: torch.Tensor, image: torch.Tensor) -> float:
        n = self.nets
        gen, inv, d_img, d_pri = n["generator"], n["generator_inverse"], n["discriminator_image"], n["discriminator_prior"]
        k, c = self.model_cfg.neighbours, self.model_cfg.condition_channels
        lam_c, lam_i = self.cfg.lambda_cycle, self.cfg.lambda_cycle * self.cfg.lambda_identity
        d_img.requires_grad_(False)
        d_pri.requires_grad_(False)
        with self.rt.autocast():
            fake_img = self._act(gen(prior))
            rec_prior = self._act(inv(fake_img))
            fake_prior = self._act(inv(image))
            rec_img = self._act(gen(fake_prior))
            adv = (self.adv(d_img(fake_img)[-1].float(), target_is_real=True, for_discriminator=False)
                   + self.adv(d_pri(fake_prior)[-1].float(), target_is_real=True, for_discriminator=False))
            idt_img = self._act(gen(image.expand(-1, c, -1, -1))) if lam_i > 0 else None
            idt_prior = self._act(inv(prior[:, k : k + 1])) if lam_i > 0 else None
        cycle = F.l1_loss(rec_prior.float(), prior) + F.l1_loss(rec_img.float(), image)
        idt = (F.l1_loss(idt_img.float(), image) + F.l1_loss(idt_prior.float(), prior)) if lam_i > 0 else torch.zeros(())
        g_loss = adv + lam_c * cycle + lam_i * idt.to(adv.device)
        optimizer_step(g_loss, self.opts["generators"], _params(gen, inv), self.scaler, self.cfg.grad_clip)
        d_img.requires_grad_(True)
        d_pri.requires_grad_(True)
        with self.rt.autocast():
            ri, fi = d_img(image)[-1].float(), d_img(fake_img.detach())[-1].float()
            rp, fp = d_pri(prior)[-1].float(), d_pri(fake_prior.detach())[-1].float()
        d_loss = 0.5 * (self.adv(ri, target_is_real=True, for_discriminator=True)
                        + self.adv(fi, target_is_real=False, for_discriminator=True)) \
            + 0.5 * (self.adv(rp, target_is_real=True, for_discriminator=True)
                     + self.adv(fp, target_is_real=False, for_discriminator=True))
        optimizer_step(d_loss, self.opts["discriminators"], _params(d_img, d_pri), self.scaler, self.cfg.grad_clip)
        self.parts = {"cycle": float(cycle.detach()), "identity": float(idt.detach()), "g_adv": float(adv.detach()),
                      "d": float(d_loss.detach())}
        return float(g_loss.detach())

    # -- validation
    def generator(self) -> OneShotGenerator:
        """The EMA generator as used for generation (condition in [-1, 1] -> image in [-1, 1])."""
        return OneShotGenerator(self.ema.module, self.model_cfg.output_activation)

    @torch.no_grad()
    def validate(self, step: int) -> float | None:
        gen, dev = self.generator(), self.rt.device

        def l1(model: torch.nn.Module, b: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
            with self.rt.autocast():
                out = model(to_signed(b["prior"]).to(dev))
            return F.l1_loss(out.float(), to_signed(b["image"]).to(dev))

        loss = val_loss(gen, self.val_ds, l1, self.cfg.batch, self.cfg.seed)
        b = collate([self.val_ds[i] for i in spread(len(self.val_ds), self.cfg.val_slices)])
        with self.rt.autocast():
            out = gen(to_signed(b["prior"]).to(dev))
        out01 = to_unit(out.float().cpu()).clamp(0.0, 1.0) * b["mask"]
        k = self.model_cfg.neighbours
        save_grid(self.out / VAL / f"{step_name(step)}.png", b["prior"][:, k].numpy(), out01[:, 0].numpy(),
                  b["image"][:, 0].numpy(), f"{self.method} step {step} — val L1 {loss:.4f} (EMA)")
        return loss


# --------------------------------------------------------------------------- entry points
def baseline_recipe(method: str, model_cfg: BaselineConfig, cfg: BaselineTrainConfig) -> Recipe:
    """The ``unet`` / ``pix2pix`` / ``cyclegan`` part of a run (see :func:`seg2med.training.loop.run_training`)."""

    def describe(learner: Learner, ctx: Context) -> str:
        n_params = sum(count_parameters(n) for n in learner.nets.values()) / 1e6
        return (f"{method}: {model_cfg.preset} ({n_params:.2f} M parameters in {len(learner.nets)} network(s)), "
                f"{ctx.rt.device} {ctx.rt.precision}, train {len(ctx.train_ds)} slices, val {len(ctx.val_ds)} slices")

    return Recipe(
        method=method, cfg=cfg, neighbours=model_cfg.neighbours, optimizers=tuple(OPTIMIZERS[method]),
        what=f"train --method {method}", batch_items=2 * cfg.batch if method == "cyclegan" else cfg.batch,
        check_data=lambda ds: model_cfg.check_slice_size(ds.manifest["config"]["size"], str(ds.root)),
        check_resumable=lambda stored: check_baseline_resumable(stored, model_cfg, cfg),
        build=lambda ctx: BaselineLearner(ctx, model_cfg, cfg), describe=describe,
    )


def recipe_from_options(method: str, preset: str | None = None, blocks: Mapping[str, Any] | None = None,
                        model: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
                        training: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> Recipe:
    """The method registry's builder for ``unet`` / ``pix2pix`` / ``cyclegan`` (see :func:`resolve_baseline_configs`;
    ``scheduler`` is refused before, by :func:`seg2med.training.train_method`)."""
    model_cfg, train_cfg = resolve_baseline_configs(method, preset, blocks, model=model, training=training, base=base)
    return baseline_recipe(model_cfg.method, model_cfg, train_cfg.for_method(model_cfg.method))


def train_baseline(
    data_dir: str | Path,
    out_dir: str | Path,
    method: str,
    model_cfg: BaselineConfig | None = None,
    train_cfg: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the ``unet`` / ``pix2pix`` / ``cyclegan`` baseline prior -> image; returns a summary like :func:`train`.

    ``model_cfg`` defaults to ``BaselineConfig.create(method)`` (preset small);
    ``train_cfg`` may be a plain :class:`TrainConfig` (baseline loss weights at
    their defaults). ``resume`` continues a run of the same method, networks
    and optimisation settings; a run of another method is refused.
    """
    method = check_method(method, BASELINE_METHODS)
    model_cfg = model_cfg or BaselineConfig.create(method)
    if model_cfg.method != method:
        raise ConfigError(f"model config is for method {model_cfg.method!r}, not {method!r}")
    cfg = BaselineTrainConfig.from_train_config(train_cfg).for_method(method)
    return run_training(baseline_recipe(method, model_cfg, cfg), data_dir, out_dir, resume=resume, overwrite=overwrite,
                        progress=progress)


def _fit_sums(ds: SliceDataset, k: int, chunk: int = 64) -> np.ndarray:
    """(n, sum x, sum y, sum xx, sum xy, sum yy) over body pixels, x = centre prior, y = image (float64)."""
    s = np.zeros(6)
    for start in range(0, len(ds), chunk):
        b = collate([ds[i] for i in range(start, min(len(ds), start + chunk))])
        m = b["mask"][:, 0].numpy() > 0
        x = b["prior"][:, k].numpy()[m].astype(np.float64)
        y = b["image"][:, 0].numpy()[m].astype(np.float64)
        s += (x.size, x.sum(), y.sum(), (x * x).sum(), (x * y).sum(), (y * y).sum())
    return s


def fit_prior_map(ds: SliceDataset, neighbours: int = 0) -> tuple[PriorMap, dict[str, Any]]:
    """Least-squares ``image01 ~ a * prior01 + b`` over the body pixels of ``ds``; returns the map and fit statistics."""
    n, sx, sy, sxx, sxy, syy = _fit_sums(ds, neighbours)
    if n == 0:
        raise ConfigError(f"{ds.root}: no body pixel in the train split to fit the prior map on")
    mx, my = sx / n, sy / n
    vx, vy, cxy = sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my
    if vx <= 1e-12:
        log.warning("the prior is constant inside the body: the prior map is the mean image value")
        a = 0.0
    else:
        a = cxy / vx
    b = my - a * mx
    r2 = (cxy * cxy / (vx * vy)) if vx > 1e-12 and vy > 1e-12 else 0.0
    return PriorMap(a, b, neighbours), {"split": ds.split, "slices": len(ds), "pixels": int(n), "r2": float(r2),
                                        "method": "least squares inside the body mask, normalised [0, 1] units"}


def _prior_val(pm: PriorMap, ds: SliceDataset, k: int, out: Path, val_slices: int) -> dict[str, float] | None:
    """Val MAE (normalised units, body pixels) of the map and of the identity, and the validation PNG."""
    if not len(ds):
        return None
    err_fit = err_id = count = 0.0
    for start in range(0, len(ds), 64):
        b = collate([ds[i] for i in range(start, min(len(ds), start + 64))])
        m = b["mask"][:, 0] > 0
        x, y = b["prior"][:, k][m].double(), b["image"][:, 0][m].double()
        err_fit += float((pm.map01(x) - y).abs().sum())
        err_id += float((x - y).abs().sum())
        count += int(m.sum())
    b = collate([ds[i] for i in spread(len(ds), val_slices)])
    gen = pm.map01(b["prior"][:, k]) * b["mask"][:, 0]
    res = {"mae01": err_fit / max(count, 1.0), "mae01_identity": err_id / max(count, 1.0)}
    save_grid(out / VAL / f"{step_name(0)}.png", b["prior"][:, k].numpy(), gen.numpy(), b["image"][:, 0].numpy(),
              f"prior map {pm.scale:.3f} x + {pm.offset:.3f} — val MAE {res['mae01']:.4f}")
    return res


def prior_recipe(neighbours: int = 0, cfg: TrainConfig | None = None) -> Recipe:
    """The ``prior`` method's part of a run: no steps, one least-squares fit (:func:`fit_prior_map`)."""
    cfg = cfg or TrainConfig()

    def fit(ctx: Context) -> dict[str, Any]:
        t0 = time.perf_counter()
        pm, fit = fit_prior_map(ctx.train_ds, neighbours)
        val = _prior_val(pm, ctx.val_ds, neighbours, ctx.out, cfg.val_slices)
        seconds = time.perf_counter() - t0
        training = {"config": {"seed": cfg.seed, "val_slices": cfg.val_slices}, "step": 0, "seconds": round(seconds, 3),
                    "final_loss": None, "last_losses": [], "val_loss": None if val is None else val["mae01"], "val": val,
                    "device": "cpu", "precision": "fp32", "world_size": 1}
        config = {"method": "prior", "model": {**pm.to_dict(), "fit": fit}, "data": ctx.data, "training": training,
                  "weights": {}}
        write_checkpoint_config(ctx.out, config)
        log.info("prior map: image01 = %.4f * prior01 + %.4f (R^2 %.3f on %d train pixels)", pm.scale, pm.offset,
                 fit["r2"], fit["pixels"])
        return {"out": str(ctx.out), "step": 0, "seconds": round(seconds, 3), "final_loss": None, "last_losses": [],
                "val_loss": training["val_loss"], "losses": [], "resumed_from": None, "device": "cpu",
                "precision": "fp32", "world_size": 1, "scale": pm.scale, "offset": pm.offset}

    return Recipe(method="prior", cfg=cfg, neighbours=neighbours, one_pass=fit)


def prior_options(blocks: Mapping[str, Any] | None, model: Mapping[str, Any] | None = None,
                  training: Mapping[str, Any] | None = None) -> tuple[int, TrainConfig]:
    """``(neighbours, train config)`` of the ``prior`` method: its model block takes only ``neighbours``."""
    m_over = {**_block(check_blocks(blocks), "model"), **dict(model or {})}
    unknown = sorted(set(m_over) - {"neighbours", "preset"})
    if unknown:
        raise ConfigError(f"model config of prior: unknown keys {unknown} (the prior method takes only neighbours)")
    _, train_cfg = resolve_baseline_configs("unet", None, {"training": _block(check_blocks(blocks), "training")},
                                            training=training)
    return check_int(m_over.get("neighbours", 0), "model: neighbours", minimum=0), train_cfg


def prior_recipe_from_options(method: str, preset: str | None = None, blocks: Mapping[str, Any] | None = None,
                              model: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
                              training: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> Recipe:
    """The method registry's builder for ``prior`` (only ``neighbours`` and the validation options apply)."""
    neighbours, train_cfg = prior_options(blocks, model, training)
    return prior_recipe(neighbours, train_cfg)


def train_prior(
    data_dir: str | Path,
    out_dir: str | Path,
    neighbours: int = 0,
    train_cfg: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The ``prior`` method (no learning): fit the affine intensity map on the train split and write the run folder.

    The run folder holds ``config.json`` (``method: prior``; ``model`` = the
    map, see :class:`~seg2med.models.baselines.PriorMap`, with fit statistics;
    ``data`` as for ``ddpm``; ``weights`` empty) and ``val/step_000000.png``.
    """
    return run_training(prior_recipe(neighbours, train_cfg), data_dir, out_dir, resume=resume, overwrite=overwrite,
                        progress=False)

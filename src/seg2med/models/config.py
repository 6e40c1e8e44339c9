"""Model and noise-schedule configuration (JSON-ready dataclasses) and their MONAI builders.

The conditional model is seg2med's "2-channel DDPM": MONAI's 2D
``DiffusionModelUNet`` whose input is the noisy image concatenated with the
physics prior (plus, for 2.5D, ``neighbours`` prior slices on each side).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seg2med.checks import check_int, check_positive
from seg2med.errors import ConfigError

#: Architecture presets. ``paper`` follows the seg2med paper; ``small`` and
#: ``tiny`` are CPU-sized. Any field can be overridden (YAML ``model:`` block).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "channels": (64, 128, 256, 256),
        "num_res_blocks": 2,
        "attention_levels": (False, False, False, True),
        "num_head_channels": 32,
        "norm_num_groups": 32,
    },
    "small": {
        "channels": (32, 64, 128, 128),
        "num_res_blocks": 2,
        "attention_levels": (False, False, False, True),
        "num_head_channels": 32,
        "norm_num_groups": 32,
    },
    "tiny": {
        "channels": (16, 32, 64, 64),
        "num_res_blocks": 1,
        "attention_levels": (False, False, False, True),
        "num_head_channels": 16,
        "norm_num_groups": 16,
    },
}

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SCHEDULES = ("linear_beta", "scaled_linear_beta")
KINDS = ("ddpm", "rflow")


def _int_list(value: Any, option: str, what: str) -> tuple[int, ...]:
    """A non-empty list (or tuple) of integers >= 1 (whole floats from YAML accepted)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{option} must be {what}, got {value!r}")
    try:
        return tuple(check_int(v, option) for v in value)
    except ConfigError:
        raise ConfigError(f"{option} must be {what}, got {list(value)!r}") from None


def _bool_list(value: Any, option: str) -> tuple[bool, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, bool) for a in value):
        raise ConfigError(f"{option} must be a list of true/false flags, one per level, got {value!r}")
    return tuple(value)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (stored in every checkpoint's config.json)."""

    preset: str = "small"
    channels: tuple[int, ...] = PRESETS["small"]["channels"]
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = PRESETS["small"]["attention_levels"]
    num_head_channels: int = 32
    norm_num_groups: int = 32
    image_channels: int = 1
    neighbours: int = 0  # 2.5D: +-k neighbouring prior slices as extra condition channels
    residual: bool = False  # the diffusion runs on (image - prior) / 2; the prior is added back after sampling

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ConfigError(f"model: preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        self.channels = _int_list(self.channels, "model: channels", "a list of positive integers, one per level")
        self.attention_levels = _bool_list(self.attention_levels, "model: attention_levels")
        if len(self.channels) != len(self.attention_levels):
            raise ConfigError(f"model: {len(self.channels)} channel levels but {len(self.attention_levels)} attention flags "
                              f"(channels and attention_levels must have the same length)")
        self.num_res_blocks = check_int(self.num_res_blocks, "model: num_res_blocks")
        self.num_head_channels = check_int(self.num_head_channels, "model: num_head_channels")
        self.norm_num_groups = check_int(self.norm_num_groups, "model: norm_num_groups")
        self.image_channels = check_int(self.image_channels, "model: image_channels")
        self.neighbours = check_int(self.neighbours, "model: neighbours", minimum=0)
        if not isinstance(self.residual, bool):
            raise ConfigError(f"model: residual must be true or false, got {self.residual!r}")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ConfigError(f"model: every channel count {self.channels} must be divisible by norm_num_groups={self.norm_num_groups}")
        attended = [c for c, a in zip(self.channels, self.attention_levels) if a] + [self.channels[-1]]  # + the middle block
        if any(c % self.num_head_channels for c in attended):
            raise ConfigError(f"model: the channel counts {tuple(attended)} of the attention levels and the last level must "
                              f"be divisible by num_head_channels={self.num_head_channels}")

    @property
    def condition_channels(self) -> int:
        """One prior per image channel, each with its +-k neighbouring slices (contrast-major)."""
        return int(self.image_channels) * (1 + 2 * int(self.neighbours))

    # The diffusion's sample space. Images and the condition are in the networks' range [-1, 1] (CT: both
    # in the same HU window; MR: each in its own percentile window). A ``residual`` model diffuses
    # ``(image - prior) / 2`` (in [-1, 1] again, so the schedulers' clipping still holds): a zero output is
    # the prior itself, and a prior-anchored start (SDEdit) starts from zero.
    def prior_centre(self, cond: Any) -> Any:
        """The condition's centre slice (the prior of the slice generated), one per image channel: of a
        multi-contrast condition (``image_channels`` priors, contrast-major) each contrast's own."""
        k, c = int(self.neighbours), int(self.image_channels)
        if c == 1 or cond.shape[1] == 1 + 2 * k:  # one prior for every image channel
            return cond[:, k : k + 1].expand(-1, c, -1, -1)
        return cond.reshape(cond.shape[0], c, 1 + 2 * k, *cond.shape[2:])[:, :, k]

    def to_sample(self, image: Any, cond: Any) -> Any:
        """Image ``[B, C, H, W]`` in [-1, 1] -> what the diffusion generates."""
        return (image - self.prior_centre(cond)) / 2.0 if self.residual else image

    def from_sample(self, x: Any, cond: Any) -> Any:
        """What the diffusion generated -> the image in [-1, 1] (inverse of :meth:`to_sample`)."""
        return self.prior_centre(cond) + 2.0 * x if self.residual else x

    def prior_start(self, cond: Any) -> Any:
        """The prior in sample space: where a prior-anchored start begins (:meth:`to_sample` of the prior)."""
        centre = self.prior_centre(cond)
        return centre * 0.0 if self.residual else centre

    @classmethod
    def from_preset(cls, preset: str = "small", **overrides: Any) -> "ModelConfig":
        if preset not in PRESETS:
            raise ConfigError(f"unknown model preset {preset!r} (known: {', '.join(PRESETS)})")
        return cls.from_dict({"preset": preset, **PRESETS[preset], **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"model config: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["attention_levels"] = list(self.attention_levels)
        return d


@dataclass
class SchedulerConfig:
    """The noise schedule the model was trained with (DDPM) or the rectified-flow schedule."""

    kind: str = "ddpm"  # "ddpm" (DDPM training, DDPM/DDIM sampling) or "rflow"
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"  # epsilon | v_prediction | sample (ddpm); rflow predicts velocity
    clip_sample: bool = True  # images live in [-1, 1]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ConfigError(f"scheduler: unknown kind {self.kind!r} (ddpm or rflow)")
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise ConfigError(f"scheduler: unknown schedule {self.schedule!r} (known: {', '.join(SCHEDULES)})")
        if not isinstance(self.prediction_type, str) or self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"scheduler: unknown prediction type {self.prediction_type!r} (known: {', '.join(PREDICTION_TYPES)})")
        self.num_train_timesteps = check_int(self.num_train_timesteps, "scheduler: num_train_timesteps")
        self.beta_start = check_positive(self.beta_start, "scheduler: beta_start")
        self.beta_end = check_positive(self.beta_end, "scheduler: beta_end")
        if not self.beta_start < self.beta_end < 1.0:
            raise ConfigError(f"scheduler: beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1, got "
                              f"beta_start={self.beta_start!r}, beta_end={self.beta_end!r}")
        if not isinstance(self.clip_sample, bool):
            raise ConfigError(f"scheduler: clip_sample must be true or false, got {self.clip_sample!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SchedulerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"scheduler config: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_model(cfg: ModelConfig):
    """MONAI 2D ``DiffusionModelUNet``: in = image + condition channels, out = image channels.

    Attention runs through PyTorch's fused ``scaled_dot_product_attention``
    (MONAI's ``use_flash_attention``): the same weights and the same function
    as MONAI's explicit softmax(QK^T)V (outputs agree to ~1e-5), less memory,
    and 5-15 % faster per forward on the 2-core CPU (``benchmarks/sampling.py``).
    """
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=cfg.image_channels + cfg.condition_channels,
        out_channels=cfg.image_channels,
        channels=cfg.channels,
        attention_levels=cfg.attention_levels,
        num_res_blocks=cfg.num_res_blocks,
        num_head_channels=cfg.num_head_channels,
        norm_num_groups=cfg.norm_num_groups,
        use_flash_attention=True,
    )


def build_scheduler(cfg: SchedulerConfig, sampler: str | None = None):
    """A MONAI scheduler: the training one (``sampler=None``), or ``ddpm`` / ``ddim`` / ``rflow`` for sampling."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

    if cfg.kind == "rflow" or sampler == "rflow":
        if cfg.kind != "rflow":
            raise ConfigError("sampler 'rflow' needs a model trained with the rflow scheduler (this one: DDPM; use ddim or ddpm)")
        if sampler in ("ddpm", "ddim", "dpm++"):
            raise ConfigError(f"sampler {sampler!r} needs a DDPM-trained model; this one was trained with the rflow scheduler (use rflow)")
        return RFlowScheduler(num_train_timesteps=cfg.num_train_timesteps, use_discrete_timesteps=False, spatial_dim=2)
    common = dict(
        num_train_timesteps=cfg.num_train_timesteps,
        schedule=cfg.schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        prediction_type=cfg.prediction_type,
        clip_sample=cfg.clip_sample,
    )
    if sampler in (None, "ddpm"):
        return DDPMScheduler(**common)
    if sampler == "ddim":
        return DDIMScheduler(**common)
    if sampler == "dpm++":
        return dpm_solver_scheduler(cfg, DDPMScheduler(**common).betas)
    raise ConfigError(f"unknown sampler {sampler!r} (ddpm, ddim, dpm++ or rflow)")


def dpm_solver_scheduler(cfg: SchedulerConfig, betas):
    """diffusers' ``DPMSolverMultistepScheduler`` (DPM-Solver++, 2nd order multistep, Lu et al. 2022) on exactly
    the ``betas`` of the training schedule (MONAI has no DPM-Solver). Its ``step`` takes any of our prediction
    types (``epsilon`` / ``v_prediction`` / ``sample``); the last step is first order (diffusers'
    ``lower_order_final``, stable at < 15 steps); timesteps ``linspace(T - 1, 0, N)`` like the DDIM grid."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=cfg.num_train_timesteps, trained_betas=betas.double().cpu().numpy(), solver_order=2,
        prediction_type=cfg.prediction_type, algorithm_type="dpmsolver++", lower_order_final=True,
        timestep_spacing="linspace")


def spaced_scheduler(cfg: SchedulerConfig, sampler: str, steps: int):
    """A MONAI DDPM/DDIM scheduler for sampling in ``steps`` steps, respaced so its update is exact.

    MONAI's samplers pick the training timesteps ``S`` of an N-step run with
    ``linspace(T - 1, 0, N)``, but their ``step`` assumes another grid: DDPM always steps from
    ``t`` to ``t - 1`` (so a 500-step run denoises one timestep while the network is next asked
    about ``t - 2``), and DDIM steps to ``t - T // N`` (an 11-timestep mismatch per step at
    N = 10). Respacing (Nichol & Dhariwal 2021, "improved DDPM" ``SpacedDiffusion``) fixes both
    without touching MONAI's update rule: a scheduler with N training timesteps whose
    cumulative alphas are ``alphas_cumprod[S]`` (betas ``1 - a[S_j] / a[S_j-1]``), stepped
    ``N - 1 ... 0``, while the network is told the original timestep ``S_j``. For N = T this is
    the original schedule (to float rounding). Returns ``(scheduler, S)``: ``scheduler.timesteps``
    index ``S``.
    """
    import torch

    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"spaced_scheduler: sampler must be ddpm or ddim, got {sampler!r}")
    full = build_scheduler(cfg, sampler)
    full.set_timesteps(steps)
    grid = torch.unique(full.timesteps.cpu())  # sorted ascending: training timesteps 0 ... T-1
    cum = full.alphas_cumprod[grid]
    betas = 1.0 - cum / torch.cat([torch.ones(1, dtype=cum.dtype), cum[:-1]])
    sched = build_scheduler(dataclasses.replace(cfg, num_train_timesteps=len(grid)), sampler)
    sched.betas = betas
    sched.alphas = 1.0 - betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    sched.set_timesteps(len(grid))
    return sched, grid


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def for_inference(model, device="cpu"):
    """``model`` in eval mode on ``device`` with channels-last (NHWC) conv weights.

    oneDNN on CPU and cuDNN tensor cores run these 2D convolutions faster in NHWC (about 10-20 %
    per forward of the ``small``/``tiny`` networks on a 2-core CPU; ``benchmarks/sampling.py``
    times both layouts); outputs agree with NCHW to fp32 rounding, and one layout is
    deterministic run to run. Every sampling path (``load_model``, the benchmark) goes through here.
    """
    import torch

    return model.eval().to(device=device, memory_format=torch.channels_last)

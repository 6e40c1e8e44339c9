"""Reverse diffusion with MONAI schedulers, driven by a denoiser callable.

A *denoiser* maps ``(x_t, t) -> model output`` (epsilon, v, x0 or, for
rectified flow, velocity — whatever the model was trained to predict); the
condition (the physics prior) is bound into it by :func:`conditional_denoiser`.
The sampler therefore never sees the network class.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from seg2med.errors import ConfigError, raise_if_interrupted
from seg2med.models.config import SchedulerConfig, build_scheduler, spaced_scheduler

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("ddim", "ddpm", "dpm++", "rflow")


def default_sampler(cfg: SchedulerConfig) -> str:
    """The sampler a model trained with ``cfg`` is drawn with unless asked otherwise:
    ``rflow`` for a rectified-flow model, ``ddim`` for a DDPM-trained one."""
    return "rflow" if cfg.kind == "rflow" else "ddim"


def autocast_denoiser(denoiser: Denoiser, device_type: str, dtype: torch.dtype | None) -> Denoiser:
    """``denoiser`` run under ``torch.autocast(device_type, dtype)`` (bf16 / fp16 matmuls and
    convolutions), its output back in float32 so that the scheduler update stays in full precision.
    ``dtype=None``: the denoiser unchanged (fp32)."""
    if dtype is None:
        return denoiser

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=dtype):
            out = denoiser(x, t)
        return out.float()

    return denoise


def conditional_denoiser(model: torch.nn.Module, condition: torch.Tensor) -> Denoiser:
    """Bind the condition channels (prior slices) to a conditional network: x_t -> model([x_t, condition], t)."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(torch.cat([x, condition.to(dtype=x.dtype)], dim=1), timesteps=t)

    return denoise


class X0Parametrisation:
    """The network output of a scheduler config <-> its estimate of the clean sample, for ``x_t`` at training
    timestep ``t`` (``[B]``; any sample shape ``[B, ...]``). DDPM: ``x_t = sqrt(a) x0 + sqrt(1 - a) eps``
    (``a`` = alphas_cumprod[t]), ``v = sqrt(a) eps - sqrt(1 - a) x0``; rectified flow (MONAI):
    ``x_t = s x0 + (1 - s) noise`` with ``s = 1 - t / T``, velocity ``x0 - noise``."""

    def __init__(self, cfg: SchedulerConfig) -> None:
        self.cfg = cfg
        self.kind = "rflow" if cfg.kind == "rflow" else cfg.prediction_type
        self.cum = None if self.kind in ("rflow", "sample") else build_scheduler(cfg).alphas_cumprod

    def _coef(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        view = (-1,) + (1,) * (x.ndim - 1)
        if self.kind == "rflow":
            s = (1.0 - t.float() / self.cfg.num_train_timesteps).view(view).to(x.dtype)
            return s, 1.0 - s
        a = self.cum.to(x.device)[t.long()].view(view).to(x.dtype)
        return a.sqrt(), (1.0 - a).sqrt()

    def x0(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean-sample estimate of network output ``out``."""
        if self.kind == "sample":
            return out
        sa, sb = self._coef(x, t)
        if self.kind == "rflow":
            return x + sb * out
        return (x - sb * out) / sa if self.kind == "epsilon" else sa * x - sb * out  # v_prediction

    def output(self, x0: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network output that has clean-sample estimate ``x0`` at ``x_t`` (inverse of :meth:`x0`)."""
        if self.kind == "sample":
            return x0
        sa, sb = self._coef(x, t)
        if self.kind == "rflow":
            return x0 - (x - sa * x0) / sb.clamp(min=1e-6)
        if self.kind == "epsilon":
            return (x - sa * x0) / sb
        return (sa * x - x0) / sb  # v = sqrt(a) eps - sqrt(1 - a) x0 with eps = (x - sqrt(a) x0) / sqrt(1 - a)


def x0_corrected_denoiser(denoiser: Denoiser, cfg: SchedulerConfig, correct: Callable[[torch.Tensor], torch.Tensor]) -> Denoiser:
    """``denoiser`` whose estimate of the clean sample is replaced by ``correct(x0)`` at every step.

    The network's output (epsilon, v, x0 or rectified-flow velocity) is converted to its x0 estimate for
    ``x_t`` at training timestep ``t`` (:class:`X0Parametrisation`), corrected, and converted back to the same
    kind of output with ``x_t`` fixed, so that any scheduler's update uses the corrected estimate
    (prior-consistency guidance, :mod:`seg2med.sampling.anchor`).
    """
    par = X0Parametrisation(cfg)
    if par.kind == "sample":
        return lambda x, t: correct(denoiser(x, t))
    return lambda x, t: par.output(correct(par.x0(denoiser(x, t), x, t)), x, t)


def training_target(cfg: SchedulerConfig, scheduler, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the network must predict for ``images`` noised with ``noise`` at ``timesteps``."""
    if cfg.kind == "rflow":
        return images - noise
    if cfg.prediction_type == "epsilon":
        return noise
    if cfg.prediction_type == "v_prediction":
        return scheduler.get_velocity(images, noise, timesteps)
    return images


def check_strength(strength: float) -> float:
    """``strength`` of a prior-anchored start, in (0, 1]."""
    s = float(strength)
    if not 0.0 < s <= 1.0:
        raise ConfigError(f"strength must be in (0, 1] (1: start from pure noise), got {strength}")
    return s


def prior_anchored_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` a run with ``strength`` takes: the last ``ceil(strength * steps)`` (at least 1)."""
    return max(1, min(int(steps), math.ceil(check_strength(strength) * int(steps) - 1e-9)))


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    scheduler: SchedulerConfig,
    sampler: str = "ddim",
    steps: int = 50,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    image_numel: int | None = None,
) -> torch.Tensor:
    """Draw samples of ``shape`` (B, C, H, W) by reverse diffusion in ``steps`` steps.

    ``sampler``: ``ddim`` (deterministic for ``eta=0``), ``ddpm`` (ancestral;
    ``steps`` strided over the training timesteps), ``dpm++`` (DPM-Solver++ 2M, deterministic,
    diffusers' scheduler on the training betas) or ``rflow`` (Euler steps of
    a rectified-flow model). DDPM and DDIM run on a respaced MONAI scheduler
    (:func:`seg2med.models.config.spaced_scheduler`), so a strided run takes
    exact steps between the timesteps the network sees. The start noise is drawn from ``generator`` (or
    passed as ``noise``) so that a seed reproduces the result bit for bit on the
    same machine. ``callback(i, n)`` is called after each step.

    Prior-anchored start (SDEdit, Meng et al. 2022; diffusers' img2img ``strength``): with ``init``
    (an image-range estimate of the result, e.g. the physics prior in [-1, 1]) and ``strength`` s < 1,
    ``init`` is noised with the start noise to the timestep where the last ``ceil(s * steps)`` of the
    ``steps``-step schedule begin, and only those steps run. ``strength`` 1 (or no ``init``) starts
    from pure noise: every step runs.

    ``shape`` may be any ``(B, C, ...)`` the denoiser takes (a whole volume for the plane-cycling denoiser of
    :mod:`seg2med.sampling.planes`); ``image_numel`` is then the pixel count of one slice the network sees, which
    the rectified-flow timestep shift depends on (default: ``prod(shape[2:])``).
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    if steps < 1 or steps > scheduler.num_train_timesteps:
        raise ConfigError(f"steps must be in 1..{scheduler.num_train_timesteps}, got {steps}")
    device = torch.device(device)
    if sampler == "rflow":
        sched = build_scheduler(scheduler, sampler)
        sched.set_timesteps(steps, device=device, input_img_size_numel=int(image_numel or math.prod(shape[2:])))
        train_t = None
    elif sampler == "dpm++":  # diffusers' DPM-Solver++: its timesteps are the training timesteps
        sched = build_scheduler(scheduler, sampler)
        sched.set_timesteps(steps, device=device)
        train_t = torch.arange(scheduler.num_train_timesteps)
    else:  # respaced so that MONAI's step matches the timesteps the network is asked about
        sched, train_t = spaced_scheduler(scheduler, sampler, steps)
    x = noise.to(device) if noise is not None else torch.randn(shape, generator=generator, device=generator.device if generator else None).to(device)
    timesteps = list(sched.timesteps)
    batch = shape[0]
    if init is not None and strength < 1.0:
        skip = len(timesteps) - prior_anchored_steps(steps, strength)
        timesteps = timesteps[skip:]
        if sampler == "dpm++":
            sched.set_begin_index(skip)  # its multistep history starts at the first step run
        t0 = torch.full((batch,), float(timesteps[0]) if train_t is None else int(timesteps[0]), device=device,
                        dtype=torch.float32 if train_t is None else torch.long)
        x = sched.add_noise(original_samples=init.to(device=device, dtype=x.dtype), noise=x, timesteps=t0)
    for i, t in enumerate(timesteps):
        raise_if_interrupted()
        if train_t is None:
            tt = torch.full((batch,), float(t), device=device)
        else:
            tt = torch.full((batch,), int(train_t[int(t)]), device=device, dtype=torch.long)
        out = denoiser(x, tt).to(x.dtype)
        if sampler == "ddim":
            x, _ = sched.step(out, int(t), x, eta=eta, generator=generator)
        elif sampler == "ddpm":
            x, _ = sched.step(out, int(t), x, generator=generator)
        elif sampler == "dpm++":
            x = sched.step(out, t, x, return_dict=False)[0]
        else:
            nxt = timesteps[i + 1] if i + 1 < len(timesteps) else torch.tensor(0.0, device=device)
            x, _ = sched.step(out, t, x, next_timestep=nxt)
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x

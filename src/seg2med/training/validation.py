"""Validation: loss on fixed validation slices and a PNG grid prior | generated | real (EMA model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from seg2med.data.dataset import SliceDataset
from seg2med.data.normalize import to_signed, to_unit
from seg2med.io.files import atomic_write
from seg2med.models.config import ModelConfig, SchedulerConfig
from seg2med.sampling import conditional_denoiser, default_sampler, sample
from seg2med.training.data import collate
from seg2med.training.runtime import Runtime, step_generator

VAL_STREAM = 1 << 62  # "step" of the validation randomness (never a training step)
VAL_LOSS_SLICES = 64

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], torch.Generator], torch.Tensor]


def spread(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)``."""
    return sorted({round(i) for i in np.linspace(0, n - 1, min(n, k))}) if n else []


@torch.no_grad()
def val_loss(model: torch.nn.Module, ds: SliceDataset, loss_fn: LossFn, batch: int, seed: int) -> float | None:
    """Mean diffusion loss over up to 64 fixed validation slices with fixed noise and timesteps."""
    idx = spread(len(ds), VAL_LOSS_SLICES)
    if not idx:
        return None
    g = step_generator(seed, VAL_STREAM)
    total = 0.0
    for start in range(0, len(idx), batch):
        chunk = idx[start : start + batch]
        total += float(loss_fn(model, collate([ds[i] for i in chunk]), g)) * len(chunk)
    return total / len(idx)


@torch.no_grad()
def val_samples(model: torch.nn.Module, ds: SliceDataset, sched: SchedulerConfig, rt: Runtime, n: int, steps: int,
                seed: int, model_cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prior, generated, real) arrays ``[n, H, W]`` in [0, 1] for ``n`` fixed validation slices."""
    b = collate([ds[i] for i in spread(len(ds), n)])
    cond = to_signed(b["prior"]).to(rt.device)
    g = step_generator(seed, VAL_STREAM, 0)
    noise = torch.randn(b["image"].shape, generator=g)
    sampler = default_sampler(sched)
    with rt.autocast():
        x = sample(conditional_denoiser(model, cond), tuple(noise.shape), sched, sampler, min(steps, sched.num_train_timesteps),
                   device=rt.device, noise=noise)
    x = model_cfg.from_sample(x.float().cpu(), cond.float().cpu())
    gen = to_unit(x).clamp(0.0, 1.0) * b["mask"]
    k = b["prior"].shape[1] // 2
    return b["prior"][:, k].numpy(), gen[:, 0].numpy(), b["image"][:, 0].numpy()


def save_grid(path: Path, prior: np.ndarray, generated: np.ndarray, real: np.ndarray, title: str) -> Path:
    """PNG with one row per slice and the columns prior | generated | real (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = prior.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n + 0.4), squeeze=False)
    for r in range(n):
        for c, (name, arr) in enumerate((("prior", prior), ("generated", generated), ("real", real))):
            ax = axes[r][c]
            ax.imshow(arr[r], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.axis("off")
            if r == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path

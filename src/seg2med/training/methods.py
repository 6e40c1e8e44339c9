"""``seg2med train --method``: pick the method and its configs, then call its trainer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seg2med.errors import ConfigError
from seg2med.models.baselines import BASELINE_METHODS, DIFFUSION, METHODS, check_method
from seg2med.training.config import check_blocks, resolve_configs


def resolve_method(method: str | None, blocks: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> str:
    """The method to train: explicit ``method`` > the YAML's ``method:`` > the resumed run's (``base``) > ``ddpm``.

    A resumed run of another method is refused (no silent mixing).
    """
    blocks = check_blocks(blocks)
    stored = base.get("method", DIFFUSION) if base is not None else None
    chosen = check_method(method or blocks.get("method") or stored or DIFFUSION)
    if stored is not None and stored != chosen:
        raise ConfigError(f"resume: the run was trained with method {stored!r}, not {chosen!r}")
    return chosen


def read_config_file(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """A ``--config`` YAML file's blocks, checked on their own (without the command-line options) so that
    an error in the file names the file: ``cfg.yaml: model config: unknown keys ['chanels'] ...``."""
    from seg2med.io import read_yaml
    from seg2med.training.baselines import resolve_baseline_configs

    data = read_yaml(path)  # its own errors name the file
    try:
        blocks = check_blocks(data)
        m = check_method(method or blocks.get("method") or DIFFUSION)
        if m == DIFFUSION:
            resolve_configs(None, blocks)
        elif m in BASELINE_METHODS:
            resolve_baseline_configs(m, None, {k: v for k, v in blocks.items() if k != "scheduler"})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return blocks


def train_method(
    method: str | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    preset: str | None = None,
    blocks: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Resolve the configs of ``method`` (one of :data:`~seg2med.models.baselines.METHODS`) and train it.

    ``preset`` / ``blocks`` (parsed YAML) / ``model`` / ``scheduler`` /
    ``training`` / ``base`` (the resumed run's config.json) combine as in
    :func:`~seg2med.training.resolve_configs`. Scheduler options only apply
    to ``ddpm``; ``prior`` takes only ``neighbours`` (model) and the
    validation options (training). Returns the trainer's summary plus ``method``.
    """
    from seg2med.training.baselines import (
        resolve_baseline_configs,
        train_baseline,
        train_prior,
    )
    from seg2med.training.trainer import train

    m = resolve_method(method, blocks, base)
    blocks = check_blocks(blocks)
    if m == DIFFUSION:
        model_cfg, sched_cfg, train_cfg = resolve_configs(preset, blocks, model=model, scheduler=scheduler, training=training,
                                                          base=base)
        res = train(data_dir, out_dir, model_cfg, sched_cfg, train_cfg, resume=resume, overwrite=overwrite, progress=progress)
    else:
        if scheduler or blocks.get("scheduler"):
            raise ConfigError(f"scheduler options (--scheduler, --prediction, --beta-schedule, scheduler:) only apply to "
                              f"--method ddpm, not {m}")
        if m in BASELINE_METHODS:
            model_cfg, train_cfg = resolve_baseline_configs(m, preset, blocks, model=model, training=training, base=base)
            res = train_baseline(data_dir, out_dir, m, model_cfg, train_cfg, resume=resume, overwrite=overwrite,
                                 progress=progress)
        else:
            _, train_cfg = resolve_baseline_configs("unet", None, {"training": blocks.get("training") or {}},
                                                    training=training)
            neighbours = int({**(blocks.get("model") or {}), **dict(model or {})}.get("neighbours", 0))
            res = train_prior(data_dir, out_dir, neighbours, train_cfg, resume=resume, overwrite=overwrite)
    return {"method": m, **res}


__all__ = ["METHODS", "resolve_method", "train_method"]

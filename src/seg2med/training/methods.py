"""``seg2med train --method``: pick the method and its configs, then call its trainer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seg2med.checks import check_int
from seg2med.errors import ConfigError
from seg2med.models.baselines import BASELINE_METHODS, DIFFUSION, METHODS, check_method
from seg2med.training.config import _block, check_blocks, resolve_configs


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


def read_config_file(path: str | Path, method: str | None = None, preset: str | None = None,
                     base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``--config`` YAML file's blocks, checked merged onto what they override (the ``preset`` given on the
    command line, else the resumed run's config.json ``base``, else the file's or the default preset), but
    without the other command-line options, so that an error in the file names the file:
    ``cfg.yaml: model config: unknown keys ['chanels'] ...``."""
    from seg2med.io import read_yaml
    from seg2med.training.baselines import resolve_baseline_configs

    data = read_yaml(path)  # its own errors name the file
    try:
        blocks = check_blocks(data)
        m = check_method(method or blocks.get("method") or (base or {}).get("method") or DIFFUSION)
        if m == DIFFUSION:
            resolve_configs(preset, blocks, base=base)
        elif m in BASELINE_METHODS:
            resolve_baseline_configs(m, preset, {k: v for k, v in blocks.items() if k != "scheduler"}, base=base)
        else:
            _prior_options(blocks)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return blocks


def _prior_options(blocks: Mapping[str, Any], model: Mapping[str, Any] | None = None,
                   training: Mapping[str, Any] | None = None) -> tuple[int, Any]:
    """``(neighbours, train config)`` of the ``prior`` method: its model block takes only ``neighbours``."""
    from seg2med.training.baselines import resolve_baseline_configs

    m_over = {**_block(blocks, "model"), **dict(model or {})}
    unknown = sorted(set(m_over) - {"neighbours", "preset"})
    if unknown:
        raise ConfigError(f"model config of prior: unknown keys {unknown} (the prior method takes only neighbours)")
    _, train_cfg = resolve_baseline_configs("unet", None, {"training": _block(blocks, "training")}, training=training)
    return check_int(m_over.get("neighbours", 0), "model: neighbours", minimum=0), train_cfg


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
    from seg2med.training.diffusion import train

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
            neighbours, train_cfg = _prior_options(blocks, model, training)
            res = train_prior(data_dir, out_dir, neighbours, train_cfg, resume=resume, overwrite=overwrite)
    return {"method": m, **res}


__all__ = ["METHODS", "resolve_method", "train_method"]

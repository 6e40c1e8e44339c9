"""``seg2med train --method``: pick the method's registry entry, build its recipe from the options, run it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seg2med.data.dataset import load_dataset_manifest
from seg2med.errors import ConfigError
from seg2med.models.registry import DEFAULT_METHOD, GENERATORS, Method, get_method
from seg2med.training.config import augment_preset, check_blocks
from seg2med.training.data import batch_transforms
from seg2med.training.loop import Recipe, run_training

METHODS = GENERATORS


def resolve_method(method: str | None, blocks: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> str:
    """The method to train: explicit ``method`` > the YAML's ``method:`` > the resumed run's (``base``) > ``ddpm``.

    A resumed run of another method is refused (no silent mixing).
    """
    blocks = check_blocks(blocks)
    stored = base.get("method", DEFAULT_METHOD) if base is not None else None
    chosen = get_method(method or blocks.get("method") or stored or DEFAULT_METHOD).name
    if stored is not None and stored != chosen:
        raise ConfigError(f"resume: the run was trained with method {stored!r}, not {chosen!r}")
    return chosen


def build_recipe(entry: Method, preset: str | None = None, blocks: Mapping[str, Any] | None = None,
                 model: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
                 training: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> Recipe:
    """The training recipe of ``entry`` from the options (see :func:`train_method`); scheduler options are refused
    for a method without a noise scheduler."""
    blocks = check_blocks(blocks)
    if not entry.takes_scheduler:
        if scheduler or blocks.get("scheduler"):
            raise ConfigError(f"scheduler options (--scheduler, --prediction, --beta-schedule, scheduler:) only apply to "
                              f"--method ddpm, not {entry.name}")
        scheduler = None
    return entry.part("recipe")(entry.name, preset, blocks, model=model, scheduler=scheduler, training=training, base=base)


def read_config_file(path: str | Path, method: str | None = None, preset: str | None = None,
                     base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``--config`` YAML file's blocks, checked merged onto what they override (the ``preset`` given on the
    command line, else the resumed run's config.json ``base``, else the file's or the default preset), but
    without the other command-line options, so that an error in the file names the file:
    ``cfg.yaml: model config: unknown keys ['chanels'] ...``. A ``scheduler:`` block of a method without a
    scheduler is refused later, with the command-line options."""
    from seg2med.io import read_yaml

    data = read_yaml(path)  # its own errors name the file
    try:
        blocks = check_blocks(data)
        entry = get_method(method or blocks.get("method") or (base or {}).get("method") or DEFAULT_METHOD)
        checked = blocks if entry.takes_scheduler else {k: v for k, v in blocks.items() if k != "scheduler"}
        build_recipe(entry, preset, checked, base=base)
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
    augment: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Resolve the configs of ``method`` (one of :data:`~seg2med.models.registry.GENERATORS`) and train it.

    ``preset`` / ``blocks`` (parsed YAML) / ``model`` / ``scheduler`` /
    ``training`` / ``base`` (the resumed run's config.json) combine as in
    :func:`~seg2med.training.resolve_configs`. Scheduler options only apply
    to ``ddpm``; ``prior`` takes only ``neighbours`` (model) and the
    validation options (training). ``augment`` names an augmentation preset
    (:data:`~seg2med.training.config.AUGMENT_PRESETS`, for the dataset's modality) whose values the YAML
    ``training:`` block and ``training`` override. An augmentation that does not apply is refused before
    the run folder is made. Returns the run's summary plus ``method``.
    """
    if augment is not None:
        cfg = load_dataset_manifest(data_dir)["config"]
        options = augment_preset(augment, cfg["modality"], cfg.get("scheme"))
        blocks = check_blocks(blocks)
        blocks = {**blocks, "training": {**options, **dict(blocks.get("training") or {})}}
    m = resolve_method(method, blocks, base)
    contrasts = load_dataset_manifest(data_dir)["config"].get("contrasts")
    if contrasts:  # a multi-contrast dataset: one image channel per contrast
        if m != "ddpm":
            raise ConfigError(f"{data_dir}: a dataset of {len(contrasts)} contrasts; method {m} trains one image "
                              "channel (train the multi-contrast model with --method ddpm)")
        model = {"image_channels": len(contrasts), **dict(model or {})}
    recipe = build_recipe(get_method(m), preset, blocks, model=model, scheduler=scheduler, training=training, base=base)
    if recipe.cfg.init_from and m != "ddpm":
        raise ConfigError(f"--init-from starts a diffusion run from another one; method {m} has no such start")
    batch_transforms(recipe.cfg, data_dir, m)  # one-line error before any run folder exists
    res = run_training(recipe, data_dir, out_dir, resume=resume, overwrite=overwrite, progress=progress)
    return {"method": m, **res}


__all__ = ["METHODS", "build_recipe", "read_config_file", "resolve_method", "train_method"]

"""Training options (JSON-ready) and how they combine with presets, YAML blocks and a run being resumed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seg2med.checks import check_int, check_non_negative, check_positive, check_seed
from seg2med.errors import ConfigError
from seg2med.models.config import ModelConfig, SchedulerConfig
from seg2med.models.registry import GENERATORS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
#: Fields that change the optimisation trajectory: a resumed run must keep them.
TRAJECTORY_FIELDS = ("batch", "lr", "ema_decay", "grad_clip", "precision", "seed", "augment_flips", "intensity_jitter")


@dataclass
class TrainConfig:
    """Options of :func:`seg2med.training.train` (seg2med paper defaults: Adam, lr 2e-4).

    ``ckpt_every`` / ``val_every`` / ``log_every`` = 0 means "only at the end"
    (checkpoints, log rows) or "never" (validation). ``batch`` is the global
    batch: under torchrun each of the ``W`` processes draws ``batch / W`` slices.
    ``max_minutes`` > 0 ends the run early, after the first step at which the
    run's training time (resumed time included) reaches it; that step is
    treated as the last one (checkpoint, log row, validation).
    ``augment_flips`` flips slices left-right (image and prior together) with
    probability 1/2; ``intensity_jitter`` = j scales each prior by a factor
    drawn uniformly from [1 - j, 1 + j] (robustness to prior mismatch).
    """

    steps: int = 10_000
    batch: int = 8
    lr: float = 2e-4
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    precision: str = "auto"
    seed: int = 0
    ckpt_every: int = 1000
    val_every: int = 1000
    log_every: int = 50
    num_workers: int = 0
    augment_flips: bool = False
    intensity_jitter: float = 0.0
    device: str = "auto"
    val_slices: int = 4  # rows of the validation PNG
    val_steps: int = 20  # DDIM / Euler steps of the validation samples
    max_minutes: float = 0.0  # wall-clock budget: stop (and checkpoint) after the step that reaches it; 0 = none

    def __post_init__(self) -> None:
        self.steps, self.batch = check_int(self.steps, "training: steps"), check_int(self.batch, "training: batch")
        self.seed = check_seed(self.seed, "training: seed")
        self.lr = check_positive(self.lr, "training: lr")
        self.grad_clip = check_non_negative(self.grad_clip, "training: grad_clip (0 = no clipping)")
        self.ema_decay = check_non_negative(self.ema_decay, "training: ema_decay")
        self.intensity_jitter, self.augment_flips = float(self.intensity_jitter), bool(self.augment_flips)
        if self.ema_decay >= 1.0:
            raise ConfigError(f"training: ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("ckpt_every", "val_every", "log_every", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"training: {name} must be >= 0")
            setattr(self, name, int(getattr(self, name)))
        if self.val_slices < 1 or self.val_steps < 1:
            raise ConfigError("training: val_slices and val_steps must be >= 1")
        self.max_minutes = check_non_negative(self.max_minutes, "training: max_minutes (0 = no time limit)")
        if not 0.0 <= self.intensity_jitter < 1.0:
            raise ConfigError(f"training: intensity_jitter must be in [0, 1), got {self.intensity_jitter}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"training: unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"training: unknown device {self.device!r} (known: {', '.join(DEVICES)})")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"training config: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def out_of_time(cfg: TrainConfig, seconds: float) -> bool:
    """True when a time-budgeted run (``max_minutes`` > 0) has used its budget."""
    return cfg.max_minutes > 0 and seconds >= 60.0 * cfg.max_minutes


def _block(blocks: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    value = (blocks or {}).get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config file: {name!r} must be a mapping of options")
    return dict(value)


def check_blocks(blocks: Any) -> dict[str, Any]:
    """A parsed training YAML: a mapping with only ``model``, ``scheduler`` and ``training`` blocks (and a ``method`` name)."""
    if blocks is None:
        return {}
    if not isinstance(blocks, Mapping):
        raise ConfigError("config file: expected a mapping with model:, scheduler: and/or training: blocks")
    unknown = sorted(set(blocks) - {"model", "scheduler", "training", "method"})
    if unknown:
        raise ConfigError(f"config file: unknown blocks {unknown} (known: model, scheduler, training, method)")
    if "method" in blocks and not isinstance(blocks["method"], str):
        raise ConfigError(f"config file: method must be a name ({', '.join(GENERATORS)}), got {blocks['method']!r}")
    return dict(blocks)


def resolve_configs(
    preset: str | None = None,
    blocks: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> tuple[ModelConfig, SchedulerConfig, TrainConfig]:
    """Combine, lowest priority first: defaults or ``base`` (a run's config.json), the preset, YAML ``blocks``, explicit options.

    ``blocks`` is a parsed YAML file (see :func:`check_blocks`); its ``model``
    block may name a ``preset``. ``model`` / ``scheduler`` / ``training`` hold
    explicit overrides (e.g. CLI options that were given).
    """
    blocks = check_blocks(blocks)
    m_over = {**_block(blocks, "model"), **dict(model or {})}
    name = preset or m_over.pop("preset", None)
    m_over.pop("preset", None)
    if name is not None:
        model_cfg = ModelConfig.from_preset(name, **m_over)
    elif base is not None:
        model_cfg = ModelConfig.from_dict({**base["model"], **m_over})
    else:
        model_cfg = ModelConfig.from_preset("small", **m_over)
    s_base = dict(base.get("scheduler", {})) if base is not None else {}
    sched_cfg = SchedulerConfig.from_dict({**s_base, **_block(blocks, "scheduler"), **dict(scheduler or {})})
    t_base = {}
    if base is not None:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        t_base = {k: v for k, v in base.get("training", {}).get("config", {}).items() if k in known}
    train_cfg = TrainConfig.from_dict({**t_base, **_block(blocks, "training"), **dict(training or {})})
    return model_cfg, sched_cfg, train_cfg


def model_config_from_run(config: Mapping[str, Any]) -> tuple[ModelConfig, SchedulerConfig]:
    """The model and scheduler configs stored in a run's config.json (as read by ``read_checkpoint_config``)."""
    return ModelConfig.from_dict(config["model"]), SchedulerConfig.from_dict(config.get("scheduler", {}))


def check_resumable(stored: Mapping[str, Any], model_cfg: ModelConfig, sched_cfg: SchedulerConfig, train_cfg: TrainConfig) -> None:
    """Refuse to resume a run with a different network, schedule or optimisation settings."""
    old_model, old_sched = model_config_from_run(stored)
    if old_model != model_cfg:
        raise ConfigError(f"resume: the run was trained with model {old_model.to_dict()}, not {model_cfg.to_dict()}")
    if old_sched != sched_cfg:
        raise ConfigError(f"resume: the run was trained with scheduler {old_sched.to_dict()}, not {sched_cfg.to_dict()}")
    check_trajectory_unchanged(stored, train_cfg, TRAJECTORY_FIELDS)


def check_trajectory_unchanged(stored: Mapping[str, Any], cfg: Any, fields: tuple[str, ...]) -> None:
    """Refuse to resume with other values of ``fields`` than the run's stored ``training.config``."""
    old = stored.get("training", {}).get("config", {})
    changed = [f"{k}: {old[k]!r} -> {getattr(cfg, k)!r}" for k in fields if k in old and old[k] != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"resume: training settings differ from the run's ({'; '.join(changed)})")

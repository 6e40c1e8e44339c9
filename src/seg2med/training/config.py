"""Training options (JSON-ready) and how they combine with presets, YAML blocks and a run being resumed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seg2med.checks import check_int, check_non_negative, check_positive, check_seed
from seg2med.data.augment import check_fraction, check_phases, check_zoom_range
from seg2med.errors import ConfigError
from seg2med.labels.schemes import BRAIN_SCHEMES
from seg2med.models.config import ModelConfig, SchedulerConfig
from seg2med.models.registry import GENERATORS
from seg2med.physics.randomize import MAX_NOISE, check_amplitudes

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
#: The prior re-simulation options (:class:`seg2med.data.augment.PriorResimulation`); any > 0 switches it on.
PRIOR_AUGMENT_FIELDS = ("prior_spread", "prior_bias", "prior_noise", "prior_blur", "class_drop", "tissue_drop")
#: The joint geometry options (:class:`seg2med.data.augment.RandomGeometry`).
GEOMETRY_AUGMENT_FIELDS = ("zoom_range", "rotate_deg", "shift", "p_inside")
AUGMENT_FIELDS = (*PRIOR_AUGMENT_FIELDS, "prior_phases", *GEOMETRY_AUGMENT_FIELDS)
#: How messages name the options of the augmentation classes: as the training config's fields.
AUGMENT_OPTION_NAMES = {"tissue_spread": "training: prior_spread", "bias_field": "training: prior_bias",
                        "noise": "training: prior_noise", "blur": "training: prior_blur",
                        "phases": "training: prior_phases",
                        **{k: f"training: {k}" for k in ("class_drop", "tissue_drop", *GEOMETRY_AUGMENT_FIELDS)}}
#: Fields that change the optimisation trajectory: a resumed run must keep them.
TRAJECTORY_FIELDS = ("batch", "lr", "ema_decay", "grad_clip", "precision", "seed", "augment_flips", "intensity_jitter",
                     *AUGMENT_FIELDS)


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

    Robustness augmentation (all off by default; see :mod:`seg2med.data.augment` and
    :data:`AUGMENT_PRESETS`, ``seg2med train --augment robust``): ``prior_spread``, ``prior_bias``,
    ``prior_noise`` (HU for CT, a fraction of the range for MR; the sd is drawn uniformly up to it)
    and ``prior_blur`` (mm, drawn uniformly up to it) re-simulate each slice's prior from its stored
    labels (:class:`~seg2med.physics.randomize.RandomPrior` amplitudes), after relabelling each organ
    class present to ``body`` with probability ``class_drop`` and each tissue class (201-204) with
    probability ``tissue_drop``; this needs a dataset prepared with labels. ``prior_phases`` (CT): the
    contrast phases each slice's re-simulated prior is drawn in, uniformly (``native``, ``arterial``,
    ``portal_venous``; None: the dataset's phase). ``zoom_range``
    ``[min, max]`` (factor on the slice spacing, log-uniform), ``rotate_deg`` (+-), ``shift`` (+-
    fraction of the slice size) and ``p_inside`` (probability of a view lying entirely inside the body)
    warp image, prior, mask and labels together. Each step draws them from its own generator, after
    the flip and jitter draws, and only when they are on.
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
    prior_spread: float = 0.0  # tissue-parameter spread of the re-simulated prior (x table sd / relative sd)
    prior_bias: float = 0.0  # bias-field coefficient range
    prior_noise: float = 0.0  # largest noise sd: HU (CT) or fraction of the range (MR)
    prior_blur: float = 0.0  # largest partial-volume blur sigma, mm
    class_drop: float = 0.0  # probability that an organ class becomes body
    tissue_drop: float = 0.0  # probability that a tissue class (201-204) becomes body
    prior_phases: list[str] | None = None  # CT: contrast phases the re-simulated prior is drawn in (uniformly)
    zoom_range: list[float] | None = None  # [min, max] factor on the in-plane spacing; None = no zoom
    rotate_deg: float = 0.0  # in-plane rotation, +- degrees
    shift: float = 0.0  # field-of-view shift, +- fraction of the slice size
    p_inside: float = 0.0  # probability of a view lying entirely inside the body
    init_from: str = ""  # ddpm: a run folder whose EMA weights start the network (seg2med.training.warmstart)

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
        self.init_from = "" if self.init_from is None else str(self.init_from)
        if not 0.0 <= self.intensity_jitter < 1.0:
            raise ConfigError(f"training: intensity_jitter must be in [0, 1), got {self.intensity_jitter}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"training: unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"training: unknown device {self.device!r} (known: {', '.join(DEVICES)})")
        self._check_augmentation()

    def _check_augmentation(self) -> None:
        """Bounds of the augmentation options (the noise bound of the modality is checked against the dataset)."""
        names = AUGMENT_OPTION_NAMES
        self.prior_spread, self.prior_bias, _, self.prior_blur = check_amplitudes(
            "ct", self.prior_spread, self.prior_bias, 0.0, self.prior_blur, names)
        self.prior_noise = check_fraction(self.prior_noise, names["noise"], max(MAX_NOISE.values()))
        for name in ("class_drop", "tissue_drop", "p_inside"):
            setattr(self, name, check_fraction(getattr(self, name), names[name]))
        self.rotate_deg = check_fraction(self.rotate_deg, names["rotate_deg"], 180.0)
        self.shift = check_fraction(self.shift, names["shift"], 0.5)
        if self.zoom_range is not None:
            self.zoom_range = list(check_zoom_range(self.zoom_range, names["zoom_range"]))
        if self.prior_phases is not None:
            self.prior_phases = list(check_phases(self.prior_phases, None, names["phases"])) or None

    @property
    def augments_prior(self) -> bool:
        """Whether steps re-simulate the prior (any of :data:`PRIOR_AUGMENT_FIELDS` > 0, or contrast phases)."""
        return bool(self.prior_phases) or any(getattr(self, name) > 0 for name in PRIOR_AUGMENT_FIELDS)

    @property
    def augments_geometry(self) -> bool:
        """Whether steps warp the slices (a zoom range other than [1, 1], a rotation, a shift or inside views)."""
        zoom = self.zoom_range is not None and list(self.zoom_range) != [1.0, 1.0]
        return zoom or self.rotate_deg > 0 or self.shift > 0 or self.p_inside > 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"training config: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Named augmentation settings (``seg2med train --augment NAME``): option -> value, with per-modality values
#: under ``"ct"`` / ``"mr"``. ``robust``: left-right flips; the prior re-simulated with a tissue spread (CT 1 x
#: the table's HU sd, MR relaxation times x exp(0.5 z)), a bias field (CT 0.03: gain within about +-7 %, MR
#: 0.3: within about 0.5-2), noise up to 20 HU (CT) / 2 % of the range (MR), blur up to 1.5 mm, organ and
#: tissue classes dropped to body with probability 0.3 each; zoom 0.75-1.5 x the slice spacing, +-10
#: degrees, +-10 % field-of-view shift, and 30 % of the slices viewed entirely inside the body.
#: A brain label map (a scheme of :data:`~seg2med.labels.schemes.BRAIN_SCHEMES`) keeps its classes (``brain``:
#: class_drop 0): its classes are the tumour compartments, which nothing else in the prior shows, so dropping one
#: would teach the model to draw a tumour the labels do not have (the tissue draw, noise, blur and geometry apply).
#: ``none``: every augmentation off (the defaults).
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {"augment_flips": False, "intensity_jitter": 0.0, "zoom_range": None, "prior_phases": None,
             **{k: 0.0 for k in AUGMENT_FIELDS if k not in ("zoom_range", "prior_phases")}},
    "robust": {"augment_flips": True, "prior_blur": 1.5, "class_drop": 0.3, "tissue_drop": 0.3, "zoom_range": [0.75, 1.5],
               "rotate_deg": 10.0, "shift": 0.1, "p_inside": 0.3,
               "ct": {"prior_spread": 1.0, "prior_bias": 0.03, "prior_noise": 20.0,
                      "prior_phases": ["native", "arterial", "portal_venous"]},
               "mr": {"prior_spread": 0.5, "prior_bias": 0.3, "prior_noise": 0.02},
               "brain": {"class_drop": 0.0}},
}


def augment_preset(name: str, modality: str, scheme: str | None = None) -> dict[str, Any]:
    """The training options of the augmentation preset ``name`` for a dataset of ``modality`` (``ct`` / ``mr``)
    whose label maps are in ``scheme`` (a brain scheme adds the preset's ``brain`` values)."""
    if name not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augmentation preset {name!r} (known: {', '.join(AUGMENT_PRESETS)})")
    preset = AUGMENT_PRESETS[name]
    shared = {k: v for k, v in preset.items() if k not in ("ct", "mr", "brain")}
    brain = preset.get("brain", {}) if scheme in BRAIN_SCHEMES else {}
    return {**shared, **preset.get(str(modality).lower(), {}), **brain}


TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


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
    old = dict(stored.get("training", {}).get("config", {}))
    for k in AUGMENT_FIELDS:  # a run from before these options existed trained without them
        old.setdefault(k, TRAIN_DEFAULTS[k])
    changed = [f"{k}: {old[k]!r} -> {getattr(cfg, k)!r}" for k in fields if k in old and old[k] != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"resume: training settings differ from the run's ({'; '.join(changed)})")

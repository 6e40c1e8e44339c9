"""``seg2med train-segmenter``: an auxiliary 2D segmentation network, real image slices -> labels.

A MONAI ``UNet`` (2D, ``channels`` (16, 32, 64, 128), stride 2, 2 residual
units) trained with Dice + cross-entropy (``DiceCELoss``, softmax, one-hot
targets) on the image slices of a prepared dataset that stores labels. The
classes are the label ids present anywhere in the dataset (the dataset's
canonical ids, 0 = background); network channel ``c`` predicts
``classes[c]``. Batches are step-seeded like every other trainer (exact
reproduction and resume); no EMA.

Run folder (layout of :mod:`seg2med.training.state`), ``config.json``::

    method: segmenter
    model:  {network: {class: UNet, args: {...}}, classes: [0, ...], class_names: {id: name} | null,
             input: ..., features: ...}
    data:   as for ddpm runs (modality, normalisation, spacing, size, axes, ...)
    training: {config: {...}, step, seconds, final_loss, last_losses, val_loss, ...}
    weights: {model: model.safetensors}

Load it with :func:`seg2med.inference.segment.load_segmenter`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg2med.data.dataset import SliceDataset
from seg2med.data.prepare import read_subject_slices
from seg2med.errors import ConfigError, InputError
from seg2med.io.checkpoints import WEIGHTS
from seg2med.models.baselines import downsampling, segmenter_spec
from seg2med.models.config import count_parameters
from seg2med.models.registry import SEGMENTER
from seg2med.training.config import TrainConfig, _block, check_blocks, check_trajectory_unchanged
from seg2med.training.data import StepBatches
from seg2med.training.loop import Context, Learner, Recipe, Tracker, new_scaler, optimizer_step, run_training
from seg2med.training.runtime import step_generator, step_seed
from seg2med.training.state import ResumeState
from seg2med.training.validation import spread

log = logging.getLogger(__name__)

SEGMENTER_TRAJECTORY = ("batch", "lr", "grad_clip", "precision", "seed", "augment_flips")
OPTIMIZER = "model"


@dataclass
class SegmenterConfig:
    """The segmenter's U-Net (the number of classes and of input channels come from the dataset). ``backbone``
    (``resnet10`` ... ``resnet50``): a ``FlexibleUNet`` with that ResNet encoder, ``channels`` its five decoder widths
    (default (128, 64, 32, 16, 8) when ``channels`` has another length)."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] | None = None  # default: 2 per level
    num_res_units: int = 2
    backbone: str | None = None

    def spec(self, n_classes: int, in_channels: int = 1) -> dict[str, Any]:
        return segmenter_spec(n_classes, tuple(self.channels), tuple(self.strides) if self.strides else None,
                              self.num_res_units, in_channels=in_channels, backbone=self.backbone)


def default_train_config(**overrides: Any) -> TrainConfig:
    """Segmenter defaults: 2000 steps, batch 16, Adam lr 1e-3, checkpoint/validation every 500 steps."""
    return TrainConfig(**{"steps": 2000, "batch": 16, "lr": 1e-3, "ckpt_every": 500, "val_every": 500, **overrides})


# --------------------------------------------------------------------------- labels of a dataset
def check_has_labels(manifest: Mapping[str, Any], root: Path) -> None:
    """Every train / val subject must have stored labels (clear error otherwise)."""
    recs = [r for r in manifest["subjects"] if r["split"] in ("train", "val")]
    lacking = [r["id"] for r in recs if not r.get("has_labels")]
    if recs and len(lacking) == len(recs):
        raise InputError(f"{root}: the dataset stores no labels (prepare it with label maps to train a segmenter)")
    if lacking:
        raise InputError(f"{root}: subjects without stored labels: {', '.join(lacking)}")


def dataset_classes(root: Path, manifest: Mapping[str, Any]) -> list[int]:
    """Sorted label ids present in the stored labels of every subject (all splits), always with 0 (background)."""
    ids: set[int] = {0}
    for rec in manifest["subjects"]:
        if rec.get("has_labels"):
            for axis in rec["shards"]:
                ids.update(int(v) for v in np.unique(read_subject_slices(root, rec, axis, key="labels")))
    return sorted(ids)


def class_names(manifest: Mapping[str, Any], classes: list[int]) -> dict[str, str] | None:
    """``{id: name}`` from the dataset's (canonical) scheme, or None when the dataset names no built-in scheme."""
    from seg2med.labels import canonical_scheme, get_scheme

    name = manifest.get("config", {}).get("scheme")
    if not name:
        return None
    try:
        scheme = canonical_scheme(get_scheme(str(name)))
    except ConfigError:
        return None
    names = scheme.id_to_name
    return {str(c): ("background" if c == 0 else names.get(c, f"label_{c}")) for c in classes}


def collate_labels(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "labels")}


# --------------------------------------------------------------------------- the learner
class SegmenterLearner(Learner):
    """UNet, Adam and DiceCE loss on image slices -> class indices."""

    method = SEGMENTER

    def __init__(self, ctx: Context, spec: dict[str, Any], classes: list[int], names: dict[str, str] | None,
                 cfg: TrainConfig) -> None:
        from monai.losses import DiceCELoss

        from seg2med.models.baselines import build_network

        self.rt, self.val_ds, self.data = ctx.rt, ctx.val_ds, ctx.data
        self.spec, self.classes, self.names, self.cfg = spec, classes, names, cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.net = build_network(spec).to(self.rt.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.scaler = new_scaler(self.rt)
        self.loss_fn = DiceCELoss(softmax=True, to_onehot_y=True)
        self.lut = torch.zeros(max(classes) + 1, dtype=torch.int64)
        self.lut[torch.as_tensor(classes)] = torch.arange(len(classes))

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {WEIGHTS: self.net.state_dict()}

    def optimizer_states(self) -> dict[str, dict[str, Any]]:
        return {OPTIMIZER: self.opt.state_dict()}

    def load(self, state: ResumeState) -> None:
        self.net.load_state_dict(state.weights[WEIGHTS])
        self.opt.load_state_dict(state.optimizers[OPTIMIZER])
        self.load_scaler(state)

    def run_config(self, tracker: Tracker) -> dict[str, Any]:
        model = {"network": self.spec, "classes": self.classes, "class_names": self.names,
                 "input": "image slice [C, H, W] in [0, 1] (C: 1, or one channel per contrast of data.contrasts): the "
                          "dataset's normalisation, 0 outside the body",
                 "output": "logits [C, H, W]; channel c = label id classes[c]",
                 "features": "global average pool of the bottleneck block (UNet: channels[-1] values per slice; "
                             "FlexibleUNet: the encoder's deepest stage)"}
        training = {"config": self.cfg.to_dict(), "objective": "DiceCE (softmax, one-hot targets, Dice + CE weights 1)",
                    **self.training_info(tracker)}
        return {"method": SEGMENTER, "model": model, "data": self.data, "training": training, "weights": {"model": WEIGHTS}}

    def batches(self, ds: SliceDataset, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler = StepBatches(len(ds), self.cfg.batch, self.cfg.seed, start, stop)
        if self.cfg.num_workers == 0:
            return (collate_labels([ds[i] for i in idx]) for idx in sampler)
        return iter(torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=self.cfg.num_workers,
                                                collate_fn=collate_labels, pin_memory=torch.cuda.is_available()))

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        return self.lut[labels.clamp(0, self.lut.numel() - 1)]

    def _loss(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        x, y = b["image"].to(self.rt.device), self._targets(b["labels"]).to(self.rt.device)
        with self.rt.autocast():
            logits = self.net(x)
        return self.loss_fn(logits.float(), y)

    def step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        g = step_generator(self.cfg.seed, step, 0)
        torch.manual_seed(step_seed(self.cfg.seed, step, 0))
        if self.cfg.augment_flips:
            flip = (torch.rand(batch["image"].shape[0], generator=g) < 0.5)[:, None, None, None]
            batch = {k: torch.where(flip, v.flip(-1), v) for k, v in batch.items()}
        self.net.train()
        loss = self._loss(batch)
        optimizer_step(loss, self.opt, list(self.net.parameters()), self.scaler, self.cfg.grad_clip)
        self.scaler.update()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self, step: int) -> float | None:
        idx = spread(len(self.val_ds), 64)
        if not idx:
            return None
        self.net.eval()
        total = 0.0
        for s in range(0, len(idx), self.cfg.batch):
            chunk = idx[s : s + self.cfg.batch]
            total += float(self._loss(collate_labels([self.val_ds[i] for i in chunk]))) * len(chunk)
        return total / len(idx)


def _check_resumable(stored: Mapping[str, Any], spec: dict[str, Any], classes: list[int], cfg: TrainConfig) -> None:
    model = stored.get("model", {})
    if model.get("network") != spec:
        raise ConfigError("resume: the run was trained with another segmenter network")
    if [int(c) for c in model.get("classes", [])] != classes:
        raise ConfigError(f"resume: the run was trained on classes {model.get('classes')}, the dataset now has {classes}")
    check_trajectory_unchanged(stored, cfg, SEGMENTER_TRAJECTORY)


@dataclass
class SegmenterPlan:
    """What the segmenter learns, read from the dataset when its data are checked."""

    classes: list[int] = field(default_factory=list)  # label ids; network channel c = classes[c]
    spec: dict[str, Any] = field(default_factory=dict)  # the U-Net (MONAI class + arguments)
    names: dict[str, str] | None = None


def segmenter_recipe(net_cfg: SegmenterConfig, cfg: TrainConfig) -> tuple[Recipe, SegmenterPlan]:
    """The segmenter's part of a run (see :func:`seg2med.training.loop.run_training`) and its plan, filled in once
    the run has checked the dataset (the classes are the label ids it stores)."""
    plan = SegmenterPlan()

    def check_data(ds: SliceDataset) -> None:
        check_has_labels(ds.manifest, ds.root)
        classes = dataset_classes(ds.root, ds.manifest)
        if len(classes) < 2:
            raise InputError(f"{ds.root}: the stored labels hold only background (nothing to segment)")
        spec = net_cfg.spec(len(classes), ds.channels)
        size = ds.manifest["config"]["size"]
        h, w = (size, size) if isinstance(size, int) else size
        f = downsampling(spec)
        if h % f or w % f:
            raise ConfigError(f"slice size {h}x{w} of {ds.root} is not divisible by {f} (segmenter down-sampling)")
        plan.classes, plan.spec, plan.names = classes, spec, class_names(ds.manifest, classes)

    def describe(learner: Learner, ctx: Context) -> str:
        return (f"segmenter: {len(plan.classes)} classes, {count_parameters(learner.net) / 1e6:.2f} M parameters, "
                f"{ctx.rt.device} {ctx.rt.precision}, train {len(ctx.train_ds)} slices, val {len(ctx.val_ds)} slices")

    return Recipe(
        method=SEGMENTER, cfg=cfg, optimizers=(OPTIMIZER,), what="train-segmenter", check_data=check_data,
        check_resumable=lambda stored: _check_resumable(stored, plan.spec, plan.classes, cfg),
        build=lambda ctx: SegmenterLearner(ctx, plan.spec, plan.classes, plan.names, cfg), describe=describe,
    ), plan


def recipe_from_options(method: str, preset: str | None = None, blocks: Mapping[str, Any] | None = None,
                        model: Mapping[str, Any] | None = None, scheduler: Mapping[str, Any] | None = None,
                        training: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> Recipe:
    """The method registry's builder: ``model`` holds :class:`SegmenterConfig` fields, ``training`` overrides
    :func:`default_train_config`."""
    m_over = {**_block(check_blocks(blocks), "model"), **dict(model or {})}
    known = {f.name for f in dataclasses.fields(SegmenterConfig)}
    unknown = sorted(set(m_over) - known)
    if unknown:
        raise ConfigError(f"model config of segmenter: unknown keys {unknown} (known: {sorted(known)})")
    cfg = default_train_config(**{**_block(check_blocks(blocks), "training"), **dict(training or {})})
    recipe, _ = segmenter_recipe(SegmenterConfig(**m_over), cfg)
    return recipe


def train_segmenter(
    data_dir: str | Path,
    out_dir: str | Path,
    net_cfg: SegmenterConfig | None = None,
    train_cfg: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the segmenter on the real image slices -> stored labels of a prepared dataset; returns a summary.

    ``train_cfg`` defaults to :func:`default_train_config` (its ``ema_decay``,
    ``intensity_jitter`` and ``val_steps`` are unused). A dataset without
    stored labels is an :class:`InputError`. The summary adds ``classes``.
    """
    recipe, plan = segmenter_recipe(net_cfg or SegmenterConfig(), train_cfg or default_train_config())
    summary = run_training(recipe, data_dir, out_dir, resume=resume, overwrite=overwrite, progress=progress)
    return {**summary, "classes": plan.classes}


__all__ = ["SegmenterConfig", "default_train_config", "train_segmenter"]

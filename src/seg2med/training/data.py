"""Training batches: step-seeded slice indices, loading, augmentation, and the dataset summary of a run."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from seg2med.data.augment import PriorResimulation, PriorSource, RandomGeometry
from seg2med.data.dataset import SliceDataset, load_dataset_manifest
from seg2med.data.spec import DataSpec
from seg2med.errors import ConfigError, InputError
from seg2med.io.budget import check_memory
from seg2med.training.config import AUGMENT_FIELDS, AUGMENT_OPTION_NAMES, TrainConfig
from seg2med.training.runtime import step_generator

log = logging.getLogger(__name__)


def open_split(data_dir: str | Path, split: str, neighbours: int) -> SliceDataset:
    """A split of a prepared dataset (every prepared axis)."""
    return SliceDataset(data_dir, split=split, neighbours=neighbours)


def check_channels(ds: SliceDataset, image_channels: int) -> None:
    """The network's image channels are the dataset's contrasts (1 for single-contrast data)."""
    if ds.channels != int(image_channels):
        raise ConfigError(f"{ds.root} holds {ds.channels} image channel(s) (contrasts); the model has {image_channels}")


def check_slice_size(ds: SliceDataset, levels: int) -> None:
    """The UNet halves the slices ``levels - 1`` times: they must divide evenly."""
    size = ds.manifest["config"]["size"]
    h, w = (size, size) if isinstance(size, int) else size
    f = 2 ** (levels - 1)
    if h % f or w % f:
        raise ConfigError(f"slice size {h}x{w} of {ds.root} is not divisible by {f} ({levels} model levels)")


def ddpm_activation_bytes(channels: tuple[int, ...], num_res_blocks: int) -> float:
    """Bytes per slice pixel per sample that autograd keeps for the backward pass of the diffusion U-Net in fp32.

    Measured (saved-tensor hooks, slope between batch 1 and 2 on 64 x 64 slices): 3659 (``tiny``), 10952
    (``small``) and 21893 (``paper``); about ``350 x channels[0] x (num_res_blocks + 1) / 3`` (within 3 %).
    """
    return 350.0 * int(channels[0]) * (int(num_res_blocks) + 1) / 3.0


def check_batch_memory(ds: SliceDataset, batch: int, what: str, activation_bytes_per_pixel: float = 0.0) -> None:
    """:class:`~seg2med.errors.BudgetError` (one line, before training starts) when one step's batch would not
    fit the memory budget (``--batch 100000``).

    Counted per sample and slice pixel: the collated float32 tensors (image, the ``2 k + 1`` prior
    channels, mask; int64 labels where stored, and with ``k`` > 0 the neighbour labels) twice (the step derives as many again: scaled copies,
    noise, targets, the network input), plus ``activation_bytes_per_pixel`` (the network's saved
    activations, when they live in host memory: training on the CPU). Weights and optimizer state are
    not counted (megabytes)."""
    size = ds.manifest["config"]["size"]
    h, w = (size, size) if isinstance(size, int) else size
    channels = 3 + 2 * int(ds.neighbours)
    if any(r.get("has_labels") for r in ds.manifest.get("subjects", [])):
        channels += 2 + (2 * (1 + 2 * int(ds.neighbours)) if ds.neighbours else 0)
    need = int(batch) * int(h) * int(w) * (2 * 4 * channels + activation_bytes_per_pixel)
    check_memory(need, f"{what}: a batch of {batch} slices of {h} x {w}")


def batch_indices(n: int, batch: int, seed: int, step: int, rank: int, world_size: int) -> list[int]:
    """This process's share of the global batch of ``step`` (distinct slices when the split is large enough)."""
    g = step_generator(seed, step)
    idx = torch.randperm(n, generator=g)[:batch] if n >= batch else torch.randint(n, (batch,), generator=g)
    per = batch // world_size
    return idx[rank * per : (rank + 1) * per].tolist()


class StepBatches(Sampler[list[int]]):
    """Batch sampler yielding :func:`batch_indices` for steps ``start + 1 .. stop``."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1) -> None:
        self.args = (n, batch, seed)
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        n, batch, seed = self.args
        for step in range(self.start + 1, self.stop + 1):
            yield batch_indices(n, batch, seed, step, self.rank, self.world_size)

    def __len__(self) -> int:
        return self.stop - self.start


#: Item keys stacked into a batch besides image, prior and mask when every item has them (what the
#: augmentations of :mod:`seg2med.data.augment` read; unused otherwise).
OPTIONAL_KEYS = ("labels", "neighbour_labels")


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    out = {k: torch.stack([it[k] for it in items]) for k in ("image", "prior", "mask")}
    out.update({k: torch.stack([it[k] for it in items]) for k in OPTIONAL_KEYS if all(k in it for it in items)})
    if all("subject_index" in it for it in items):
        out["subject_index"] = torch.tensor([int(it["subject_index"]) for it in items], dtype=torch.int64)
    return out


def batches(ds: SliceDataset, sampler: StepBatches, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches in step order (a DataLoader with workers, or plain in-process loading)."""
    if num_workers == 0:
        return (collate([ds[i] for i in idx]) for idx in sampler)
    return iter(DataLoader(ds, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                           persistent_workers=False, pin_memory=torch.cuda.is_available()))


BatchTransform = Callable[[Mapping[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]
#: Keys flipped together (those present).
FLIPPED = ("image", "prior", "mask", *OPTIONAL_KEYS)


def augment(batch: Mapping[str, torch.Tensor], g: torch.Generator, flips: bool, jitter: float,
            transforms: Sequence[BatchTransform] = ()) -> dict[str, torch.Tensor]:
    """Left-right flips (image, prior, mask and labels together) and a per-slice scaling of the prior, drawn from
    ``g`` first; ``transforms`` (each drawing from ``g`` in turn) run on the batch before they are applied."""
    out = dict(batch)
    n = out["image"].shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    scale = 1.0 + jitter * (2.0 * torch.rand(n, generator=g) - 1.0)
    for transform in transforms:
        out = transform(out, g)
    if flips and flip.any():
        for k in FLIPPED:
            if k in out:
                out[k] = torch.where(flip[:, None, None, None], out[k].flip(-1), out[k])
    if jitter > 0:
        out["prior"] = (out["prior"] * scale[:, None, None, None]).clamp(0.0, 1.0)
    return out


def augment_step(batch: Mapping[str, torch.Tensor], g: torch.Generator, cfg: TrainConfig, data: Mapping[str, Any],
                 method: str) -> dict[str, torch.Tensor]:
    """A learner step's augmentation: :func:`augment` with the transforms of :func:`batch_transforms`
    (``data`` is the run's data block: its ``path`` is the training dataset)."""
    return augment(batch, g, cfg.augment_flips, cfg.intensity_jitter, batch_transforms(cfg, data.get("path"), method))


def batch_transforms(cfg: TrainConfig, data_dir: str | Path | None, method: str) -> tuple[BatchTransform, ...]:
    """The robustness augmentations ``cfg`` switches on (none: ``()``, and nothing is read), in the order they run:
    the prior re-simulation, then the geometry. Built once per dataset and settings.

    One-line :class:`ConfigError` when they do not apply: prior re-simulation on a dataset without stored
    labels (naming it) or for the unpaired ``cyclegan``, any augmentation for ``prior`` (no steps), a noise
    beyond the bound of the dataset's modality.
    """
    if not (cfg.augments_prior or cfg.augments_geometry):
        return ()
    if method == "prior":
        raise ConfigError("training: the prior method fits in one pass: augmentation options do not apply")
    if cfg.augments_prior and method == "cyclegan":
        raise ConfigError("training: cyclegan trains on unpaired batches: the prior cannot be re-simulated from the "
                          "image's labels (prior_* / class_drop / tissue_drop must be 0)")
    if data_dir is None:
        raise ConfigError("training: augmentation needs the training dataset's folder (the data block has no path)")
    root = Path(data_dir).resolve()
    manifest = root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns if manifest.is_file() else 0
    settings = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in ((k, getattr(cfg, k)) for k in AUGMENT_FIELDS))
    return _transforms(str(root), stamp, settings, method == "cyclegan")


@functools.lru_cache(maxsize=8)
def _transforms(root: str, stamp: int, settings: tuple[tuple[str, Any], ...], unpaired: bool) -> tuple[BatchTransform, ...]:
    cfg = TrainConfig(steps=1, **{k: list(v) if isinstance(v, tuple) else v for k, v in settings})
    out: list[BatchTransform] = []
    if cfg.augments_prior:
        source = PriorSource.from_manifest(load_dataset_manifest(root), root)
        out.append(PriorResimulation(source, cfg.prior_spread, cfg.prior_bias, cfg.prior_noise, cfg.prior_blur,
                                     cfg.class_drop, cfg.tissue_drop, names=AUGMENT_OPTION_NAMES,
                                     phases=cfg.prior_phases or ()))
    if cfg.augments_geometry:
        out.append(RandomGeometry(cfg.zoom_range or (1.0, 1.0), cfg.rotate_deg, cfg.shift, cfg.p_inside,
                                  masked=("image",) if unpaired else ("image", "prior"), names=AUGMENT_OPTION_NAMES))
    return tuple(out)


def data_summary(data_dir: str | Path, train: SliceDataset, val: SliceDataset, neighbours: int) -> dict[str, Any]:
    """What a checkpoint needs to know about its training data (copied from the manifest): its ``data`` block."""
    m = train.manifest
    cfg = m["config"]
    return DataSpec(
        path=str(Path(data_dir).resolve()),
        modality=m.get("modality", cfg.get("modality")),
        sequence=cfg.get("sequence"),
        scheme=cfg.get("scheme"),
        spacing=cfg.get("spacing"),
        size=cfg.get("size"),
        axes=tuple(train.axes),
        ct_window=cfg.get("ct_window"),
        mr_percentiles=cfg.get("mr_percentiles"),
        neighbours=int(neighbours),
        contrasts=tuple(cfg["contrasts"]) if cfg.get("contrasts") else None,
        prior_window=cfg.get("prior_window"),
        image_normalization=image_window(m, train.subjects),
        train={"subjects": train.subjects, "slices": len(train)},
        val={"subjects": val.subjects, "slices": len(val)},
    ).to_dict()


def image_window(manifest: Mapping[str, Any], subjects: list[str]) -> dict[str, Any] | None:
    """Median image window of the training subjects: maps generated [0, 1] images back to image units.

    For CT every subject shares the HU window; for MR each subject had its own
    percentile window and the median is the natural choice for new anatomies.
    """
    recs = [r for r in manifest["subjects"] if r["id"] in set(subjects)]
    contrasts = manifest["config"].get("contrasts")
    if contrasts:  # one window per contrast: {"channels": [...]} in channel order
        if manifest["config"].get("modality") == "mr":  # non-quantitative MR (BraTS): outputs in normalised units
            unit = {"method": "window", "low": 0.0, "high": 1.0}
            return {"channels": [dict(unit) for _ in contrasts], "names": [c["name"] for c in contrasts],
                    "source": "normalised units: each training image was mapped to [0, 1] by its own percentile "
                              "window inside the body (MR of several scanners has no common intensity scale)"}
        windows = [_median_window([(r.get("normalization", {}).get("image") or [{}] * len(contrasts))[c]
                                   for r in recs]) for c in range(len(contrasts))]
        if any(w is None for w in windows):
            return None
        return {"channels": windows, "names": [c["name"] for c in contrasts],
                "source": f"median over {len(recs)} training subjects, per contrast"}
    return _median_window([r.get("normalization", {}).get("image", {}) for r in recs])


def _median_window(params: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    params = [p for p in params if isinstance(p, Mapping) and "low" in p and "high" in p]
    if not params:
        return None
    low = float(np.median([p["low"] for p in params]))
    high = float(np.median([p["high"] for p in params]))
    return {"method": "window", "low": low, "high": high, "source": f"median over {len(params)} training subjects"}


def require_slices(ds: SliceDataset, what: str) -> None:
    if len(ds) == 0:
        raise InputError(f"{ds.root}: the {what} split holds no slices")

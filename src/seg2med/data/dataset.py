"""PyTorch dataset over the shards written by :func:`seg2med.data.prepare_dataset`."""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from seg2med.data.codec import neighbour_indices
from seg2med.data.geometry import check_axis
from seg2med.data.prepare import MANIFEST, SPLITS, load_manifest, read_shard
from seg2med.errors import ConfigError, InputError
from seg2med.io.shards import check_shard

log = logging.getLogger(__name__)


def load_dataset_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset, with the blocks every reader needs checked (one line naming
    the manifest): ``config`` (``axes``, ``size``, ``modality``) and the ``subjects`` list."""
    root = Path(dataset_dir)
    m = load_manifest(root)
    where = root / MANIFEST
    config = m.get("config")
    if not isinstance(config, dict):
        raise InputError(f"{where}: no 'config' block (the settings it was prepared with); prepare the dataset again")
    lacking = [k for k in ("axes", "size", "modality") if k not in config]
    if lacking or not isinstance(config["axes"], list) or not config["axes"]:
        raise InputError(f"{where}: the 'config' block lacks {', '.join(lacking) or 'its slicing axes'}")
    if not isinstance(m.get("subjects"), list) or not all(isinstance(r, dict) and "split" in r for r in m["subjects"]):
        raise InputError(f"{where}: no 'subjects' list (one record with its split per subject)")
    return m


@dataclass(frozen=True)
class _Series:
    """The slices of one subject along one axis, spread over shards."""

    subject: str
    axis: str
    files: tuple[str, ...]
    starts: tuple[int, ...]
    n: int

    def locate(self, i: int) -> tuple[str, int]:
        k = bisect.bisect_right(self.starts, i) - 1
        return self.files[k], i - self.starts[k]


class SliceDataset(Dataset):
    """2D slices of one split as dicts of tensors.

    Each item: ``image`` float32 ``[1, H, W]``; ``prior`` float32
    ``[1 + 2k, H, W]`` with channel ``c`` = prior slice ``index - k + c`` of the
    same subject/axis (edge-replicated, the centre slice is channel ``k``). A
    multi-contrast dataset (``C`` contrasts): ``image`` ``[C, H, W]`` and ``prior``
    ``[C (1 + 2k), H, W]``, contrast-major (the prior slices of contrast ``c`` at
    channels ``c (1 + 2k) .. c (1 + 2k) + 2k``);
    ``mask`` float32 ``[1, H, W]`` (0/1 body); ``labels`` int64 ``[1, H, W]``
    when the dataset has labels, and then, with ``k`` > 0, ``neighbour_labels``
    int64 ``[1 + 2k, H, W]`` (the labels of the prior's slices, same channel
    order); ``subject`` (id), ``subject_index`` (its position in the manifest's
    ``subjects`` list), ``axis``, ``index`` (slice index along the axis). Shards are loaded lazily and kept in a small LRU
    cache that each DataLoader worker holds on its own.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str | None = "train",
        axes: Sequence[str] | str | None = None,
        neighbours: int = 0,
        cache_shards: int = 8,
    ) -> None:
        self.root = Path(dataset_dir)
        self.manifest = load_dataset_manifest(self.root)
        if split is not None and split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)} or None for all)")
        if int(neighbours) < 0:
            raise ConfigError(f"neighbours must be >= 0, got {neighbours}")
        self.split, self.neighbours, self.cache_shards = split, int(neighbours), max(1, int(cache_shards))
        self.axes = self._axes(axes)
        self.series = self._series()
        for name in dict.fromkeys(f for ser in self.series for f in ser.files):
            check_shard(self.root / name)  # a truncated shard fails here, before any training step
        self._items = [(s, i) for s, ser in enumerate(self.series) for i in range(ser.n)]
        self._subject_index = {rec["id"]: n for n, rec in enumerate(self.manifest["subjects"])}
        self._cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        if not self._items:
            log.warning("%s: split %r holds no slices", self.root, split)

    def _axes(self, axes: Sequence[str] | str | None) -> tuple[str, ...]:
        prepared = tuple(self.manifest["config"]["axes"])
        if axes is None:
            return prepared
        wanted = tuple(check_axis(a) for a in ([axes] if isinstance(axes, str) else axes))
        missing = [a for a in wanted if a not in prepared]
        if missing:
            raise ConfigError(f"axes {missing} were not prepared in {self.root} (have {list(prepared)})")
        return wanted

    def _series(self) -> list[_Series]:
        out = []
        for rec in self.manifest["subjects"]:
            if self.split is not None and rec["split"] != self.split:
                continue
            for axis in self.axes:
                try:
                    entries = rec["shards"][axis]
                    out.append(_Series(
                        rec["id"], axis, tuple(e["file"] for e in entries), tuple(int(e["start"]) for e in entries),
                        int(rec["geometry"][axis]["n_slices"]),
                    ))
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(f"{self.root / MANIFEST}: subject {rec.get('id', '?')!r} has no valid {axis} "
                                     f"shard list / geometry ({type(exc).__name__}: {exc})") from None
        return out

    @property
    def channels(self) -> int:
        """Image channels: the number of contrasts of a multi-contrast dataset, else 1."""
        contrasts = self.manifest["config"].get("contrasts")
        return len(contrasts) if contrasts else 1

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(s.subject for s in self.series))

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # every worker starts with its own empty cache
        return state

    def _shard(self, name: str) -> dict[str, np.ndarray]:
        if name in self._cache:
            self._cache.move_to_end(name)
        else:
            self._cache[name] = read_shard(self.root / name)
            while len(self._cache) > self.cache_shards:
                self._cache.popitem(last=False)
        return self._cache[name]

    def _slice(self, ser: _Series, i: int, key: str) -> np.ndarray:
        name, j = ser.locate(i)
        return self._shard(name)[key][j]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} slices")
        s, i = self._items[idx]
        ser = self.series[s]
        name, j = ser.locate(i)
        shard = self._shard(name)
        k = self.neighbours
        around = [int(n) for n in neighbour_indices(i, ser.n, k)]
        prior = np.stack([self._slice(ser, n, "prior") for n in around])  # [1 + 2k, H, W] or [1 + 2k, C, H, W]
        image = np.array(shard["image"][j], dtype=np.float32)
        if image.ndim == 2:
            image = image[None]
        else:  # multi-contrast: contrast-major condition channels
            prior = np.swapaxes(prior, 0, 1).reshape(-1, *prior.shape[2:])
        item: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "prior": torch.from_numpy(prior.astype(np.float32, copy=False)),
            "mask": torch.from_numpy(np.array(shard["mask"][j], dtype=np.float32)[None]),
            "subject": ser.subject,
            "subject_index": self._subject_index[ser.subject],
            "axis": ser.axis,
            "index": int(i),
        }
        if "labels" in shard:
            item["labels"] = torch.from_numpy(np.array(shard["labels"][j], dtype=np.int64)[None])
            if k > 0:  # what re-simulating the prior's neighbour channels needs (seg2med.data.augment)
                item["neighbour_labels"] = torch.from_numpy(np.stack([self._slice(ser, n, "labels") for n in around])
                                                            .astype(np.int64))
        return item

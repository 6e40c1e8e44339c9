"""The data block of a checkpoint (``config.json`` ``data``) or of a dataset (manifest ``config``), typed.

What nnU-Net calls the plans: the modality, the normalisation (CT window, MR
percentiles, the image window of the training images), the slice geometry
(spacing, size, axes) and the condition (sequence, neighbours) that a model
was trained with. :meth:`DataSpec.from_dict` applies the defaults once and
checks the types; :meth:`DataSpec.to_dict` writes back exactly what was read
(key order, values and unknown keys kept).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg2med.data.codec import SliceCodec, VolumeCodec
from seg2med.data.geometry import AXES, mask_outside
from seg2med.data.normalize import DEFAULT_CT_WINDOW, DEFAULT_MR_PERCENTILES, MODALITIES, normalize_volume
from seg2med.errors import InputError


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(v: Any, ok: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(ok(x) for x in v)


#: key -> (check of a stored value, what it must be); a key absent from the source gets the field default
_CHECKS: dict[str, tuple[Any, str]] = {
    "path": (lambda v: v is None or isinstance(v, str), "a string"),
    "modality": (lambda v: isinstance(v, str) and v.lower() in MODALITIES, f"one of {', '.join(MODALITIES)}"),
    "sequence": (lambda v: v is None or isinstance(v, Mapping), "a mapping (the prior's sequence)"),
    "scheme": (lambda v: v is None or isinstance(v, str), "a label scheme name"),
    "spacing": (_is_number, "a number (mm)"),
    "size": (lambda v: _is_int(v) or _pair(v, _is_int), "an integer or a pair of integers (px)"),
    "axes": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(a in AXES for a in v),
             f"a non-empty list of {', '.join(AXES)}"),
    "ct_window": (lambda v: _pair(v, _is_number), "a pair of numbers (level, width in HU)"),
    "mr_percentiles": (lambda v: _pair(v, _is_number), "a pair of numbers (lower, upper percentile)"),
    "neighbours": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "contrasts": (lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(c, Mapping) and isinstance(c.get("name"), str) and isinstance(c.get("sequence"), Mapping)
        for c in v) and len({c["name"] for c in v}) == len(v)),
        "a non-empty list of {name, sequence} with distinct names (the image channels)"),
    "prior_window": (lambda v: v is None or v == "signal", "null (as the images) or 'signal' ([0, upper percentile])"),
    "image_normalization": (lambda v: v is None or isinstance(v, Mapping), "a mapping (low, high)"),
    "train": (lambda v: v is None or isinstance(v, Mapping), "a mapping"),
    "val": (lambda v: v is None or isinstance(v, Mapping), "a mapping"),
}


#: keys a block built here leaves out while they hold None (single-contrast data blocks stay as they were)
_OMITTED_WHEN_NONE = ("contrasts", "prior_window")


@dataclass(frozen=True)
class DataSpec:
    """How a model's data was prepared (the fields in the order a checkpoint writes them)."""

    path: str | None = None  # the dataset folder (informative)
    modality: str = "ct"  # lower case
    sequence: Mapping[str, Any] | None = None  # the prior's sequence config ({"name": ...})
    scheme: str | None = None  # label scheme of the training labels
    spacing: float = 1.0  # in-plane slice spacing, mm
    size: int | tuple[int, int] = 256  # slice size, px
    axes: tuple[str, ...] = ("axial",)  # slicing axes trained on
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW  # (level, width), HU
    mr_percentiles: tuple[float, float] = DEFAULT_MR_PERCENTILES  # (lower, upper), %
    neighbours: int = 0  # 2.5D: prior slices on each side
    contrasts: tuple[Mapping[str, Any], ...] | None = None  # multi-contrast: one {name, sequence} per image channel
    prior_window: str | None = None  # "signal": priors in [0, upper MR percentile] (None: normalised as the images)
    image_normalization: Mapping[str, Any] | None = None  # window mapping [0, 1] back to image units
    train: Mapping[str, Any] | None = None  # {"subjects", "slices"} of the training split
    val: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this class does not know, kept as read
    source: str | None = field(default=None, compare=False)  # where it was read (named in errors)
    layout: tuple[str, ...] | None = field(default=None, repr=False)  # the source's keys in order (None: all)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None, block: str = "data") -> "DataSpec":
        """Read a data block; a key of the wrong type is an :class:`InputError` naming ``source``."""
        where = str(source) if source is not None else "config"
        if not isinstance(d, Mapping):
            raise InputError(f"{where}: the {block} block must be a mapping, got {type(d).__name__}")
        kw: dict[str, Any] = {}
        for key, (ok, what) in _CHECKS.items():
            if key in d:
                value = d[key]
                if not ok(value):
                    raise InputError(f"{where}: {block}.{key} must be {what}, got {value!r}")
                kw[key] = tuple(value) if isinstance(value, list) else value
        if "modality" in kw:
            kw["modality"] = kw["modality"].lower()
        extra = {k: v for k, v in d.items() if k not in _CHECKS}
        return cls(**kw, extra=extra, source=None if source is None else str(source), layout=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        """The data block as read (or, built here, every field in order, then ``extra``); lists for tuples."""
        keys = self.layout if self.layout is not None else (*(k for k in _CHECKS if k not in _OMITTED_WHEN_NONE
                                                              or getattr(self, k) is not None), *self.extra)
        out = {}
        for key in keys:
            value = getattr(self, key) if key in _CHECKS else self.extra[key]
            out[key] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        return out

    def states(self, key: str) -> bool:
        """Whether the source held ``key`` (False: the field holds its default)."""
        return self.layout is None or key in self.layout

    # ------------------------------------------------------------------ what the fields are for
    def normalize(self, volume: Any, body: np.ndarray, *, blank_outside: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        """``volume`` (HU / MR signal) -> float32 in [0, 1] and the params of its window.

        CT: the fixed ``ct_window``; MR: the ``mr_percentiles`` window fitted inside ``body``.
        ``blank_outside``: 0 outside ``body`` (what a dataset's slices hold).
        """
        norm, params = normalize_volume(volume, self.modality, body, self.ct_window, self.mr_percentiles)
        norm = np.asarray(norm, dtype=np.float32)
        return (mask_outside(norm, body) if blank_outside else norm), params

    # ------------------------------------------------------------------ image channels
    @property
    def channels(self) -> int:
        """Image channels: one per contrast of a multi-contrast model, else 1."""
        return len(self.contrasts) if self.contrasts else 1

    @property
    def contrast_names(self) -> tuple[str, ...]:
        """The contrasts' names in channel order (``()`` for a single-contrast model)."""
        return tuple(str(c["name"]) for c in self.contrasts) if self.contrasts else ()

    def sequences(self) -> list[Mapping[str, Any] | None]:
        """The prior's sequence config of each image channel."""
        return [c["sequence"] for c in self.contrasts] if self.contrasts else [self.sequence]

    def normalize_prior(self, volume: Any, body: np.ndarray, *, blank_outside: bool = False
                        ) -> tuple[np.ndarray, dict[str, Any]]:
        """A physics prior -> float32 in [0, 1] and its window params: as :meth:`normalize`, or with ``prior_window``
        ``signal`` the window ``[0, upper MR percentile]`` inside ``body`` (every tissue above the background)."""
        if self.prior_window != "signal":
            return self.normalize(volume, body, blank_outside=blank_outside)
        from seg2med.data.normalize import fit_signal_window

        win = fit_signal_window(volume, body, self.mr_percentiles[1])
        norm = np.asarray(win(volume), dtype=np.float32)
        return (mask_outside(norm, body) if blank_outside else norm), {**win.params, "modality": self.modality}

    def image_window(self, channel: int = 0) -> dict[str, Any]:
        """Parameters that map a model's [0, 1] output (of image ``channel``) back to image units (HU for CT)."""
        ref = self.image_normalization
        if isinstance(ref, Mapping) and isinstance(ref.get("channels"), (list, tuple)):
            windows = ref["channels"]
            if not 0 <= channel < len(windows) or not isinstance(windows[channel], Mapping):
                raise InputError(f"{self.source or 'the checkpoint'}: data.image_normalization.channels has no window "
                                 f"for image channel {channel}")
            return dict(windows[channel])
        if isinstance(ref, Mapping) and "low" in ref and "high" in ref:
            return ref
        if self.modality == "ct":
            level, width = self.ct_window
            return {"method": "window", "low": level - width / 2, "high": level + width / 2}
        raise InputError(f"{self.source or 'the checkpoint'}: MR checkpoint lacks data.image_normalization (intensity window of its "
                         f"training images)")

    def codec(self, affine: np.ndarray, shape: tuple[int, ...], axis: str, grow_multiple: int | None = None,
              margin: int = 0) -> SliceCodec:
        """The :class:`SliceCodec` of ``axis`` slices at this spacing and size for a volume on ``affine`` / ``shape``."""
        return SliceCodec.plan(affine, shape, axis, self.spacing, self.size, grow_multiple=grow_multiple, margin=margin)

    def volume_codec(self, affine: np.ndarray, shape: tuple[int, ...], grow_multiple: int = 1, margin: int = 0) -> VolumeCodec:
        """The :class:`VolumeCodec` (isotropic canvas at this spacing, every side at least the slice size) of a volume
        on ``affine`` / ``shape``: what tri-planar sampling slices along every axis."""
        side = max(self.size) if isinstance(self.size, (list, tuple)) else int(self.size)
        return VolumeCodec.plan(affine, shape, self.spacing, side, grow_multiple, margin)


__all__ = ["DataSpec"]

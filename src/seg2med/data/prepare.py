"""Training-data preparation: (image, prior, body[, labels]) volumes -> sharded 2D slices.

:func:`prepare_dataset` writes a dataset folder::

    <out>/manifest.json
    <out>/<subject>_<axis>_<k>.npz      (or .safetensors)

Each shard holds ``image``/``prior`` (float32 in [0, 1], 0 = background),
``mask`` (uint8 body mask), ``index`` (int32 slice indices) and ``labels``
(smallest int type) when labels were given, as ``[n, H, W]`` arrays. The
manifest records everything needed to undo the normalisation and to put
(generated) slices back on each subject's original grid
(:func:`restore_volume`). The folder is written beside the target and renamed
into place at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg2med._version import __version__
from seg2med.data.codec import SliceCodec
from seg2med.data.geometry import Reorientation, SliceGeometry, check_axis
from seg2med.data.normalize import (
    DEFAULT_CT_WINDOW,
    DEFAULT_MR_PERCENTILES,
    CTWindow,
    check_modality,
    check_percentiles,
    denormalize,
)
from seg2med.data.spec import DataSpec
from seg2med.errors import ConfigError, GridMismatchError, InputError
from seg2med.io import Volume, check_same_grid, read_json, write_json
from seg2med.io.budget import check_memory
from seg2med.io.outputs import replace_folder
from seg2med.io.nifti import smallest_int_dtype
from seg2med.io.shards import read_shard, write_shard

log = logging.getLogger(__name__)

FORMAT = "seg2med-slices"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
SHARD_FORMATS = ("npz", "safetensors")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

ProgressHook = Callable[[int], Any]


# --------------------------------------------------------------------------- config / inputs
@dataclass
class PrepareConfig:
    """Options of :func:`prepare_dataset` (seg2med paper defaults)."""

    modality: str = "ct"
    spacing: float = 1.0
    size: int | tuple[int, int] = 256
    axes: tuple[str, ...] = ("axial",)
    sequence: dict[str, Any] | None = None
    #: multi-contrast data: one ``{"name", "sequence"}`` per image channel (the images and priors of a subject are
    #: given in this order; each channel is normalised on its own, MR percentiles inside the body)
    contrasts: list[dict[str, Any]] | None = None
    #: "signal": each prior in [0, its upper MR percentile] inside the body (tissues stay above the background and keep
    #: their ratios; used for multi-contrast MR); None: normalised as the images
    prior_window: str | None = None
    scheme: str | None = None
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW
    mr_percentiles: tuple[float, float] = DEFAULT_MR_PERCENTILES
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test fractions (by subject)
    split_seed: int = 0
    shard_size: int = 256
    shard_format: str = "npz"
    compress: bool = True  # zlib-compressed .npz (about 6x smaller, loads about 2x slower)

    def validate(self) -> "PrepareConfig":
        """Normalise field types in place; raise :class:`ConfigError` on a bad value."""
        self.modality = check_modality(self.modality)
        if isinstance(self.axes, str):
            self.axes = (self.axes,)
        self.axes = tuple(dict.fromkeys(check_axis(a) for a in self.axes))
        if not self.axes:
            raise ConfigError("at least one slicing axis is needed")
        CTWindow(*self.ct_window)
        self.ct_window = tuple(float(v) for v in self.ct_window)
        self.mr_percentiles = check_percentiles(self.mr_percentiles)
        self.split = _check_fractions(self.split)
        if int(self.shard_size) < 1:
            raise ConfigError(f"shard size must be >= 1, got {self.shard_size}")
        if self.shard_format not in SHARD_FORMATS:
            raise ConfigError(f"unknown shard format {self.shard_format!r} (expected {' or '.join(SHARD_FORMATS)})")
        SliceGeometry.plan((1, 1, 1), (1.0, 1.0, 1.0), self.axes[0], self.spacing, self.size)
        if self.prior_window not in (None, "signal"):
            raise ConfigError(f"prior_window must be null or 'signal', got {self.prior_window!r}")
        if self.contrasts is not None:
            self.contrasts = [dict(c) for c in self.contrasts] if isinstance(self.contrasts, (list, tuple)) else self.contrasts
            DataSpec.from_dict({"contrasts": self.contrasts}, block="prepare")  # the one check of the layout
            self.sequence = dict(self.contrasts[0]["sequence"])
        return self

    @property
    def channels(self) -> int:
        return len(self.contrasts) if self.contrasts else 1

    @property
    def spec(self) -> DataSpec:
        """The data block of the datasets these options prepare."""
        return DataSpec(modality=self.modality, sequence=self.sequence, scheme=self.scheme, spacing=self.spacing,
                        size=self.size, axes=self.axes, ct_window=self.ct_window, mr_percentiles=self.mr_percentiles,
                        contrasts=tuple(self.contrasts) if self.contrasts else None, prior_window=self.prior_window)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("contrasts", "prior_window"):
            if d[key] is None:
                del d[key]  # single-contrast manifests stay as they were
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PrepareConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown prepare options: {', '.join(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw).validate()


@dataclass
class SubjectInput:
    """One subject: target image, its prior, the body mask and optional labels (same grid). Multi-contrast data
    (:attr:`PrepareConfig.contrasts`): ``image`` and ``prior`` are lists, one volume per contrast, in its order."""

    subject_id: str
    image: Volume | Sequence[Volume]
    prior: Volume | Sequence[Volume]
    body: np.ndarray
    labels: Volume | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, copied into the manifest
    split: str | None = None  # fixed split ("train" / "val" / "test"); None = drawn by split_subjects


def _check_fractions(fracs: Sequence[float]) -> tuple[float, float, float]:
    try:
        f = tuple(float(x) for x in fracs)
    except (TypeError, ValueError):
        raise ConfigError(f"split fractions must be three numbers, got {fracs!r}") from None
    if len(f) != 3 or min(f) < 0 or f[0] <= 0 or abs(sum(f) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions (train, val, test) must be >= 0, train > 0, sum to 1; got {fracs!r}")
    return f


# --------------------------------------------------------------------------- splits
def split_subjects(
    subject_ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[str]]:
    """Deterministic split BY SUBJECT into train/val/test (largest-remainder rounding).

    The same ids, fractions and seed always give the same split; train gets at
    least one subject whenever there is one.
    """
    fr = _check_fractions(fractions)
    ids = sorted(subject_ids)
    n = len(ids)
    exact = [n * f for f in fr]
    counts = [int(np.floor(x)) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: -(exact[i] - counts[i]))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in (2, 1):  # take from test, then val, until train has one
        if n and counts[0] == 0 and counts[i] > 0:
            counts[i] -= 1
            counts[0] += 1
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    bounds = np.cumsum([0, *counts])
    return {name: sorted(shuffled[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SPLITS)}


# --------------------------------------------------------------------------- validation
def channel_volumes(v: Volume | Sequence[Volume]) -> list[Volume]:
    """The volumes of a subject's image or prior, one per channel."""
    return [v] if isinstance(v, Volume) else list(v)


def _first(v: Volume | Sequence[Volume]) -> Volume:
    return channel_volumes(v)[0]


def _check_subject(s: SubjectInput, channels: int = 1) -> None:
    if not isinstance(s.subject_id, str) or not _ID_RE.match(s.subject_id):
        raise InputError(f"subject id {s.subject_id!r}: use letters, digits, '.', '_' or '-' only")
    images, priors = channel_volumes(s.image), channel_volumes(s.prior)
    for name, vols in (("images", images), ("priors", priors)):
        if len(vols) != channels:
            raise InputError(f"{s.subject_id}: {len(vols)} {name} for {channels} contrast(s)")
    ref = images[0]
    for vol in (*images[1:], *priors):
        check_same_grid(ref, vol)
    body = s.body
    if isinstance(body, Volume):
        check_same_grid(ref, body)
        body = body.array
    if tuple(np.shape(body)) != ref.shape:
        raise GridMismatchError(f"{s.subject_id}: body mask shape {np.shape(body)} != image shape {ref.shape}")
    if s.labels is not None:
        check_same_grid(ref, s.labels)
    for name, vol in (*(("image", v) for v in images), *(("prior", v) for v in priors)):
        bad = int((~np.isfinite(np.asarray(vol.array, dtype=np.float32))).sum())
        if bad:
            raise InputError(f"{s.subject_id}: {name} ({vol.name}) holds {bad} NaN/inf voxels")
    if not np.asarray(body).any():
        raise InputError(f"{s.subject_id}: body mask is empty")


def check_subjects(subjects: Sequence[SubjectInput], channels: int = 1) -> None:
    """Validate every subject (ids unique, grids shared, images finite, one image and prior per contrast) before
    anything is written."""
    if not subjects:
        raise InputError("no subjects to prepare")
    ids = [s.subject_id for s in subjects]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate subject ids: {', '.join(dupes)}")
    for s in subjects:
        _check_subject(s, channels)


def check_resample_memory(s: SubjectInput, cfg: PrepareConfig) -> None:
    """:class:`~seg2med.errors.BudgetError` (one line, before any work) when resampling ``s`` to
    ``cfg.spacing`` would not fit the memory budget (``--spacing 0.001``: hundreds of GiB)."""
    ref = _first(s.image)
    for axis in cfg.axes:
        geo = cfg.spec.codec(ref.affine, ref.shape, axis).geometry
        # counted: the whole resampled plane stack that ndimage.affine_transform allocates before the centre
        # crop (n x resampled H x W, float32 for image/prior; mask and labels are no wider), one key at a
        # time, plus the n x size slices kept of image, prior, mask and labels (at most 4 B each)
        n = geo.n_slices
        need = 4 * n * math.prod(geo.resampled_shape) + 4 * 4 * n * math.prod(geo.size)
        check_memory(need, f"{s.subject_id} ({ref.name}): resampling {n} {axis} slices to {geo.spacing:g} mm "
                           f"({' x '.join(map(str, geo.resampled_shape))} px each)")


# --------------------------------------------------------------------------- shards
def _write_axis_shards(
    out: Path, sid: str, axis: str, arrays: Mapping[str, np.ndarray], cfg: PrepareConfig
) -> list[dict[str, Any]]:
    n = len(arrays["image"])
    entries = []
    for k, start in enumerate(range(0, n, int(cfg.shard_size))):
        stop = min(n, start + int(cfg.shard_size))
        name = f"{sid}_{axis}_{k:03d}.{cfg.shard_format}"
        part = {key: a[start:stop] for key, a in arrays.items()}
        part["index"] = np.arange(start, stop, dtype=np.int32)
        write_shard(out / name, part, compress=bool(cfg.compress))
        entries.append({"file": name, "start": start, "stop": stop})
    return entries


# --------------------------------------------------------------------------- one subject
def _channel_key(key: str, c: int) -> str:
    return f"{key}#{c}"


def _normalise_subject(s: SubjectInput, body: np.ndarray, spec: DataSpec) -> tuple[dict, dict]:
    """[0, 1] volumes of the image and the prior (multi-contrast: ``image#c`` / ``prior#c``, each channel in its own
    window) and their window parameters (multi-contrast: a list per key, in channel order)."""
    arrays, params = {}, {}
    for key, vols in (("image", channel_volumes(s.image)), ("prior", channel_volumes(s.prior))):
        fn = spec.normalize_prior if key == "prior" else spec.normalize
        if spec.contrasts is None:
            arrays[key], params[key] = fn(vols[0].array, body, blank_outside=True)
            continue
        params[key] = []
        for c, vol in enumerate(vols):
            arrays[_channel_key(key, c)], p = fn(vol.array, body, blank_outside=True)
            params[key].append(p)
    return arrays, params


def _stack_channels(sliced: dict[str, np.ndarray], channels: int) -> dict[str, np.ndarray]:
    """``image#c`` / ``prior#c`` slices ``[n, H, W]`` -> ``image`` / ``prior`` ``[n, C, H, W]`` (multi-contrast)."""
    out = {k: v for k, v in sliced.items() if "#" not in k}
    for key in ("image", "prior"):
        if _channel_key(key, 0) in sliced:
            out[key] = np.stack([sliced[_channel_key(key, c)] for c in range(channels)], axis=1)
    return out


def _prepare_subject(s: SubjectInput, out: Path, cfg: PrepareConfig, split: str) -> dict[str, Any]:
    body = np.asarray(s.body.array if isinstance(s.body, Volume) else s.body, dtype=bool)
    spec = cfg.spec
    arrays, params = _normalise_subject(s, body, spec)
    ref = _first(s.image)
    codecs = {axis: spec.codec(ref.affine, ref.shape, axis) for axis in cfg.axes}
    if s.labels is not None:
        lab = np.asarray(s.labels.array)
        arrays["labels"] = lab.astype(smallest_int_dtype(lab))
    geometry, shards = {}, {}
    for axis, codec in codecs.items():
        geo = codec.geometry
        cut = codec.cut_fraction(body)
        if cut > 0.001:
            log.warning("%s %s: %.1f %% of the body lies outside the %s px slices at %g mm and is cut away "
                        "(raise --size or --spacing)", s.subject_id, axis, 100 * cut,
                        " x ".join(map(str, geo.size)), geo.spacing)
        geometry[axis] = geo.to_dict()
        shards[axis] = _write_axis_shards(out, s.subject_id, axis,
                                          _stack_channels(codec.encode(arrays, body), cfg.channels), cfg)
    log.info("%s (%s): %s", s.subject_id, split, ", ".join(f"{a} {geometry[a]['n_slices']} slices" for a in cfg.axes))
    path = lambda v: str(v.path) if v is not None and v.path is not None else None  # noqa: E731
    paths = lambda v: path(v) if isinstance(v, Volume) else [path(x) for x in v]  # noqa: E731
    return {
        "id": s.subject_id,
        "split": split,
        "modality": cfg.modality,
        "sources": {"image": paths(s.image), "prior": paths(s.prior), "labels": path(s.labels)},
        "original": {"shape": list(ref.shape), "affine": ref.affine.tolist(), "spacing": list(ref.spacing)},
        "orientation": codecs[cfg.axes[0]].reorientation.to_dict(),
        "normalization": params,
        "geometry": geometry,
        "shards": shards,
        "has_labels": s.labels is not None,
        "extra": dict(s.extra),
    }


# --------------------------------------------------------------------------- dataset
def prepare_dataset(
    subjects: Sequence[SubjectInput],
    out_dir: str | Path,
    config: PrepareConfig | None = None,
    overwrite: bool = False,
    progress: ProgressHook | None = None,
    inputs: Sequence[str | Path | None] = (),
) -> dict[str, Any]:
    """Write a sharded 2D-slice dataset folder and return its manifest.

    All inputs are validated before anything is written. ``progress`` (if
    given) is called with ``1`` after each subject (total = ``len(subjects)``).
    ``overwrite`` replaces only a dataset folder seg2med wrote that holds none of the subjects' files
    nor any other of the ``inputs`` (label files, mask folders, tables; :mod:`seg2med.io.outputs`).
    """
    cfg = dataclasses.replace(config or PrepareConfig()).validate()
    check_subjects(subjects, cfg.channels)
    for s in subjects:
        check_resample_memory(s, cfg)
    out = Path(out_dir)
    for s in subjects:
        if s.split is not None and s.split not in SPLITS:
            raise ConfigError(f"subject {s.subject_id}: unknown split {s.split!r} (expected one of {', '.join(SPLITS)})")
    splits = split_subjects([s.subject_id for s in subjects if s.split is None], cfg.split, cfg.split_seed)
    for s in subjects:
        if s.split is not None:
            splits[s.split] = sorted([*splits[s.split], s.subject_id])
    split_of = {sid: name for name, ids in splits.items() for sid in ids}
    inputs = [*inputs, *(v.path for s in subjects for v in (*channel_volumes(s.image), *channel_volumes(s.prior), s.body,
                                                             s.labels) if isinstance(v, Volume))]
    with replace_folder(out, "dataset", overwrite, inputs) as tmp:
        records = []
        for s in subjects:
            records.append(_prepare_subject(s, tmp, cfg, split_of[s.subject_id]))
            if progress is not None:
                progress(1)
        manifest = _manifest(cfg, records, splits)
        write_json(tmp / MANIFEST, manifest)
    log.info("wrote %s: %d subjects, %s", out, len(records), manifest["n_slices"])
    return manifest


def _manifest(cfg: PrepareConfig, records: list[dict[str, Any]], splits: dict[str, list[str]]) -> dict[str, Any]:
    n_slices = {a: sum(r["geometry"][a]["n_slices"] for r in records) for a in cfg.axes}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seg2med_version": __version__,
        "config": cfg.to_dict(),
        "modality": cfg.modality,
        "arrays": {
            "image": f"float32 [n,{'C,' if cfg.contrasts else ''}H,W] in [0,1], 0 outside the body",
            "prior": f"float32 [n,{'C,' if cfg.contrasts else ''}H,W] in [0,1], 0 outside the body",
            "mask": "uint8 [n,H,W] body mask",
            "labels": "int [n,H,W] label map (only when has_labels)",
            "index": "int32 [n] slice index along the axis",
        },
        "splits": splits,
        "n_slices": n_slices,
        "subjects": records,
    }


# --------------------------------------------------------------------------- reading back
def load_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """Read and check ``<dataset_dir>/manifest.json``."""
    d = Path(dataset_dir)
    if not d.is_dir():
        raise InputError(f"{d}: dataset folder not found")
    if not (d / MANIFEST).is_file():
        raise InputError(f"{d}: not a prepared slice dataset (no {MANIFEST}; make one with `seg2med prepare`)")
    m = read_json(d / MANIFEST)
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise InputError(f"{d / MANIFEST}: not a seg2med slice dataset manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{d / MANIFEST}: unsupported format version {m.get('format_version')!r}")
    return m


def get_subject(manifest: Mapping[str, Any], subject_id: str) -> dict[str, Any]:
    """The manifest record of ``subject_id``."""
    for rec in manifest["subjects"]:
        if rec["id"] == subject_id:
            return rec
    raise InputError(f"subject {subject_id!r} not in the dataset")


def _axis_codec(manifest_subject: Mapping[str, Any], axis: str) -> SliceCodec:
    axis = check_axis(axis)
    if axis not in manifest_subject["geometry"]:
        raise ConfigError(f"subject {manifest_subject['id']!r} has no {axis} slices in this dataset")
    return SliceCodec(
        Reorientation.from_dict(manifest_subject["orientation"]),
        SliceGeometry.from_dict(manifest_subject["geometry"][axis]),
    )


def read_subject_slices(
    dataset_dir: str | Path, manifest_subject: Mapping[str, Any], axis: str, key: str = "image"
) -> np.ndarray:
    """All ``key`` slices (``[N, H, W]``) of one subject along ``axis``, from its shards."""
    _axis_codec(manifest_subject, axis)
    parts = [read_shard(Path(dataset_dir) / e["file"]) for e in manifest_subject["shards"][check_axis(axis)]]
    if key not in parts[0]:
        raise InputError(f"shards of {manifest_subject['id']!r} hold no {key!r} array")
    return np.concatenate([p[key] for p in parts], axis=0)


def _as_stack(slices: Any, channel: int | None = None) -> np.ndarray:
    arr = np.asarray(slices.detach().cpu().numpy() if hasattr(slices, "detach") else slices)
    if arr.ndim == 4 and channel is not None:
        arr = arr[:, channel]
    elif arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise InputError(f"expected slices [N, H, W] or [N, 1, H, W], got shape {arr.shape}")
    return arr


def restore_volume(
    slices: Any, manifest_subject: Mapping[str, Any], axis: str, modality: str | None = None, key: str = "image",
    channel: int | None = None,
) -> np.ndarray:
    """Put normalised slices (e.g. generated images) back on the subject's original grid.

    Linear in-plane interpolation; the normalisation of ``key`` is undone (HU
    for CT). ``modality``, when given, must match the dataset's. Multi-contrast data: ``channel`` picks the
    contrast (of ``[N, C, H, W]`` slices, and its window).
    """
    if modality is not None and check_modality(modality) != manifest_subject.get("modality", modality.lower()):
        raise ConfigError(f"modality {modality!r} does not match the dataset ({manifest_subject['modality']})")
    params = manifest_subject["normalization"][key]
    if isinstance(params, list):
        if channel is None:
            raise ConfigError(f"subject {manifest_subject['id']!r} has {len(params)} contrasts: say which channel")
        params = params[channel]
    vol = _axis_codec(manifest_subject, axis).decode(_as_stack(slices, channel).astype(np.float32), order=1, fill=0.0)
    return np.asarray(denormalize(vol, params), dtype=np.float32)


def restore_labels(slices: Any, manifest_subject: Mapping[str, Any], axis: str) -> np.ndarray:
    """Put label/mask slices back on the original grid (nearest neighbour, 0 where cropped)."""
    return _axis_codec(manifest_subject, axis).decode(_as_stack(slices), order=0, fill=0)


def original_affine(manifest_subject: Mapping[str, Any]) -> np.ndarray:
    """The subject's original 4x4 affine (for writing restored volumes)."""
    return np.asarray(manifest_subject["original"]["affine"], dtype=np.float64)


@dataclass
class RestoredSubject:
    """A prepared subject back on its original grid: labels, image (HU / MR signal) and body mask."""

    subject_id: str
    labels: Volume
    image: Volume
    body: np.ndarray


def restore_subject(dataset_dir: str | Path, manifest_subject: Mapping[str, Any], axis: str = "axial",
                    channel: int | None = None) -> RestoredSubject:
    """Labels, body and real image of a stored subject, restored from its slices (what a model sees, unnormalised;
    multi-contrast data: the image of ``channel``)."""
    if not manifest_subject.get("has_labels"):
        raise InputError(f"{dataset_dir}: subject {manifest_subject['id']} has no stored labels")
    affine = original_affine(manifest_subject)
    labels = restore_labels(read_subject_slices(dataset_dir, manifest_subject, axis, key="labels"), manifest_subject, axis)
    body = restore_labels(read_subject_slices(dataset_dir, manifest_subject, axis, key="mask"), manifest_subject, axis)
    image = restore_volume(read_subject_slices(dataset_dir, manifest_subject, axis, key="image"), manifest_subject, axis,
                           channel=channel)
    return RestoredSubject(str(manifest_subject["id"]), Volume(labels.astype(np.int32), affine), Volume(image, affine),
                           body.astype(bool))


__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "PrepareConfig",
    "SubjectInput",
    "channel_volumes",
    "check_subjects",
    "get_subject",
    "load_manifest",
    "original_affine",
    "prepare_dataset",
    "read_shard",
    "read_subject_slices",
    "restore_labels",
    "restore_subject",
    "RestoredSubject",
    "restore_volume",
    "split_subjects",
    "write_shard",
]

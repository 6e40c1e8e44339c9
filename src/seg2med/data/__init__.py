"""Training-data preparation: the data spec, normalisation, invertible slice geometry and codec, shards, dataset.

Callers pass images, priors and body masks in (preparation computes neither
priors nor masks; only the training augmentation re-simulates priors from stored labels, with
:mod:`seg2med.physics`). :class:`SliceDataset` and the augmentations of :mod:`seg2med.data.augment`
(:class:`PriorResimulation`, :class:`RandomGeometry`, :class:`PriorSource`) are imported lazily
(they need torch).
"""

from __future__ import annotations

from typing import Any

from seg2med.data.codec import SliceCodec, VolumeCodec, stack_neighbours
from seg2med.data.geometry import AXES, Reorientation, SliceGeometry, VolumeGeometry, from_slices, mask_outside, to_slices
from seg2med.data.normalize import (
    CTWindow,
    CTWindowd,
    IntensityWindow,
    PercentileWindow,
    PercentileWindowd,
    denormalize,
    fit_percentile_window,
    normalize_volume,
    window_from_params,
)
from seg2med.data.prepare import (
    MANIFEST,
    PrepareConfig,
    SubjectInput,
    check_subjects,
    get_subject,
    load_manifest,
    original_affine,
    prepare_dataset,
    read_shard,
    read_subject_slices,
    restore_labels,
    restore_volume,
    split_subjects,
)
from seg2med.data.spec import DataSpec

__all__ = [
    "AXES",
    "MANIFEST",
    "CTWindow",
    "CTWindowd",
    "DataSpec",
    "IntensityWindow",
    "PercentileWindow",
    "PercentileWindowd",
    "PrepareConfig",
    "PriorResimulation",
    "PriorSource",
    "RandomGeometry",
    "Reorientation",
    "SliceCodec",
    "SliceDataset",
    "SliceGeometry",
    "SubjectInput",
    "VolumeCodec",
    "VolumeGeometry",
    "check_subjects",
    "denormalize",
    "fit_percentile_window",
    "from_slices",
    "get_subject",
    "load_manifest",
    "mask_outside",
    "normalize_volume",
    "original_affine",
    "prepare_dataset",
    "read_shard",
    "read_subject_slices",
    "restore_labels",
    "restore_volume",
    "split_subjects",
    "stack_neighbours",
    "to_slices",
    "window_from_params",
]


_AUGMENT = ("PriorResimulation", "PriorSource", "RandomGeometry")


def __getattr__(name: str) -> Any:
    if name == "SliceDataset":
        from seg2med.data.dataset import SliceDataset

        return SliceDataset
    if name in _AUGMENT:
        from seg2med.data import augment

        return getattr(augment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Evaluation metrics: pure functions over arrays plus a per-subject accumulator.

* image similarity: :func:`ssim`, :func:`psnr`, :func:`mae` (``image``),
  :func:`ms_ssim`, :func:`histcc`, :func:`fsim` (``similarity``)
* distribution distances: :func:`frechet_distance`, :func:`feature_statistics`,
  :func:`frechet_from_features`, :func:`fid`, :func:`inception_features` (``frechet``)
* segmentation fidelity: :func:`dice_per_class`, :func:`dice_per_region`, :func:`hd95_per_class` (``segmentation``)
* statistics: :func:`mean_sd`, :func:`mann_whitney`, :func:`per_subject_means`,
  :class:`MetricAccumulator` (``stats``)

torch, MONAI, piq and torch-fidelity are imported only when a metric needs them.
"""

from seg2med.metrics.frechet import (
    FID_WEIGHTS_ENV,
    feature_statistics,
    fid,
    frechet_distance,
    frechet_from_features,
    inception_features,
    load_inception,
    resolve_fid_weights,
)
from seg2med.metrics.image import mae, psnr, ssim
from seg2med.metrics.segmentation import dice_per_class, dice_per_region, hd95_per_class
from seg2med.metrics.similarity import (
    MS_SSIM_WEIGHTS,
    fsim,
    histcc,
    ms_ssim,
    ms_ssim_min_size,
)
from seg2med.metrics.stats import (
    MannWhitney,
    MeanSD,
    MetricAccumulator,
    count_valid,
    mann_whitney,
    mean_sd,
    per_subject_means,
)

__all__ = [
    "FID_WEIGHTS_ENV",
    "MS_SSIM_WEIGHTS",
    "MannWhitney",
    "MeanSD",
    "MetricAccumulator",
    "count_valid",
    "dice_per_class",
    "dice_per_region",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "frechet_from_features",
    "fsim",
    "hd95_per_class",
    "histcc",
    "inception_features",
    "load_inception",
    "mae",
    "mann_whitney",
    "mean_sd",
    "ms_ssim",
    "ms_ssim_min_size",
    "per_subject_means",
    "psnr",
    "resolve_fid_weights",
    "ssim",
]

"""Image-similarity metrics: pure functions (+ accumulators in later modules)."""

from seg2med.metrics.image import mae, psnr, ssim

__all__ = ["mae", "psnr", "ssim"]

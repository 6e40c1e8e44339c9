"""Samplers (k-diffusion style): they take a denoiser callable, never a network class."""

from seg2med.sampling.sampler import (
    SAMPLERS,
    Denoiser,
    autocast_denoiser,
    check_strength,
    conditional_denoiser,
    default_sampler,
    prior_anchored_steps,
    sample,
    training_target,
    X0Parametrisation,
    x0_corrected_denoiser,
)
from seg2med.sampling.anchor import PriorAnchor
from seg2med.sampling.planes import plane_cycle, plane_cycling_denoiser

__all__ = ["SAMPLERS", "Denoiser", "autocast_denoiser", "check_strength", "conditional_denoiser", "default_sampler", "prior_anchored_steps", "sample", "training_target", "x0_corrected_denoiser", "X0Parametrisation", "PriorAnchor", "plane_cycle", "plane_cycling_denoiser"]

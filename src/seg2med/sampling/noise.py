"""Start noise of the slices of one volume, correlated across slices.

A 2D model sampled slice by slice starts every slice from its own noise, so neighbouring slices follow unrelated
trajectories and the coronal and sagittal views are streaked. Correlating the start noise of neighbouring slices
makes neighbouring trajectories close while every slice keeps exactly the N(0, 1) noise the sampler expects:

    z_0 = e_0,    z_k = c_k z_{k-1} + sqrt(1 - c_k^2) e_k        (e_k independent N(0, 1))

an AR(1) chain along the slices. Each step is the spherical interpolation (slerp) between the previous slice's noise
and fresh noise at angle ``arccos c_k`` (fresh high-dimensional Gaussian noise is orthogonal to it up to
O(1/sqrt(voxels))), the interpolation inter-slice-consistent samplers use between slice noises. Slices ``j`` apart
then correlate by ``c^j``: ``c = 0`` is independent noise, ``c = 1`` the same noise on every slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_correlation(correlation: float) -> float:
    """``correlation`` as a float in [0, 1]; ValueError otherwise."""
    c = float(correlation)
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"slice noise correlation must be in [0, 1], got {correlation}")
    return c


def correlated_slice_noise(n: int, shape: Sequence[int], correlation: float, generator: torch.Generator,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Start noise ``[n, *shape]`` of ``n`` consecutive slices: every slice N(0, 1) per voxel, neighbouring slices
    correlated by ``correlation`` (AR(1) chain, see the module docstring), drawn from ``generator`` (on the CPU).

    ``correlation`` 1 draws one slice and repeats it; otherwise slice ``k`` is drawn ``k``-th, so a seed gives the
    same noise whatever the batch the slices are later sampled in.
    """
    c = check_correlation(correlation)
    first = torch.randn((1, *shape), generator=generator, dtype=dtype)
    if c == 1.0:
        return first.expand(n, *shape).clone()
    out = torch.empty((n, *shape), dtype=dtype)
    out[0] = first[0]
    fresh = (1.0 - c * c) ** 0.5
    for k in range(1, n):
        out[k] = c * out[k - 1] + fresh * torch.randn(tuple(shape), generator=generator, dtype=dtype)
    return out


__all__ = ["check_correlation", "correlated_slice_noise"]

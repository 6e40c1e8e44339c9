"""Tri-planar sampling: a 2D denoiser made 3D-consistent by denoising the whole volume along a different axis at
each step.

A 2D model sampled slice by slice draws every slice from its own trajectory, so neighbouring slices disagree and
the coronal and sagittal views are streaked. Here the state of the reverse diffusion is the whole volume
``[1, C, D0, D1, D2]`` (an isotropic canvas, :class:`seg2med.data.geometry.VolumeGeometry`): at step ``i`` it is
cut into slices along axis ``axes[i]`` (cycling), the network (trained on slices of all three orientations)
predicts each slice, and the predictions are put back into one volume on which the scheduler takes its step. Every
step therefore sees the planes the previous steps denoised; after a full cycle each voxel has been predicted in
all three orientations (score fusion by alternation, as TPDM, Lee et al. 2023, "Improving 3D imaging with
pre-trained perpendicular 2D diffusion models", alternates perpendicular 2D models). Memory stays bounded by
``batch`` slices per network call.

Only slices in which the condition shows any body are run through the network: the others are air, and their
prediction is the background (``background``: the clean-sample value there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from seg2med.data.codec import neighbour_indices
from seg2med.sampling.sampler import Denoiser, X0Parametrisation

#: A condition factory: slices of the condition ``[n, K, H, W]`` -> a denoiser of those n slices.
SliceDenoiserFactory = Callable[[torch.Tensor], Denoiser]


def plane_cycle(axes: Sequence[int], calls: int) -> list[int]:
    """The axis of each of ``calls`` steps: ``axes`` repeated so that the LAST step is along ``axes[0]`` (the
    view the model was trained on first, usually axial, finishes the volume)."""
    axes = list(axes)
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"axes must be a non-empty list of 0, 1, 2, got {axes}")
    n = len(axes)
    return [axes[(i - (calls - 1)) % n] for i in range(calls)]


def slices_of(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """``[C, D0, D1, D2]`` (or ``[D0, D1, D2]``) -> a view of its slices along canonical ``axis``: ``[Da, C, ...]``
    (``[Da, ...]``)."""
    offset = volume.ndim - 3
    return volume.movedim(offset + axis, 0)


def neighbour_slices(prior: torch.Tensor, axis: int, k: int) -> torch.Tensor:
    """``[D0, D1, D2]`` -> ``[Da, 1 + 2k, H, W]``: the slices along ``axis`` with their +-k neighbours, edge slices
    repeated (the 2.5D condition of :func:`seg2med.data.codec.stack_neighbours`, along any axis)."""
    s = slices_of(prior, axis)
    n = s.shape[0]
    return s[torch.from_numpy(neighbour_indices(np.arange(n), n, k)).to(s.device)]


def plane_cycling_denoiser(
    make_denoiser: SliceDenoiserFactory,
    prior: torch.Tensor,
    par: X0Parametrisation,
    background: torch.Tensor,
    axes: Sequence[int],
    calls: int,
    neighbours: int = 0,
    batch: int = 8,
    on_slices: Callable[[int], None] | None = None,
) -> Denoiser:
    """A denoiser of the whole volume ``x`` (``[1, C, D0, D1, D2]``) that denoises it slice by slice along
    :func:`plane_cycle` ``(axes, calls)[i]`` at its ``i``-th call.

    ``prior``: the condition volume ``[D0, D1, D2]`` in [-1, 1] (-1 outside the body), sliced with ``neighbours``
    on each side along the current axis; ``make_denoiser(cond)`` is the 2D denoiser of those slices (the network
    with its condition bound, autocast and guidance included). ``background``: the clean sample outside the body
    (``[1, C, D0, D1, D2]``), the prediction of the slices without body. ``par`` converts it to the network's
    output kind. ``on_slices(n)`` is told how many slices each call ran through the network.
    """
    cycle = plane_cycle(axes, calls)
    body = prior > -1.0 + 1e-3
    active = {a: torch.nonzero(slices_of(body, a).flatten(1).any(dim=1)).flatten() for a in set(cycle)}
    conds = {a: neighbour_slices(prior, a, neighbours) for a in set(cycle)}
    count = [0]

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        axis = cycle[min(count[0], len(cycle) - 1)]
        count[0] += 1
        out = par.output(background.to(x.dtype), x, t).clone()
        xs, outs, idx = slices_of(x[0], axis), slices_of(out[0], axis), active[axis]
        for start in range(0, len(idx), batch):
            j = idx[start : start + batch]
            tt = t.reshape(-1)[:1].expand(len(j))
            outs[j] = make_denoiser(conds[axis][j])(xs[j], tt).to(out.dtype)
        if on_slices is not None:
            on_slices(len(idx))
        return out

    return denoise


__all__ = ["SliceDenoiserFactory", "neighbour_slices", "plane_cycle", "plane_cycling_denoiser", "slices_of"]

"""Synthetic paired CT subjects from the procedural phantom, for smoke tests and device checks.

Each subject ``s{i}`` is phantom seed ``i``: its CT prior (HU), an "image" that is
``gain * prior + offset_hu`` plus seeded Gaussian noise, the body mask and, optionally, the
labels. Real evaluation uses real images; this only gives training code something learnable
with a known answer (the image is an affine map of the prior).
"""

from __future__ import annotations

import numpy as np

from seg2med.anatomy import make_phantom
from seg2med.data.prepare import SubjectInput
from seg2med.labels import canonical_scheme
from seg2med.physics.prior import simulate_prior


def phantom_subjects(
    n: int,
    *,
    size: int = 32,
    spacing: float = 8.0,
    slices: int = 6,
    gain: float = 1.0,
    offset_hu: float = 0.0,
    noise_hu: float = 30.0,
    labels: bool = False,
) -> list[SubjectInput]:
    """``n`` phantom subjects (seeds 0 .. n-1; noise seeded by the same index)."""
    scheme = canonical_scheme("total")
    out = []
    for i in range(n):
        vol = make_phantom(seed=i, spacing=spacing, slices=slices, size=size)
        prior = vol.like(simulate_prior(vol.array, scheme, "ct").astype(np.float32))
        image = gain * prior.array + offset_hu + np.random.default_rng(i).normal(0.0, noise_hu, prior.shape)
        out.append(SubjectInput(f"s{i}", prior.like(image.astype(np.float32)), prior, vol.array != 0,
                                labels=vol if labels else None))
    return out

"""PNG previews: orthogonal centre slices (axial, coronal, sagittal) of volumes, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from seg2med.io.outputs import atomic_outputs, owner_tag
from seg2med.io.nifti import Volume


@dataclass
class Panel:
    """One row of a preview: a volume, a title and how to display it."""

    title: str
    volume: Volume
    kind: str = "image"  # "image" or "labels"
    window: tuple[float, float] | None = None  # display range; None = 1st-99th percentile


def _canonical(vol: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Array in closest-RAS voxel order and its spacing (display only; flips/permutations)."""
    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(np.asarray(vol.array), ornt)
    spacing = tuple(float(vol.spacing[int(ax)]) for ax in ornt[:, 0].argsort())
    return arr, spacing


def _planes(arr: np.ndarray, spacing: Sequence[float]) -> list[tuple[str, np.ndarray, float]]:
    """(name, 2D image with rows = display vertical, aspect) for the three planes through the centre."""
    cx, cy, cz = (s // 2 for s in arr.shape)
    sx, sy, sz = spacing
    # radiological-free display: subject's right on the image left (like most viewers in RAS display)
    axial = np.flipud(arr[:, :, cz].T)  # rows: anterior at top
    coronal = np.flipud(arr[:, cy, :].T)  # rows: superior at top
    sagittal = np.flipud(arr[cx, :, :].T)
    return [("axial", axial, sy / sx), ("coronal", coronal, sz / sx), ("sagittal", sagittal, sz / sy)]


def save_preview(panels: Sequence[Panel], path: str | Path, overwrite: bool = False, title: str | None = None,
                 inputs: Sequence[str | Path | None] = ()) -> Path:
    """Write a PNG grid: one row per panel, columns axial | coronal | sagittal (its ``Software`` text
    chunk names seg2med, so ``overwrite`` may replace it later; see :mod:`seg2med.io.outputs`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 3, figsize=(9, 3 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        arr, spacing = _canonical(panel.volume)
        if panel.kind == "labels":
            vmin, vmax, cmap = 0, max(int(arr.max()), 1), "nipy_spectral"
        else:
            finite = arr[np.isfinite(arr)]
            lo, hi = panel.window or (np.percentile(finite, 1), np.percentile(finite, 99.5))
            vmin, vmax, cmap = float(lo), float(max(hi, lo + 1e-6)), "gray"
        for ax, (plane, img, aspect) in zip(row, _planes(arr, spacing)):
            ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
            ax.set_title(f"{panel.title} — {plane}", fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_outputs([path], overwrite, inputs) as (tmp,):
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": owner_tag()})
    plt.close(fig)
    return Path(path)

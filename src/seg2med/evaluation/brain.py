"""Brain evaluation: the segmenter on synthetic contrasts against the mask they were made from, beside its Dice on the
real images (Med-DDPM's tumour Dice 0.62 synthetic vs 0.65 real), and SSIM / PSNR per contrast inside the brain.

Regions are the BraTS evaluation regions of the label scheme (``regions`` of ``brats_medddpm``: whole tumour = necrotic
core + oedema + enhancing, tumour core = core + enhancing, enhancing tumour). Image similarity: each contrast (BraTS
images are not quantitative, and a model's output units are those of its training images) is mapped to [0, 1] through
its own 0.5-99.5th percentiles inside the brain, the real and the synthetic image each, and the two are compared inside
the brain (axial SSIM, PSNR at data range 1): the per-image normalisation BraTS pipelines apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seg2med.errors import InputError
from seg2med.io import Volume, check_same_grid
from seg2med.labels import LabelScheme
from seg2med.metrics import dice_per_region, psnr, ssim

#: window of the image comparison: these percentiles of the real image inside the brain
WINDOW_PERCENTILES = (0.5, 99.5)


def region_ids(scheme: LabelScheme) -> dict[str, list[int]]:
    """The scheme's evaluation regions as label ids (its YAML ``regions``)."""
    if not scheme.regions:
        raise InputError(f"label scheme {scheme.name!r} defines no evaluation regions (whole tumour, tumour core, ...)")
    return {name: [scheme.id_of(n) for n in members] for name, members in scheme.regions.items()}


def _unit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(image, np.float64) - low) / max(high - low, 1e-12), 0.0, 1.0)


def unit_in_brain(image: Volume | np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``image`` in [0, 1] through its own :data:`WINDOW_PERCENTILES` inside ``brain``."""
    arr = np.asarray(image.array if isinstance(image, Volume) else image, np.float64)
    low, high = (float(v) for v in np.percentile(arr[brain], WINDOW_PERCENTILES))
    return _unit(arr, low, high)


def contrast_similarity(pred: Volume, real: Volume, brain: np.ndarray) -> dict[str, float]:
    """SSIM (axial) and PSNR (dB, data range 1) inside ``brain``, each image in its own percentile window."""
    check_same_grid(real, pred)
    p, r = unit_in_brain(pred, brain), unit_in_brain(real, brain)
    return {"ssim": ssim(p, r, 1.0, mask=brain, axis=2), "psnr": psnr(p, r, 1.0, mask=brain)}


@dataclass
class BrainEvaluation:
    """Dice per region (synthetic and, when real images were given, real) and image similarity per contrast."""

    regions: dict[str, dict[str, float | None]] = field(default_factory=dict)  # region -> {"synthetic", "real"}
    contrasts: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "seg2med-brain-evaluation", "regions": self.regions, "contrasts": self.contrasts,
                "notes": self.notes}


def evaluate_brain(pred: Mapping[str, Volume], labels: Volume, scheme: LabelScheme, segmenter: Any | None = None,
                   real: Mapping[str, Volume] | None = None, contrasts: Sequence[str] | None = None) -> BrainEvaluation:
    """``pred`` (contrast -> synthetic volume) made from ``labels`` (in ``scheme``, with evaluation regions): the
    segmenter's Dice per region on the synthetic contrasts (``contrasts``: its input order, default ``pred``'s) and on
    ``real`` (the same contrasts of the real patient), and SSIM / PSNR of each contrast ``real`` has."""
    ev = BrainEvaluation()
    lab = np.asarray(labels.array)
    brain = lab != 0
    for vol in pred.values():
        check_same_grid(labels, vol)
    order = list(contrasts or pred)
    regions = region_ids(scheme)
    if segmenter is not None:
        from seg2med.inference.segment import segment_volume

        missing = [c for c in order if c not in pred]
        if missing:
            raise InputError(f"the segmenter takes {', '.join(order)}; the outputs lack {', '.join(missing)}")
        syn = dice_per_region(np.asarray(segment_volume([pred[c] for c in order], segmenter, body=brain).array),
                              lab, regions)
        on_real = None
        if real is not None and all(c in real for c in order):
            on_real = dice_per_region(np.asarray(segment_volume([real[c] for c in order], segmenter,
                                                                body=brain).array), lab, regions)
        elif real is not None:
            ev.notes.append("No Dice on real images: the real images lack a contrast the segmenter needs.")
        ev.regions = {r: {"synthetic": syn[r], "real": None if on_real is None else on_real[r]} for r in regions}
    else:
        ev.notes.append("Dice not computed: no segmenter given (--segmenter RUN, a multi-contrast train-segmenter run).")
    for c, vol in pred.items():
        if real is not None and c in real:
            ev.contrasts[c] = contrast_similarity(vol, real[c], brain)
    if real is None:
        ev.notes.append("No SSIM / PSNR: no real images given (--ref FOLDER with one file per contrast).")
    return ev


__all__ = ["BrainEvaluation", "WINDOW_PERCENTILES", "contrast_similarity", "evaluate_brain", "region_ids",
           "unit_in_brain"]

"""Phase 3 of a label volume: the body contour, and ``body`` in its unlabelled voxels.

The contour is a given body mask (``--body``), else the threshold of an image on the labels' grid
(``--image``, CT or MR), else the closed hull of the labelled voxels. Unlabelled voxels inside it
become ``body``; voxels outside stay 0 (air); labelled voxels outside it are kept and counted.
"""

from __future__ import annotations

import logging

import numpy as np

from seg2med.anatomy.contour import body_mask_from_ct, body_mask_from_labels, body_mask_from_mr
from seg2med.anatomy.reports import AnatomyReport, class_counts
from seg2med.errors import ConfigError, InputError
from seg2med.io.nifti import Volume, check_same_grid
from seg2med.labels.schemes import LabelScheme

#: every step of building a label map logs under the one name of :mod:`seg2med.anatomy.labelmap`
log = logging.getLogger("seg2med.anatomy.labelmap")


def body_contour(
    ref: Volume,
    labelled: np.ndarray,
    report: AnatomyReport,
    *,
    image: Volume | None = None,
    modality: str | None = None,
    body: Volume | np.ndarray | None = None,
    has_tissues: bool = False,
) -> np.ndarray:
    """The body mask on ``ref``'s grid: ``body`` (non-zero = body; a Volume on that grid or an array of its shape),
    else the threshold of ``image`` for its ``modality`` (``ct`` / ``mr``), else the closed hull of ``labelled``
    (warned about when there are no tissue types either: it misses the body wall and subcutaneous fat).

    Sets ``report.contour_source`` (``given``, ``ct``, ``mr``, ``labels``). Raises :class:`ConfigError` for an
    unknown modality or an image without one, :class:`InputError` / :class:`GridMismatchError` for a mask off the
    grid.
    """
    source = report.source
    spacing = ref.spacing
    if modality is not None and modality.lower() not in ("ct", "mr"):
        raise ConfigError(f"unknown modality {modality!r} (expected 'ct' or 'mr')")
    if body is not None:
        if isinstance(body, Volume):
            check_same_grid(ref, body)
        mask = np.asarray(body.array if isinstance(body, Volume) else body) != 0
        if mask.shape != ref.shape[:3]:
            raise InputError(f"body mask shape {mask.shape} does not match {source} {ref.shape}")
        report.contour_source = "given"
    elif image is not None:
        check_same_grid(ref, image)
        if modality is None:
            raise ConfigError(f"{image.name}: the image's modality ('ct' or 'mr') is needed for the body contour")
        fn = body_mask_from_ct if modality.lower() == "ct" else body_mask_from_mr
        mask = fn(image.array, spacing, affine=ref.affine)
        report.contour_source = modality.lower()
    else:
        mask = body_mask_from_labels(labelled, spacing, affine=ref.affine)
        report.contour_source = "labels"
        if not has_tissues:
            log.warning("%s: no body contour (--body, --image) and no tissue masks: the body is the closed hull of "
                        "the labelled structures, without body wall or subcutaneous fat; give TotalSegmentator's "
                        "body (--task body, MR: body_mr) or tissue_types masks", source)
    return mask


def fill_body(labels: np.ndarray, mask: np.ndarray, canon: LabelScheme, report: AnatomyReport) -> np.ndarray:
    """``labels`` (``canon`` ids, changed in place) with ``body`` in the unlabelled voxels of ``mask``; the report
    gets the body's size, the voxels filled, the labelled voxels outside the contour (kept) and the class sizes."""
    fill = mask & (labels == 0)
    labels[fill] = canon.id_of("body")
    outside = (labels != 0) & ~mask
    report.body_voxels = int(mask.sum())
    report.body_filled = int(fill.sum())
    report.labelled_outside_body = int(outside.sum())
    report.outside_body_by_class = class_counts(labels[outside], canon) if outside.any() else {}
    report.class_voxels = class_counts(labels, canon)
    if report.labelled_outside_body:
        log.info("%s: %d labelled voxels outside the body contour (kept)", report.source, report.labelled_outside_body)
    return labels

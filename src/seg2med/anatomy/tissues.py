"""Phase 2 of a label volume: tissue types (TotalSegmentator ``tissue_types``) where no organ is.

Tissue masks that overlap are painted by :data:`seg2med.anatomy.TISSUE_PRIORITY` (rule
``tissue_over_tissue``); any organ beats any tissue type (rule ``organ_over_tissue``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from seg2med.anatomy.organs import as_labels, mask_arrays, masks_source, remap_by_table
from seg2med.anatomy.priority import ORGAN_OVER_TISSUE, TISSUE_OVER_TISSUE, TISSUE_PRIORITY, label_dtype, paint
from seg2med.anatomy.reports import AnatomyReport, Overlap, handle_unknown
from seg2med.io.nifti import Volume, check_same_grid, embedded_label_table
from seg2med.labels.schemes import LabelScheme, get_scheme

#: Scheme of a multilabel tissue-type file (TotalSegmentator task ``tissue_types``).
TISSUE_SCHEME = "tissue_types"


def tissue_labels(
    tissues: Volume | Mapping[str, Volume],
    ref: Volume,
    canon: LabelScheme,
    strict: bool,
    report: AnatomyReport,
    dtype: type,
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue types in canonical ids (overlaps resolved, unknowns reported) and the raw non-zero mask."""
    ids = {n: canon.id_of(n) for n in TISSUE_PRIORITY}
    if isinstance(tissues, Mapping):
        source = masks_source(tissues)
        for v in tissues.values():
            check_same_grid(ref, v)
        arrays = mask_arrays(tissues, source)
        unknown = {n: int(a.sum()) for n, a in arrays.items() if n not in ids}
        handle_unknown(source, "tissue types", unknown, strict, what="class")
        report.unknown_classes.update(unknown)
        tissue, overlaps = paint(arrays, TISSUE_PRIORITY, ids, TISSUE_OVER_TISSUE, dtype)
        report.overlaps += overlaps
        return tissue, np.logical_or.reduce(list(arrays.values()))
    check_same_grid(ref, tissues)
    raw = as_labels(tissues)
    table = embedded_label_table(tissues.header)
    if table is not None:  # its own names (e.g. tissue_4_types: intermuscular_fat 4), not assumed ids
        tissue, unknown_names, unknown = remap_by_table(raw, table, LabelScheme("tissue types", ids), dtype)
        handle_unknown(tissues.name, "", unknown_names, strict, what="class", where="the tissue types")
        handle_unknown(tissues.name, "", unknown, strict, where="the file's own label table")
        report.unknown_classes.update(unknown_names)
        report.unknown_tissue_ids = unknown
        return tissue, raw != 0
    tscheme = get_scheme(TISSUE_SCHEME)
    unknown = tscheme.unknown_ids(raw)
    handle_unknown(tissues.name, tscheme.name, unknown, strict)
    report.unknown_tissue_ids = unknown
    lut = np.zeros(max(int(raw.max()), max(tscheme.ids)) + 1, dtype=dtype)
    for name, i in tscheme.classes.items():
        lut[i] = ids.get(name, 0)
    return lut[raw], raw != 0


def add_tissues(
    labels: np.ndarray,
    labelled: np.ndarray,
    tissues: Volume | Mapping[str, Volume],
    ref: Volume,
    canon: LabelScheme,
    report: AnatomyReport,
    strict: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The organ ``labels`` (``canon`` ids) with the tissue types painted where they are 0, and ``labelled`` (the
    labelled input voxels) with the tissues' added.

    ``tissues``: a label Volume in ``tissue_types`` ids (or named by its own table) or ``{name: mask Volume}`` with
    names of :data:`TISSUE_PRIORITY`, on ``ref``'s grid. The voxels an organ took from a tissue type are added to
    ``report.overlaps`` (rule ``organ_over_tissue``), unknown tissue ids / classes to the report's.
    """
    tissue, tissue_any = tissue_labels(tissues, ref, canon, strict, report, label_dtype(max(canon.ids)))
    labelled = labelled | tissue_any
    lost = (tissue != 0) & (labels != 0)
    if lost.any():
        k = int(max(canon.ids)) + 1
        pairs, counts = np.unique(labels[lost].astype(np.int64) * k + tissue[lost], return_counts=True)
        report.overlaps += [
            Overlap(ORGAN_OVER_TISSUE, canon.name_of(int(p // k)), canon.name_of(int(p % k)), int(c))
            for p, c in zip(pairs, counts)
        ]
    return np.where(labels != 0, labels, tissue), labelled

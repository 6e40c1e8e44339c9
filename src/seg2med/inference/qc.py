"""Quality control of a generated volume: is the median of every organ plausible for its sequence?

* CT (``check: hu_range``): the median HU over each class's mask against the class's plausible range, the
  ``hu_range`` of the tissue table (:meth:`seg2med.labels.tissues.TissueTable.hu_range`; MAISI's per-organ
  HU check where MAISI has the organ, wide literature windows elsewhere, covering native and contrast
  phases). A median outside its range fails the class.
* MR (``check: tissue_order``): the images have no absolute units, so what is checked is the ORDER of the
  class medians that the sequence's physics predicts: the physics prior of the same labels under the same
  sequence gives the expected order. Medians are compared as fractions of the spread (max - min) of the
  checked classes' medians, separately in the prior and in the image; a pair of classes that the prior
  orders by at least ``margin`` of its spread and the image orders the other way round by at least
  ``margin`` of its spread is an inversion, and both classes fail.

Classes with fewer than ``min_voxels`` (finite) voxels are skipped and counted; the background (id 0) is
never checked. :func:`organ_qc` returns plain JSON types (the ``qc`` block of a generated volume's
sidecar); :func:`qc_warning` is its one-line warning (None when every checked class passes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from seg2med.errors import ConfigError, InputError
from seg2med.labels import LabelScheme, TissueTable
from seg2med.labels.tissues import load_default_tissue_table
from seg2med.physics import ImagingSequence, sequence_from_config, simulate_prior

#: Classes with fewer voxels than this are too small for a stable median (skipped, counted).
MIN_VOXELS = 50
#: An MR pair is inverted when the prior orders it by at least this fraction of the spread of its class
#: medians and the image orders it the other way by at least this fraction of the image's spread (on the
#: real subject C of the test data, the largest such inversion with the vibe-in prior is 0.19).
MR_ORDER_MARGIN = 0.25
CHECK_CT = "hu_range"
CHECK_MR = "tissue_order"


def _num(value: float) -> float:
    """A float with 6 significant digits (the sidecar's precision)."""
    return float(f"{float(value):.6g}")


def class_medians(labels: np.ndarray, *arrays: np.ndarray) -> dict[int, tuple[int, list[float]]]:
    """Per label id (background 0 excluded): ``(voxels, [median of each array])`` over the voxels where
    every array is finite. One stable sort of the labels instead of one mask per class."""
    lab = np.asarray(labels)
    for a in arrays:
        if np.shape(a) != lab.shape:
            raise InputError(f"quality check: image of shape {np.shape(a)} is not on the label grid {lab.shape}")
    lab = lab.ravel()
    keep = lab != 0
    for a in arrays:
        keep &= np.isfinite(np.asarray(a).ravel())
    ids = lab[keep]
    if ids.size and ids.min() >= 0 and ids.max() < 2**16:
        ids = ids.astype(np.uint16)  # radix sort
    order = np.argsort(ids, kind="stable")
    values = [np.asarray(a).ravel()[keep][order] for a in arrays]
    uniq, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
    return {int(i): (int(n), [float(np.median(v[s : s + n])) for v in values]) for i, s, n in zip(uniq, starts, counts)}


def _sequence(sequence: ImagingSequence | Mapping[str, Any] | str) -> ImagingSequence | str:
    return sequence_from_config(sequence) if isinstance(sequence, Mapping) else sequence


def _sequence_name(sequence: ImagingSequence | Mapping[str, Any] | str) -> str:
    if isinstance(sequence, ImagingSequence):
        return sequence.name
    return str(sequence["name"]) if isinstance(sequence, Mapping) else str(sequence)


def _hu_range(tissues: TissueTable, name: str) -> list[float] | None:
    try:
        rng = tissues.hu_range(name)
    except ConfigError:  # a class the table does not know: no range to check against
        return None
    return None if rng is None else [_num(rng.lo), _num(rng.hi)]


def _ct_check(stats: dict[int, tuple[int, list[float]]], names: dict[int, str], tissues: TissueTable,
              min_voxels: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    classes, unranged = [], []
    for label_id, (voxels, meds) in stats.items():
        if voxels < min_voxels:
            continue
        name, median = names[label_id], meds[0]
        rng = _hu_range(tissues, name)
        ok = None if rng is None else bool(rng[0] <= median <= rng[1])
        entry = {"name": name, "label": label_id, "voxels": voxels, "median": _num(median), "range": rng, "ok": ok}
        if len(meds) > 1:
            entry["prior_median"] = _num(meds[1])
        classes.append(entry)
        if rng is None:
            unranged.append(name)
    return classes, {"unranged": unranged}


def _ranks(values: np.ndarray) -> list[int]:
    """1 = the brightest; ties share the best rank."""
    return [int(1 + np.count_nonzero(values > v)) for v in values]


def _mr_check(stats: dict[int, tuple[int, list[float]]], names: dict[int, str], min_voxels: int,
              margin: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ids = [i for i, (n, _) in stats.items() if n >= min_voxels]
    out = np.array([stats[i][1][0] for i in ids], dtype=np.float64)
    pri = np.array([stats[i][1][1] for i in ids], dtype=np.float64)
    pairs: list[dict[str, Any]] = []
    failed: set[int] = set()
    if len(ids) > 1:
        sp, so = np.ptp(pri), np.ptp(out)
        dp = (pri[:, None] - pri[None, :]) / sp if sp > 0 else np.zeros((len(ids), len(ids)))
        do = (out[:, None] - out[None, :]) / so if so > 0 else np.zeros((len(ids), len(ids)))
        hits = np.argwhere((dp >= margin) & (-do >= margin))
        severity = [min(dp[a, b], -do[a, b]) for a, b in hits]
        for k in np.argsort(severity, kind="stable")[::-1]:
            a, b = hits[k]
            failed.update((int(a), int(b)))
            pairs.append({"expected_brighter": names[ids[a]], "expected_darker": names[ids[b]],
                          "prior_margin": _num(dp[a, b]), "image_margin": _num(-do[a, b])})
    expected, rank = _ranks(pri), _ranks(out)
    classes = [{"name": names[i], "label": i, "voxels": stats[i][0], "median": _num(out[k]),
                "prior_median": _num(pri[k]), "expected_rank": expected[k], "rank": rank[k], "ok": k not in failed}
               for k, i in enumerate(ids)]
    return classes, {"margin": margin, "inverted_pairs": pairs}


def organ_qc(
    image: np.ndarray,
    labels: np.ndarray,
    scheme: LabelScheme,
    modality: str,
    sequence: ImagingSequence | Mapping[str, Any] | str,
    tissues: TissueTable | None = None,
    prior: np.ndarray | None = None,
    min_voxels: int = MIN_VOXELS,
    margin: float = MR_ORDER_MARGIN,
) -> dict[str, Any]:
    """The quality check of ``image`` (CT in HU, MR in any units) over the classes of ``labels`` (same grid).

    ``prior``: the physics prior of ``labels`` under ``sequence`` (simulated here when None and needed: MR
    always needs it, CT records its medians when given). Returns ``check``, ``modality``, ``sequence``,
    ``min_voxels``, ``classes`` (per checked class, in label order: ``name``, ``label``, ``voxels``,
    ``median``, for CT ``range`` [lo, hi] (None: no range in the tissue table) and ``prior_median`` when a
    prior is given, for MR ``prior_median``, ``expected_rank`` (in the prior, 1 = brightest) and ``rank``
    (in the image); ``ok``), for MR also ``margin`` and ``inverted_pairs``, and ``summary``: ``checked``,
    ``failed``, ``failed_names``, ``skipped`` / ``skipped_names`` (fewer than ``min_voxels``), ``passed``.
    """
    mod = str(modality).lower()
    if mod not in ("ct", "mr"):
        raise ConfigError(f"quality check: unknown modality {modality!r} (known: ct, mr)")
    if int(min_voxels) < 1:
        raise ConfigError(f"quality check: min_voxels must be >= 1, got {min_voxels}")
    tissues = tissues or load_default_tissue_table()
    if prior is None and mod == "mr":
        prior = simulate_prior(np.asarray(labels), scheme, _sequence(sequence), tissues)
    arrays = [np.asarray(image)] + ([np.asarray(prior)] if prior is not None else [])
    stats = class_medians(labels, *arrays)
    by_id = {i: n for n, i in scheme.classes.items()}
    names = {i: by_id.get(i, f"label_{i}") for i in stats}
    if mod == "ct":
        classes, extra = _ct_check(stats, names, tissues, int(min_voxels))
    else:
        classes, extra = _mr_check(stats, names, int(min_voxels), float(margin))
    skipped = [names[i] for i, (n, _) in stats.items() if n < min_voxels]
    checked = [c for c in classes if c["ok"] is not None]
    failed = [c["name"] for c in checked if not c["ok"]]
    summary = {"checked": len(checked), "failed": len(failed), "failed_names": failed, "skipped": len(skipped),
               "skipped_names": skipped, "passed": not failed}
    if mod == "ct":
        summary["unranged"] = extra.pop("unranged")
    return {"check": CHECK_CT if mod == "ct" else CHECK_MR, "modality": mod, "sequence": _sequence_name(sequence),
            "min_voxels": int(min_voxels), **extra, "classes": classes, "summary": summary}


#: Organs (CT) or pairs (MR) a warning names at most.
WARN_ITEMS = 10


def _items(parts: list[str]) -> str:
    more = len(parts) - WARN_ITEMS
    return ", ".join(parts[:WARN_ITEMS]) + (f" and {more} more" if more > 0 else "")


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def qc_warning(qc: Mapping[str, Any]) -> str | None:
    """The one-line warning of a quality check that failed (None when it passed), naming each failing
    organ with its median: ``qc: 2 of 21 organs outside their plausible HU range: liver -58 (expected
    -22..162), ...``; for MR the inverted pairs (``spleen 97 above liver 24``). At most :data:`WARN_ITEMS`
    items, then how many more."""
    s = qc["summary"]
    if s["passed"]:
        return None
    by_name = {c["name"]: c for c in qc["classes"]}
    head = f"qc: {s['failed']} of {s['checked']} organs"
    if qc["check"] == CHECK_CT:
        parts = [f"{n} {_fmt(by_name[n]['median'])} (expected {_fmt(by_name[n]['range'][0])}.."
                 f"{_fmt(by_name[n]['range'][1])})" for n in s["failed_names"]]
        return f"{head} outside their plausible HU range: " + _items(parts)
    parts = [f"{p['expected_darker']} {_fmt(by_name[p['expected_darker']]['median'])} above "
             f"{p['expected_brighter']} {_fmt(by_name[p['expected_brighter']]['median'])}" for p in qc["inverted_pairs"]]
    return f"{head} out of the tissue order the {qc['sequence']} prior predicts: " + _items(parts)

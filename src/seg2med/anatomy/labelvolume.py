"""The canonical label volume: integer labels on a voxel grid, their scheme and how they were built."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from seg2med.errors import ConfigError
from seg2med.io.nifti import Volume
from seg2med.labels import LabelScheme
from seg2med.labels.crosswalk import get_crosswalk, summary_counts
from seg2med.labels.schemes import base_scheme_name

log = logging.getLogger(__name__)


@dataclass
class LabelVolume:
    """A canonical label volume: integer labels, their scheme and how they were built."""

    volume: Volume
    scheme: LabelScheme
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def body_contour(self) -> str | None:
        """Where the body (everything not air) came from: ``given`` (--body), ``ct`` / ``mr`` (--image),
        ``labels`` (closed hull of the labels), or the source of a ready volume (phantom, seg2med labels)."""
        return self.report.get("contour_source") or self.report.get("source")

    @property
    def classes_read_by(self) -> str:
        """How the input's classes were identified (``report["label_table"]``), in words."""
        return {"embedded": "ids named by the file's own label table",
                "mask names": "classes named by their mask files"}.get(self.report.get("label_table", ""),
                                                                        "ids as the scheme numbers them")


def check_known_ids(vol: Volume, scheme: LabelScheme, strict: bool) -> None:
    """Ids of ``vol`` that ``scheme`` lacks: an error with ``strict``, else a warning (they stay unlabelled)."""
    unknown = scheme.unknown_ids(vol.array)
    if unknown:
        desc = ", ".join(f"{k} ({v} voxels)" for k, v in sorted(unknown.items()))
        if strict:
            raise ConfigError(f"{vol.name}: ids not in scheme {scheme.name!r}: {desc}")
        log.warning("%s: ids not in scheme %r: %s", vol.name, scheme.name, desc)


def crosswalk_label_volume(lv: LabelVolume, target: str, strict: bool = False) -> tuple[LabelVolume, dict[str, Any] | None]:
    """``lv`` in scheme ``target`` through the built-in crosswalk from its own scheme (:mod:`seg2med.labels.crosswalk`),
    and the report (per class present: kind, target, voxels, reason; None when it already is in ``target``).

    In a canonical volume (one with seg2med's ``body`` class: inside a body contour) the voxels of a dropped class
    become ``body``, elsewhere unlabelled. ``strict``: a class with voxels that would be dropped is an error naming them.
    """
    source = base_scheme_name(lv.scheme)
    if source == target:
        return lv, None
    cw = get_crosswalk(source, target)
    arr, scheme, rows = cw.apply(lv.volume.array, lv.scheme, dropped_to="body" if "body" in lv.scheme else None)
    dropped = [r for r in rows if r["kind"] == "dropped"]
    if strict and dropped:
        names = ", ".join(f"{r['class']} ({r['voxels']} voxels)" for r in dropped[:6])
        more = f" and {len(dropped) - 6} more" if len(dropped) > 6 else ""
        where = lv.report.get("path") or lv.report.get("source") or lv.volume.name
        raise ConfigError(f"{where}: --strict: the crosswalk {source} -> {target} drops {len(dropped)} "
                          f"classes with voxels: {names}{more}")
    report = {"source": source, "target": target, "counts": summary_counts(rows), "classes": rows}
    return LabelVolume(lv.volume.like(arr), scheme, {**lv.report, "crosswalk": report}), report

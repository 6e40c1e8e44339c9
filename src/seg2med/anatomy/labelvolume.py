"""The canonical label volume: integer labels on a voxel grid, their scheme and how they were built."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from seg2med.errors import ConfigError
from seg2med.io.nifti import Volume
from seg2med.labels import LabelScheme

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

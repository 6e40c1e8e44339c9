"""The JSON sidecars seg2med writes beside its volumes (``name.nii.gz`` -> ``name.json``): their formats, in one place.

* ``seg2med-labels``: a canonical label volume's table (scheme, id -> class name, how it was built);
* ``seg2med-prior`` / ``seg2med-generated``: the provenance of a prior or a synthetic volume.

Every sidecar lists the ``files`` of its set and their ``sha256`` (how ``--overwrite`` tells a file
seg2med wrote from one the user put there, :mod:`seg2med.io.outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seg2med._version import __version__
from seg2med.io.files import read_json
from seg2med.io.nifti import sidecar_path
from seg2med.io.outputs import digests
from seg2med.labels import LabelScheme

LABELS_KIND = "seg2med-labels"


def label_table(scheme: LabelScheme, report: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar of a canonical label volume (its files are added by :func:`describe_set` when written)."""
    return {"kind": LABELS_KIND, "seg2med_version": __version__, **scheme.to_table(), "report": dict(report)}


def describe_set(meta: Mapping[str, Any], images: Mapping[str, Path]) -> dict[str, Any]:
    """``meta`` with the ``files`` of its set and their ``sha256``; ``images`` maps each final file name to the
    (temporary) file just written, whose digest :func:`seg2med.io.outputs.written_by_seg2med` checks later."""
    return {**meta, "files": list(images), "sha256": digests(images)}


def read_label_table(path: str | Path) -> LabelScheme | None:
    """The scheme a seg2med label volume's sidecar holds, or None when ``path`` has no such sidecar."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    data = read_json(side)
    if isinstance(data, Mapping) and "labels" in data and data.get("kind") == LABELS_KIND:
        return LabelScheme.from_table(data)
    return None

"""Which files are compared: predictions of one or more methods, references, label maps and masks.

A prediction or a reference is a NIfTI file or a folder of them. Files are
paired by subject id, the file name without its image suffix; outputs of
``seg2med generate`` that are not a sample-0 volume (``S_std``,
``S_sample1``…) are left out of folders. With single files, the subject id
is the reference's name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seg2med.errors import InputError
from seg2med.io.nifti import is_nifti_path, list_nifti, nifti_stem

log = logging.getLogger(__name__)

_EXTRA_OUTPUT = re.compile(r"_(std|sample\d+)$")


@dataclass(frozen=True)
class Case:
    """One subject: the reference, each method's prediction, and optional labels / mask / prior."""

    subject: str
    reference: Path
    predictions: dict[str, Path]
    labels: Path | None = None
    mask: Path | None = None
    prior: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _files(spec: str | Path, what: str) -> dict[str, Path]:
    """Subject id -> file for a file or a folder."""
    p = Path(spec)
    if p.is_dir():
        files = [f for f in list_nifti(p) if not _EXTRA_OUTPUT.search(nifti_stem(f))]
        if not files:
            raise InputError(f"{p}: folder holds no {what} volumes")
        return {nifti_stem(f): f for f in files}
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    if not is_nifti_path(p):
        raise InputError(f"{p}: {what} is not a NIfTI file (.nii / .nii.gz)")
    return {nifti_stem(p): p}


def parse_method(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare PATH is named after the file or folder."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if not name or not path:
            raise InputError(f"--pred {spec!r}: expected NAME=PATH or PATH")
        return name, path
    return nifti_stem(spec) if is_nifti_path(spec) else Path(spec).name, spec


def _match(table: Mapping[str, Path], subjects: Sequence[str], single: bool, what: str, spec: str | Path) -> dict[str, Path]:
    if single and len(table) == 1:
        only = next(iter(table.values()))
        return {s: only for s in subjects}
    missing = [s for s in subjects if s not in table]
    if missing:
        raise InputError(f"{spec}: no {what} for subject(s) {', '.join(missing[:5])}")
    return {s: table[s] for s in subjects}


def collect_cases(
    predictions: Mapping[str, str | Path],
    reference: str | Path,
    labels: str | Path | None = None,
    mask: str | Path | None = None,
    prior: str | Path | None = None,
) -> list[Case]:
    """Pair every method's predictions with the references (and optional labels, mask file, prior)."""
    if not predictions:
        raise InputError("no prediction given (--pred)")
    refs = _files(reference, "reference")
    single_ref = len(refs) == 1 and not Path(reference).is_dir()
    preds: dict[str, dict[str, Path]] = {}
    for method, spec in predictions.items():
        table = _files(spec, f"prediction ({method})")
        if single_ref:
            if len(table) != 1:
                raise InputError(f"{spec}: {len(table)} predictions for the single reference {reference}")
            table = {next(iter(refs)): next(iter(table.values()))}
        unknown = sorted(set(table) - set(refs))
        if unknown:
            raise InputError(f"{spec}: no reference in {reference} for {', '.join(unknown[:5])}")
        preds[method] = table
    subjects = sorted(set.intersection(*(set(t) for t in preds.values())))
    if not subjects:
        raise InputError(f"{reference}: no subject has a prediction from every method")
    left_out = sorted(set(refs) - set(subjects))
    if left_out:  # the summary is over fewer subjects than the reference holds: say which
        log.warning("%s: %d of %d reference subject(s) have no prediction from every method and are not scored: %s%s",
                    reference, len(left_out), len(refs), ", ".join(left_out[:5]), " ..." if len(left_out) > 5 else "")
    tables = {}
    for name, spec in (("labels", labels), ("mask", mask), ("prior", prior)):
        if spec is not None:
            t = _files(spec, name)
            tables[name] = _match(t, subjects, not Path(spec).is_dir(), name, spec)
    return [
        Case(s, refs[s], {m: preds[m][s] for m in preds}, *(tables.get(k, {}).get(s) for k in ("labels", "mask", "prior")))
        for s in subjects
    ]

"""Run the console entry point in-process and capture exit code and output; small input files for tests."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys, monkeypatch) -> CliResult:
    from seg2med.cli import main

    monkeypatch.setattr(sys, "argv", ["seg2med", *[str(a) for a in args]])
    code = 0
    try:
        main()
    except SystemExit as exc:  # typer/click and our error path exit this way
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    cap = capsys.readouterr()
    return CliResult(code, cap.out, cap.err)


def small_ct_labels(tmp_path, depth: int = 3):
    """A 40 x 36 x ``depth`` 'total' label map at 3 mm, unlike any training subject (no fat, no body wall):
    muscle filling the body with liver, spleen and right kidney in it. Returns ``(path, labels)``."""
    import nibabel as nib
    import numpy as np

    lab = np.zeros((40, 36, depth), np.uint8)
    lab[4:36, 4:32] = 80  # gluteus_maximus_left: muscle filling the body
    lab[8:20, 8:28] = 5  # liver
    lab[22:32, 8:16] = 1  # spleen
    lab[22:32, 18:28] = 2  # kidney_right
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), path)
    return path, lab

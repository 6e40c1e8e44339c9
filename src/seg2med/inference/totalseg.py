"""TotalSegmentator as the re-segmentation model of the evaluation — only when it is already installed with its weights.

seg2med never installs TotalSegmentator and never lets it download weights:
:func:`find_totalsegmentator` checks that the ``TotalSegmentator`` command is
on ``PATH`` and that its weights folder (``$TOTALSEG_HOME_DIR``, default
``~/.totalsegmentator``, sub-folder ``nnunet/results``) holds trained models;
otherwise it raises a one-line :class:`InputError` that says what is missing.
The labels it returns use the task's ids (``total`` for CT, ``total_mr`` for
MR), the same ids as seg2med's ``total`` / ``total_mr`` schemes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seg2med.errors import InputError
from seg2med.io import Volume, load_volume, save_volume

COMMAND = "TotalSegmentator"
HOME_ENV = "TOTALSEG_HOME_DIR"


def weights_dir(home: str | Path | None = None) -> Path:
    """Where TotalSegmentator keeps its trained models."""
    base = Path(home or os.environ.get(HOME_ENV) or Path.home() / ".totalsegmentator")
    return base / "nnunet" / "results"


@dataclass
class TotalSegmentatorRunner:
    """Runs the installed ``TotalSegmentator`` command on one volume at a time (``--ml``: one label map)."""

    executable: str
    home: Path
    task: str = "total"  # "total" (CT) or "total_mr"
    fast: bool = False
    classes: list[int] | None = None  # None: the classes present in the reference labels

    def command(self, image: Path, out: Path) -> list[str]:
        cmd = [self.executable, "-i", str(image), "-o", str(out), "--ml", "--task", self.task]
        return cmd + (["--fast"] if self.fast else [])

    def segment(self, volume: Volume) -> Volume:
        """Integer labels of ``volume`` on its grid."""
        with tempfile.TemporaryDirectory(prefix="seg2med-ts-") as tmp:
            image, out = Path(tmp) / "image.nii.gz", Path(tmp) / "labels.nii.gz"
            save_volume(volume, image, dtype=np.float32)
            env = {**os.environ, HOME_ENV: str(self.home)}
            res = subprocess.run(self.command(image, out), capture_output=True, text=True, env=env, check=False)
            if res.returncode != 0 or not out.is_file():
                last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
                raise InputError(f"{self.executable}: TotalSegmentator failed (exit {res.returncode}): {last[0]}")
            labels = load_volume(out, kind="labels")
        return volume.like(np.asarray(labels.array).astype(np.int16))


def find_totalsegmentator(task: str = "total", home: str | Path | None = None, fast: bool = False) -> TotalSegmentatorRunner:
    """The installed TotalSegmentator with its weights, or a clear error (nothing is installed or downloaded)."""
    exe = shutil.which(COMMAND)
    if exe is None:
        raise InputError(f"{COMMAND} is not installed (pip install TotalSegmentator, then put its weights in "
                         f"${HOME_ENV}); seg2med does not install or download it")
    wd = weights_dir(home)
    if not wd.is_dir() or not any(p.name.startswith("Dataset") for p in wd.iterdir()):
        raise InputError(f"{wd}: no TotalSegmentator weights on this machine (set ${HOME_ENV}); "
                         "seg2med never lets it download them")
    return TotalSegmentatorRunner(exe, wd.parent.parent, task=task, fast=fast)

"""The layer contract (pyproject.toml [tool.importlinter]) holds, and it would catch an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_package_keeps_its_layers():
    res = _lint(REPO, REPO / "src")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "1 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "src" / "seg2med", tmp_path / "seg2med", ignore=shutil.ignore_patterns("resources", "__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "seg2med" / "labels" / "schemes.py").open("a") as f:
        f.write("\nimport seg2med.api  # an upward import: labels is the ground floor\n")
    res = _lint(tmp_path, tmp_path)
    assert res.returncode != 0
    assert "seg2med.labels is not allowed to import seg2med.api" in res.stdout

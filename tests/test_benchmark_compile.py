"""Smoke test of ``benchmarks/compile_forward.py --quick``: eager and compiled forwards agree and are timed.

Not a timed test: it checks the report's numbers are present and sane, never how fast they are.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "compile_forward.py"


def test_quick_compile_report(tmp_path: Path) -> None:
    out = tmp_path / "compile.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    rows = [ln.strip("|").split("|") for ln in text.splitlines() if ln.startswith("| tiny")]
    assert len(rows) == 1, text
    cells = dict(zip(["preset", "size", "dtype", "batch", "eager", "compiled", "speedup", "compile_s", "eager_frac",
                      "compiled_frac", "diff", "note"], (c.strip() for c in rows[0]), strict=True))
    assert cells["size"] == "32" and cells["batch"] == "2" and cells["dtype"] == "fp32"
    assert float(cells["eager"]) > 0 and float(cells["compiled"]) > 0, cells  # compiled, not "compile failed"
    assert float(cells["diff"]) < 1e-3, cells  # the compiled network computes the eager one's function
    assert "of the measured ceiling, eager or compiled:" in text


def test_unsupported_dtype_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--dtypes", "fp64", "--out", str(tmp_path / "x.md")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and "unknown fp64" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.md").exists()

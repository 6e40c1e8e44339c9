"""Prior throughput on one core: CT and one MR sequence on a 256³ random ``total`` label volume.

Usage: ``python benchmarks/prior_speed.py [--size 256] [--repeats 5] [--mr vibe-in]``.
Prints a Markdown table; exits 1 when CT is below 50 M voxels/s (the target for the
single fancy-index gather ``lut[labels]``). Not part of the test suite.
"""

from __future__ import annotations

import os

# one thread, set before numpy is imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from seg2med.labels import canonical_scheme, load_default_tissue_table  # noqa: E402
from seg2med.physics import get_sequence, simulate_prior  # noqa: E402

CT_TARGET = 50e6  # voxels per second


def measure(labels: np.ndarray, sequence: str, repeats: int) -> float:
    """Best-of-``repeats`` throughput of :func:`simulate_prior` (LUT build + validation + gather)."""
    scheme, table, seq = canonical_scheme("total"), load_default_tissue_table(), get_sequence(sequence)
    simulate_prior(labels, scheme, seq, table)  # warm-up (table parse, caches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        simulate_prior(labels, scheme, seq, table)
        best = min(best, time.perf_counter() - start)
    return labels.size / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mr", default="vibe-in", help="MR sequence to time besides CT")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    scheme = canonical_scheme("total")
    ids = np.array([0, *scheme.ids], dtype=np.uint8)
    results = []
    for dtype in (np.uint8, np.int16):
        labels = rng.choice(ids, size=(args.size,) * 3).astype(dtype)
        for seq in ("ct", args.mr):
            results.append((seq, np.dtype(dtype).name, measure(labels, seq, args.repeats)))
    out = [
        f"Prior throughput, {args.size}³ random `total`+extension labels, best of {args.repeats}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, numpy {np.__version__}, {platform.processor() or platform.machine()}",
        "",
        "| sequence | label dtype | M voxels/s |",
        "|---|---|---:|",
        *(f"| {seq} | {dt} | {rate / 1e6:.0f} |" for seq, dt, rate in results),
    ]
    sys.stdout.write("\n".join(out) + "\n")
    worst_ct = min(rate for seq, _, rate in results if seq == "ct")
    if worst_ct < CT_TARGET:
        sys.stdout.write(f"FAIL: CT {worst_ct / 1e6:.0f} M voxels/s < target {CT_TARGET / 1e6:.0f}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The memory budget: refuse up front what cannot fit, instead of swapping for minutes or a MemoryError.

One budget for every command: ``$SEG2MED_MEMORY_GB`` (a positive number of GiB) when set, else
80 % of the machine's physical memory. Readers check a file's declared size against it before
reading; commands check the arrays an option implies (phantom size, resampled grids, batches).
"""

from __future__ import annotations

import math
import os

from seg2med.errors import BudgetError, ConfigError

MEMORY_ENV = "SEG2MED_MEMORY_GB"
DEFAULT_FRACTION = 0.8


def physical_memory() -> int:
    """Bytes of physical memory (8 GiB when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_budget() -> int:
    """The memory budget in bytes (``$SEG2MED_MEMORY_GB`` GiB, else 80 % of physical memory)."""
    raw = os.environ.get(MEMORY_ENV)
    if raw is None or not raw.strip():
        return int(DEFAULT_FRACTION * physical_memory())
    try:
        gb = float(raw)
    except ValueError:
        raise ConfigError(f"${MEMORY_ENV}: expected a number of GiB, got {raw!r}") from None
    if not math.isfinite(gb) or gb <= 0:
        raise ConfigError(f"${MEMORY_ENV}: expected a positive number of GiB, got {raw!r}")
    return int(gb * (1 << 30))


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_memory(nbytes: float, what: str) -> None:
    """Raise :class:`BudgetError` (one line: what, how much, the budget, how to change it) when
    ``nbytes`` exceed the memory budget."""
    budget = memory_budget()
    if not math.isfinite(nbytes) or nbytes > budget:
        need = "an unbounded amount" if not math.isfinite(nbytes) else format_bytes(nbytes)
        raise BudgetError(f"{what}: needs {need}, more than the memory budget of {format_bytes(budget)} "
                          f"(set ${MEMORY_ENV} to change it)")

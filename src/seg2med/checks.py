"""Value checks shared by every command: one rule each, one-line :class:`ConfigError` naming the option.

``option`` is how the value is named in the message: the CLI option (``--seed``) in the typed API,
``training: lr`` in a training config, ``RandomPrior: noise`` in a class. Each check returns the
value in its canonical type (``int`` / ``float``) so that callers can store what was checked.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from seg2med.errors import ConfigError

#: Seeds are 32-bit unsigned integers everywhere (numpy, torch and the sidecars agree on them).
SEED_LIMIT = 2**32


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_seed(seed: Any, option: str = "--seed") -> int:
    """``seed`` as an int in [0, 2**32); otherwise one-line ConfigError naming ``option``."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= int(seed) < SEED_LIMIT:
        raise ConfigError(f"{option} must be an integer in [0, 2**32) = [0, {SEED_LIMIT - 1}], got {seed!r}")
    return int(seed)


def check_optional_seed(seed: Any, option: str = "--seed") -> int | None:
    """:func:`check_seed`, with None (no seed: fresh entropy) passed through."""
    return None if seed is None else check_seed(seed, option)


def check_non_negative(value: Any, option: str) -> float:
    """A finite number >= 0 (0 usually switches something off)."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive(value: Any, option: str) -> float:
    """A finite number > 0 (a rate, a time, a length)."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{option} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int(value: Any, option: str, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (whole floats such as 8.0 from a YAML file are accepted)."""
    whole = _is_real(value) and math.isfinite(value) and float(value).is_integer()
    if not whole or int(value) < minimum:
        raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)

"""Mixed precision: which autocast dtype a precision name means, and whether a device runs it.

One table and one check for training (``seg2med train --precision``) and generation
(``seg2med generate --precision``).
"""

from __future__ import annotations

import torch

from seg2med.errors import ConfigError

#: precision name -> autocast dtype (None: full fp32, no autocast)
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None = fp32), or a one-line error where it
    cannot run: fp16 needs CUDA; bf16 needs a GPU that supports it (any CPU runs it, fast only with
    AVX512-BF16 / AMX)."""
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"unknown precision {precision!r} (known: {', '.join(AUTOCAST_DTYPES)})")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (use bf16 or fp32 on a CPU)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision bf16 is not supported by this GPU (use fp16 or fp32)")
    return AUTOCAST_DTYPES[precision]

"""Devices and mixed precision: which device a ``--device`` value names, which autocast dtype a
precision name means, and whether the device runs it.

One parser and one check for training (``seg2med train --device/--precision``), generation,
evaluation and the benchmark scripts.
"""

from __future__ import annotations

import torch

from seg2med.errors import ConfigError


def parse_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` (GPU ``local_rank`` modulo the
    number of GPUs: one per process under torchrun) or ``cuda:N``. Anything else, CUDA without a GPU
    or a GPU index that does not exist is a one-line :class:`ConfigError`."""
    name = str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but no CUDA device is available")
        count = torch.cuda.device_count()
        index = name.partition(":")[2]
        if not index:
            return torch.device("cuda", local_rank % count)
        if not index.isdigit() or int(index) >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
        return torch.device("cuda", int(index))
    raise ConfigError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)")


#: precision name -> autocast dtype (None: full fp32, no autocast)
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None = fp32), or a one-line error where it
    cannot run: fp16 needs CUDA; bf16 needs a GPU that supports it (any CPU runs it, fast only with
    AVX512-BF16 / AMX)."""
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"unknown precision {precision!r} (known: auto, {', '.join(AUTOCAST_DTYPES)})")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (use bf16 or fp32 on a CPU)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision bf16 is not supported by this GPU (use fp16 or fp32)")
    return AUTOCAST_DTYPES[precision]


def cpu_accelerates_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls / convolutions in hardware (AMX tiles or AVX512-BF16); on any other
    CPU bf16 autocast is emulated and slower than fp32. Unknown (an older torch): False."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and bool(check()):
                return True
        except RuntimeError:  # pragma: no cover - a build without the probe's backend
            continue
    return False


def resolve_precision(precision: str, device: torch.device, *, inference: bool = False) -> str:
    """``auto`` -> a concrete precision for ``device``: bf16 autocast on a CUDA device that supports it, else
    fp32; for ``inference`` also bf16 on a CPU that accelerates it (:func:`cpu_accelerates_bf16`; sampling in
    bf16 matched fp32 to ~1 HU, 2.8x faster on an AMX CPU: MODEL_CARD.md), fp32 on any other CPU. Training on a
    CPU stays fp32. Any other name is checked by :func:`autocast_dtype` and returned."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if inference and device.type == "cpu" and cpu_accelerates_bf16() else "fp32"
    autocast_dtype(precision, device)  # refuses what this device cannot run
    return precision

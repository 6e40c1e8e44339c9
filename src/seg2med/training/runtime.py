"""Where and how training runs: device, mixed precision, torchrun process group, per-step seeds."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from seg2med.errors import ConfigError
from seg2med.models.precision import AUTOCAST_DTYPES, parse_device, resolve_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """The process's place in a (possibly distributed) run."""

    device: torch.device
    precision: str  # resolved: fp32 | bf16 | fp16
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def mean(self, value: torch.Tensor) -> float:
        """Mean of a scalar over all processes."""
        if self.distributed:
            value = value.detach().clone()
            torch.distributed.all_reduce(value)
            value /= self.world_size
        return float(value)


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (one GPU per process under torchrun), else CPU; a CUDA device
    becomes the process's current one."""
    dev = parse_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


@contextlib.contextmanager
def runtime(device: str = "auto", precision: str = "auto") -> Iterator[Runtime]:
    """Set up the process (and the torchrun process group when ``WORLD_SIZE`` > 1); tear it down on exit."""
    world = world_size_from_env()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    rt = Runtime(dev, resolve_precision(precision, dev), rank, world, local_rank)
    owns_group = world > 1 and not torch.distributed.is_initialized()
    if owns_group:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
        log.debug("rank %d/%d: process group (%s) up", rank, world, backend)
    try:
        yield rt
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


def step_seed(seed: int, step: int, rank: int | None = None) -> int:
    """A 63-bit seed determined by (seed, step[, rank]) only, so a resumed run redraws exactly the same numbers."""
    key = [int(seed) & 0xFFFFFFFF, int(step)] + ([] if rank is None else [int(rank) + 1])
    hi, lo = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def step_generator(seed: int, step: int, rank: int | None = None) -> torch.Generator:
    """A CPU generator for the randomness of one step (batch indices: rank None; noise etc.: per rank)."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))

"""Array shards (``.npz`` or ``.safetensors``) for slice datasets."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from seg2med.errors import InputError
from seg2med.io.files import atomic_write


def write_shard(path: str | Path, arrays: Mapping[str, np.ndarray], overwrite: bool = False, compress: bool = True) -> None:
    """Write arrays atomically as ``.npz`` (zlib-compressed if ``compress``) or ``.safetensors`` (by suffix)."""
    path = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_write(path, overwrite) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, str(tmp))
        else:
            with open(tmp, "wb") as fh:
                (np.savez_compressed if compress else np.savez)(fh, **arrays)


def _shard_errors() -> tuple[type[BaseException], ...]:
    """What numpy / zipfile / zlib / safetensors raise on a truncated or overwritten shard."""
    from safetensors import SafetensorError

    return OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, SafetensorError


def _corrupt(p: Path, exc: BaseException) -> InputError:
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"{p}: truncated or corrupt shard ({why}); prepare the dataset again")


def check_shard(path: str | Path) -> None:
    """Open one shard without reading its arrays (the zip directory / the safetensors header, which
    must cover the whole file): a missing, truncated or overwritten shard is a one-line
    :class:`InputError` naming it, before any training step."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: shard not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="numpy") as f:
                f.keys()
        else:
            with np.load(p) as z:
                z.files  # noqa: B018 - reading the zip directory is the check
    except _shard_errors() as exc:
        raise _corrupt(p, exc) from None


def read_shard(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of one shard file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: shard not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(p)))
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    except _shard_errors() as exc:
        raise _corrupt(p, exc) from None

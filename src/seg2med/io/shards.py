"""Array shards (``.npz`` or ``.safetensors``) for slice datasets."""

from __future__ import annotations

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
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: unreadable shard ({str(exc).splitlines()[0]})") from None

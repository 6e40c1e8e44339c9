"""Atomic writes and small text formats (JSON, YAML)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from seg2med.errors import ConfigError, InputError, OutputExistsError


def _target(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` as a Path, its folder created; an existing one refused unless ``overwrite``.

    The low-level existence check of the atomic writers below. Which existing outputs a command may
    replace (only seg2med's own, never an input) is decided before, by :mod:`seg2med.io.outputs`.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: output exists (pass --overwrite to replace it)")
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_write(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    The temporary file keeps the final file's suffixes (``.nii.gz`` stays
    ``.nii.gz``) so that writers choosing a format by extension still work.
    Nothing is left behind when the body raises.
    """
    final = _target(path, overwrite)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name.split('.')[0]}-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and writers that recreate the file, e.g. safetensors) leave it 0600;
        # outputs get the usual permissions of a new file
        os.chmod(tmp_path, 0o666 & ~_umask())
        if final.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{final}: output exists (pass --overwrite to replace it)")
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    An existing ``path`` is refused unless ``overwrite`` (and then swapped out
    only after the new folder is complete). On failure the temporary folder is
    removed and ``path`` is untouched.
    """
    out = _target(path, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700)
    try:
        yield tmp
        old = None
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise OutputExistsError(f"{out}: output exists (pass --overwrite to replace it)")
            old = out.with_name(f".{out.name}-old-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    with atomic_write(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN / inf float (Python or NumPy, also inside arrays) as ``None``: strict
    JSON has no NaN, and jq, JavaScript and most JSON readers reject Python's ``NaN`` token."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_json(path: str | Path, obj: Any, overwrite: bool = False) -> Path:
    """Strict JSON (NaN / inf written as ``null``), atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, default=_json_default, allow_nan=False) + "\n", overwrite)


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:  # "line 2, column 1: expected ',' or ']', but got '<stream end>'"
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(f"{p}: not valid YAML ({where}{what})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{p}: not valid YAML ({msg})") from None

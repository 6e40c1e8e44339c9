"""The one overwrite rule, for every command, and atomic sets of outputs.

* ``--overwrite`` replaces only what seg2med itself wrote:

  - a file is seg2med's when it says so: a NIfTI whose header ``descrip`` starts with
    ``seg2med`` (every volume seg2med writes) and, when its sidecar recorded its SHA-256, still has
    that digest (a file the user replaced or edited is the user's), a JSON
    object with a ``kind`` / ``format`` starting with ``seg2med``, a PNG whose ``Software``
    text chunk names seg2med;
  - a folder is seg2med's when it carries the marker :data:`FOLDER_MARKER` of the same kind
    (``dataset``, ``evaluation``, ``benchmark``…) and holds nothing but the entries the marker
    lists. Anything else is refused with one line; nothing is deleted.

* An input of the same command is never replaced or deleted (also not inside a folder that an
  output replaces).
* A set of outputs (an image, its sidecar, its samples) is written under temporary names and moved
  into place together (:func:`atomic_outputs`): a failure leaves the previous set as it was, or
  nothing, never half a pair.

The checks here have no side effects, so a command can run them before minutes of work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from seg2med.errors import ConfigError, OutputExistsError

FOLDER_MARKER = ".seg2med-output.json"
OWNER = "seg2med"  # NIfTI descrip prefix, PNG Software chunk, JSON kind prefix

_NIFTI = (".nii.gz", ".nii")


def owner_tag() -> str:
    """The tag written into outputs (``seg2med 0.1.0``)."""
    from seg2med._version import __version__

    return f"{OWNER} {__version__}"


# --------------------------------------------------------------------------- ownership
def _json_is_ours(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    tag = data.get("kind", data.get("format"))
    return data if isinstance(tag, str) and tag.startswith(OWNER) else None


def _nifti_descrip(path: Path) -> bytes:
    import nibabel as nib

    try:
        hdr = nib.load(str(path)).header
        return bytes(hdr["descrip"].tobytes()) if "descrip" in hdr else b""
    except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
        return b""


def _sidecar_of(path: Path) -> Path:
    from seg2med.io.nifti import sidecar_path

    return sidecar_path(path)


_COMPANION = re.compile(r"^(?P<stem>.+)_(?:sample\d+|std)\.nii(?:\.gz)?$", re.IGNORECASE)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, hex (sidecars record it for the images of their set)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digests(files: Mapping[str, Path]) -> dict[str, str]:
    """``{final name: sha256}`` of written (temporary) files, for the sidecar of their set."""
    return {name: file_digest(tmp) for name, tmp in files.items()}


def described_files(sidecar: str | Path, kind: str | None = None) -> list[Path]:
    """The files a seg2med sidecar (of ``kind``, e.g. ``seg2med-generated``, when given) says belong to its
    output (its image, ``_sampleK``, ``_std``), or []."""
    side = Path(sidecar)
    data = _json_is_ours(side) if side.is_file() else None
    files = data.get("files") if data is not None and (kind is None or data.get("kind") == kind) else None
    if not isinstance(files, list):  # not a sidecar of that kind, or one written before seg2med listed its files
        return []
    return [side.with_name(f) for f in files if isinstance(f, str) and f == Path(f).name]


def written_by_seg2med(path: str | Path) -> bool:
    """True when ``path`` is a file seg2med wrote (see the module docstring for how it tells)."""
    p = Path(path)
    if not p.is_file() or p.is_symlink():
        return False
    name = p.name.lower()
    if name.endswith(".json"):
        return _json_is_ours(p) is not None
    if name.endswith(_NIFTI):
        if not _nifti_descrip(p).startswith(OWNER.encode()):
            return False
        # a seg2med sidecar that recorded this file's digest must still match it: a file replaced or edited
        # by the user after seg2med wrote it (keeping the header) is the user's now
        m = _COMPANION.match(p.name)
        for side in (_sidecar_of(p), *([p.with_name(m["stem"] + ".json")] if m else [])):
            data = _json_is_ours(side) if side.is_file() else None
            recorded = data.get("sha256") if data is not None else None
            if isinstance(recorded, dict) and p.name in recorded:
                return recorded[p.name] == file_digest(p)
        return True
    if name.endswith(".png"):
        try:
            from PIL import Image

            with Image.open(p) as im:
                return str(im.info.get("Software", "")).startswith(OWNER)
        except Exception:  # noqa: BLE001
            return False
    return False


# --------------------------------------------------------------------------- pre-flight checks
def _resolve(p: Path) -> Path:
    try:
        return p.resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
        raise ConfigError(f"{p}: the path runs into a symlink loop") from None


def _check_parent_writable(p: Path) -> None:
    """The nearest existing ancestor of ``p`` must be a writable folder (nothing is created)."""
    anc = p.parent if str(p.parent) else Path(".")
    while not anc.exists() and not anc.is_symlink():
        if anc == anc.parent:
            break
        anc = anc.parent
    if anc.is_symlink() and not anc.exists():
        raise ConfigError(f"{p}: {anc} is a broken symbolic link")
    if not anc.is_dir():
        raise ConfigError(f"{p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{p}: the folder {anc} is not writable")


def check_location(path: str | Path) -> Path:
    """``path`` can be written: no symlink loop, its nearest existing ancestor a writable folder and,
    when it is an existing folder, that folder writable too. Returns the resolved path."""
    p = Path(path)
    resolved = _resolve(p)
    _check_parent_writable(p)
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{p}: the folder is not writable")
    return resolved


def inside(path: str | Path, folder: str | Path) -> bool:
    """``path`` is ``folder`` or lies inside it (after resolving links)."""
    p, f = _resolve(Path(path)), _resolve(Path(folder))
    return p == f or f in p.parents


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inputs(inputs: Iterable[str | Path | None]) -> list[Path]:
    """The inputs that are files or folders (a model or scheme given by name is not a path), with the
    ``.json`` sidecar of every NIfTI input: a label volume's table is read with it."""
    paths = [Path(i) for i in inputs if i is not None and str(i) != ""]
    paths += [_sidecar_of(p) for p in paths if p.name.lower().endswith(_NIFTI)]
    return [p for p in paths if p.exists() or p.is_symlink()]


def _is_input(p: Path, inputs: Sequence[Path]) -> bool:
    return any(_same(p, i) or _resolve(p) == _resolve(i) for i in inputs)


def check_output_file(path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse (one line) an output file that cannot or must not be written; writes nothing.

    Refused: a folder at ``path``, a parent that is a file or not writable, a symlink loop, an input
    of the command, an existing file without ``overwrite``, and with ``overwrite`` an existing file
    seg2med did not write.
    """
    p = Path(path)
    _resolve(p)  # a symlink loop fails here
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; expected a file name")
    _check_parent_writable(p)
    if _is_input(p, _inputs(inputs)):
        raise ConfigError(f"{p}: is also an input of this command (or its sidecar); seg2med never overwrites its inputs")
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{p}: output exists (pass --overwrite to replace it)")
        if not written_by_seg2med(p):
            raise OutputExistsError(f"{p}: exists and was not written by seg2med; --overwrite replaces only "
                                    "seg2med's own outputs (move it away or choose another name)")
    return p


def read_folder_marker(folder: Path) -> dict[str, Any] | None:
    data = _json_is_ours(folder / FOLDER_MARKER) if (folder / FOLDER_MARKER).is_file() else None
    return data if data is not None and isinstance(data.get("entries"), list) else None


def folder_kind(kind: str) -> str:
    """The marker kind of a seg2med ``kind`` folder (``dataset`` -> ``seg2med-dataset``)."""
    return f"{OWNER}-{kind}"


def marked_as(folder: Path, kind: str) -> bool:
    """``folder`` carries the marker of a seg2med ``kind`` folder."""
    marker = read_folder_marker(folder) if folder.is_dir() else None
    return marker is not None and marker.get("kind") == folder_kind(kind)


def check_output_dir(path: str | Path, kind: str, overwrite: bool = False,
                     inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse (one line) an output folder that cannot or must not be (re)written; writes nothing.

    The current folder (or one holding it) is refused. A missing or empty folder is fine. An existing one needs ``overwrite``, the marker of a seg2med
    ``kind`` folder, no entry the marker does not list, and no input of the command inside it.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: exists and is not a folder")
    check_location(p)
    here = Path.cwd().resolve()
    if inside(here, p):
        raise ConfigError(f"{p}: is the current folder (or holds it); write into a new folder, e.g. --out ./{kind}")
    for i in _inputs(inputs):
        if inside(i, p):
            raise ConfigError(f"{p}: holds {i}, an input of this command; choose another output folder")
    if not p.is_dir() or not any(p.iterdir()):
        return p
    if not overwrite:
        raise OutputExistsError(f"{p}: output exists (pass --overwrite to replace it)")
    marker = read_folder_marker(p)
    if marker is None:
        raise OutputExistsError(f"{p}: is a folder seg2med did not write (no {FOLDER_MARKER}); --overwrite replaces "
                                "only seg2med's own outputs (choose a new folder)")
    if marker.get("kind") != folder_kind(kind):
        raise OutputExistsError(f"{p}: holds a {marker.get('kind')} output, not a {folder_kind(kind)} one; "
                                "choose another folder")
    listed = set(marker["entries"])
    foreign = sorted(e.name for e in p.iterdir() if e.name != FOLDER_MARKER and e.name not in listed)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputExistsError(f"{p}: holds {foreign[0]}{more}, which seg2med did not write; --overwrite replaces "
                                "only seg2med's own outputs (move it away or choose a new folder)")
    return p


def write_folder_marker(folder: str | Path, kind: str, entries: Iterable[str] | None = None) -> Path:
    """Mark ``folder`` as a seg2med ``kind`` output holding ``entries`` (default: what it holds now)."""
    from seg2med.io.files import write_json

    f = Path(folder)
    names = sorted(set(entries) if entries is not None else {e.name for e in f.iterdir() if e.name != FOLDER_MARKER})
    return write_json(f / FOLDER_MARKER, {"kind": folder_kind(kind), "written_by": owner_tag(), "entries": names},
                      overwrite=True)


# --------------------------------------------------------------------------- writing
def _temp_name(final: Path) -> Path:
    """A hidden, unused name beside ``final`` with the same suffixes (writers pick formats by them)."""
    name = final.name
    suffix = next((s for s in (".nii.gz", ".nii") if name.lower().endswith(s)), "".join(final.suffixes[-1:]))
    return final.with_name(f".{name[: len(name) - len(suffix)] or 'out'}-{uuid.uuid4().hex[:10]}{suffix}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | Path], overwrite: bool = False, inputs: Iterable[str | Path | None] = (),
                   stale: Iterable[str | Path] = ()) -> Iterator[list[Path]]:
    """Yield temporary paths (same folder, same suffixes) for ``paths``; on success move all into place.

    Every path is checked first (:func:`check_output_file`). The commit renames the old files aside,
    moves the new ones in and only then deletes the old ones; if a move fails the old set is put back.
    ``stale`` names files of the previous set (e.g. :func:`described_files` of the old sidecar); those the
    new set does not have (e.g. ``_sample2``) are removed after the commit when seg2med wrote them
    (:func:`written_by_seg2med`) and they are no input. When the body raises, nothing is changed.
    """
    inputs = list(inputs)
    finals = [check_output_file(p, overwrite, inputs) for p in paths]
    if len({_resolve(f) for f in finals}) != len(finals):
        raise ConfigError(f"two outputs share one name: {', '.join(str(f) for f in finals)}")
    made = _make_parents(finals)
    temps = [_temp_name(f) for f in finals]
    committed = False
    try:
        try:
            yield temps
        except OSError as exc:  # name the output, not its temporary file (disk full while writing p.json)
            names = {str(t): str(f) for t, f in zip(temps, finals)}
            exc.filename = names.get(str(exc.filename), exc.filename)
            raise
        missing = [f for f, t in zip(finals, temps) if not t.exists()]
        if missing:
            raise RuntimeError(f"writer did not produce {missing[0]}")  # a programming error, not a user's
        _commit(temps, finals, overwrite)
        committed = True
        keep = {_resolve(f) for f in finals}
        read = _inputs(inputs)
        for s in stale:
            sp = Path(s)
            if _resolve(sp) not in keep and not _is_input(sp, read) and written_by_seg2med(sp):
                sp.unlink()
    finally:
        for t in temps:
            _remove(t)
        if not committed:  # folders made for these outputs go too, when nothing else came into them
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()


def _make_parents(finals: Sequence[Path]) -> list[Path]:
    """Create the missing parent folders of ``finals``; return them, outermost first."""
    made: list[Path] = []
    for f in finals:
        missing = [d for d in (f.parent, *f.parent.parents) if not d.exists()][::-1]
        for d in missing:
            d.mkdir()
            made.append(d)
    return made


def _commit(temps: list[Path], finals: list[Path], overwrite: bool) -> None:
    for f in finals:  # appeared while we were writing
        if (f.exists() or f.is_symlink()) and not overwrite:
            raise OutputExistsError(f"{f}: output exists (pass --overwrite to replace it)")
    moved_aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for t, f in zip(temps, finals):
            if f.exists() or f.is_symlink():
                old = f.with_name(f".{f.name}-old-{uuid.uuid4().hex[:8]}")
                os.rename(f, old)
                moved_aside.append((old, f))
            os.rename(t, f)
            placed.append(f)
    except BaseException:
        for f in placed:
            _remove(f)
        for old, f in reversed(moved_aside):
            with contextlib.suppress(OSError):  # put back what can be put back; the first error is the one to report
                os.rename(old, f)
        raise
    for old, _ in moved_aside:
        _remove(old)


@contextlib.contextmanager
def replace_folder(path: str | Path, kind: str, overwrite: bool = False,
                   inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole, marked as a
    seg2med ``kind`` folder listing what it holds. ``path`` must pass :func:`check_output_dir`; it may
    not be the current folder or hold it (checked there too). On failure ``path`` is untouched and the temporary folder gone."""
    out = check_output_dir(path, kind, overwrite, inputs)
    from seg2med.io.files import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp:
        yield tmp
        write_folder_marker(tmp, kind)


def claim_folder(path: str | Path, kind: str, entries: Sequence[str], overwrite: bool = False,
                 inputs: Iterable[str | Path | None] = ()) -> Path:
    """For commands that fill a folder over time (benchmark): check it (:func:`check_output_dir`),
    remove the entries a previous seg2med ``kind`` run listed there, mark it with ``entries``."""
    out = check_output_dir(path, kind, overwrite, inputs)
    marker = read_folder_marker(out) if out.is_dir() else None
    out.mkdir(parents=True, exist_ok=True)
    for name in (marker or {}).get("entries", []):
        if Path(name).name == name:  # a bare entry name, never a path out of the folder
            _remove(out / name)
    write_folder_marker(out, kind, entries)
    return out

"""NIfTI (and other nibabel formats) reading and atomic writing.

A :class:`Volume` carries its array together with the affine and the header it
was read with, so that every output can be written on exactly the input grid.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import nibabel as nib
import numpy as np

from seg2med.errors import ConfigError, GridMismatchError, InputError
from seg2med.io.budget import check_memory, format_bytes
from seg2med.io.files import atomic_write

NIFTI_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh")

log = logging.getLogger(__name__)


def is_nifti_path(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """File name without its image suffix: ``liver.nii.gz`` -> ``liver``."""
    name = Path(path).name
    for suf in NIFTI_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem


OUTPUT_SUFFIXES = (".nii.gz", ".nii")


def _refuse_non_nifti(p: Path, hidden_ok: bool = True) -> None:
    """One-line error unless ``p`` is named ``*.nii.gz`` / ``*.nii`` (and, unless ``hidden_ok``, not ``.name``)."""
    if not p.name.lower().endswith(OUTPUT_SUFFIXES) or (not hidden_ok and p.name.startswith(".")):
        raise ConfigError(f"{p}: output must be a NIfTI file named *.nii.gz or *.nii")


def check_nifti_output(path: str | Path, overwrite: bool = False, inputs=()) -> Path:
    """Refuse, before any work is done, an output that is not ``.nii.gz`` / ``.nii`` or that may not
    be written (:func:`seg2med.io.outputs.check_output_file`: exists without ``overwrite``, not
    seg2med's, an input of the command...); one-line errors naming the file."""
    from seg2med.io.outputs import check_output_file

    p = Path(path)
    _refuse_non_nifti(p, hidden_ok=False)
    return check_output_file(p, overwrite, inputs)


def sidecar_path(nifti: str | Path) -> Path:
    """The JSON sidecar of an image: ``dir/name.nii.gz`` -> ``dir/name.json``."""
    p = Path(nifti)
    return p.with_name(nifti_stem(p) + ".json")


def list_nifti(folder: str | Path) -> list[Path]:
    """Sorted image files in a folder (not recursive); error if the folder has none."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: folder not found")
    files = sorted(p for p in d.iterdir() if p.is_file() and is_nifti_path(p))
    if not files:
        raise InputError(f"{d}: folder holds no NIfTI files")
    return files


@dataclass
class Volume:
    """A 3D array on a voxel grid given by a 4x4 affine (voxel index -> RAS+ mm)."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<array>"

    def like(self, array: np.ndarray) -> "Volume":
        """A new volume on the same grid (affine and header) holding ``array``."""
        if tuple(array.shape[:3]) != self.shape[:3]:
            raise ValueError(f"shape {array.shape} does not match grid {self.shape}")
        return Volume(array, self.affine.copy(), self.header, None)

    def crop(self, box: tuple[slice, ...]) -> "Volume":
        """``self.array[box]`` (step-1 slices, one per leading axis) as a volume that stays in place physically: the
        affine moved to the new first voxel (as nibabel's ``img.slicer``)."""
        if len(box) > 3 or any(s.step not in (None, 1) for s in box):
            raise ValueError(f"crop takes up to three step-1 slices, got {box}")
        shift = np.eye(4)
        shift[:len(box), 3] = [s.indices(n)[0] for s, n in zip(box, self.shape)]
        return Volume(np.ascontiguousarray(self.array[box]), self.affine @ shift, None, self.path)


#: Largest label id: int32 is the canonical label dtype (TotalSegmentator ids go to 117, FreeSurfer's to ~14175).
LABEL_MAX = int(np.iinfo(np.int32).max)
#: deflate (gzip) expands by at most ~1032:1, so a compressed file of n bytes holds at most this many times n.
DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 22  # elements per chunk of the value checks (no full-volume temporaries)
# the largest transform differences still counted as the same transform (float32 storage in the header)
_AFFINE_ATOL_MM, _AFFINE_ATOL_ROT = 1e-3, 1e-4


def _flat_chunks(data: np.ndarray):
    """``data`` as 1D views of at most ``_CHUNK`` elements (a view of contiguous input, no copy)."""
    flat = data.reshape(-1, order="A")
    for start in range(0, flat.size, _CHUNK):
        yield flat[start : start + _CHUNK]


def _count_nonfinite(data: np.ndarray) -> int:
    if data.dtype.kind != "f":
        return 0
    return sum(int(np.count_nonzero(~np.isfinite(c))) for c in _flat_chunks(data))


def _fmt(v) -> str:
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{float(v):g}"


def _check_real(data: np.ndarray, name: str | Path) -> None:
    if data.dtype.kind not in "biuf":
        raise InputError(f"{name}: unsupported data type {data.dtype} (expected real numbers)")


def _raw_dtype(img: nib.spatialimages.SpatialImage) -> np.dtype:
    return np.dtype(getattr(img.dataobj, "dtype", None) or img.header.get_data_dtype())


def _scaled(img: nib.spatialimages.SpatialImage) -> bool:
    """True when nibabel applies scl_slope / scl_inter on reading (and returns float64)."""
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    return (slope is not None and slope != 1.0) or (inter is not None and inter != 0.0)


def _check_declared_size(path: Path, img: nib.spatialimages.SpatialImage, kind: str) -> None:
    """Before reading: refuse a header that declares more data than the file can hold or than fits the
    memory budget (a 1.4 KB file declaring 2000^3 voxels)."""
    shape = tuple(int(s) for s in img.header.get_data_shape())
    if any(s < 0 for s in shape):
        raise InputError(f"{path}: header declares a negative dimension {shape}")
    nvox = math.prod(shape)
    raw = _raw_dtype(img)
    nbytes = nvox * raw.itemsize
    have = path.stat().st_size
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    declared = f"header declares {nvox} voxels of {raw} ({format_bytes(nbytes)})"
    if path.name.lower().endswith((".gz", ".mgz")):
        if offset + nbytes > DEFLATE_MAX_RATIO * have:
            raise InputError(f"{path}: {declared} but a {format_bytes(have)} compressed file can hold at most "
                             f"{format_bytes(DEFLATE_MAX_RATIO * have)} — truncated file or corrupt header")
    elif offset + nbytes > have:
        raise InputError(f"{path}: truncated: {declared} after a {offset} B header, but the file holds {have} B")
    # what the read really allocates: the array as stored, nibabel's float64 copy when it applies
    # scl_slope/scl_inter, and load_volume's float32 / int32 / bool copy when that differs from what was read
    read = np.dtype(np.float64) if _scaled(img) else raw
    need = nbytes + (nvox * 8 if read != raw else 0)
    final = {"image": np.dtype(np.float32), "labels": np.dtype(np.int32), "mask": np.dtype(bool)}.get(kind)
    if final is not None and final != read:
        need += nvox * final.itemsize
    check_memory(need, f"{path}: reading {' x '.join(map(str, shape))} voxels of {raw}")


def _affine_fmt(m: np.ndarray) -> str:
    return np.array2string(np.asarray(m), precision=3, separator=",", suppress_small=True).replace("\n", "")


def _check_affine(path: Path, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The affine nibabel uses (``get_best_affine``: the sform if its code is set, else the qform, else a
    voxel-size-only fallback); one warning when a NIfTI's qform and sform disagree or it has neither.
    A NaN/inf or singular affine (no usable voxel grid) is refused."""
    affine = np.asarray(img.affine, dtype=np.float64)
    hdr = img.header
    if isinstance(hdr, nib.Nifti1Header):
        q_code, s_code = int(hdr["qform_code"]), int(hdr["sform_code"])
        if q_code == 0 and s_code == 0:
            log.warning("%s: no usable affine (qform_code and sform_code are 0): using nibabel's voxel-size-only "
                        "fallback %s", path, _affine_fmt(affine))
        elif q_code != 0 and s_code != 0:
            q, s = hdr.get_qform(), hdr.get_sform()
            if np.all(np.isfinite(q)) and np.all(np.isfinite(s)):
                rot = np.abs(q[:3, :3] - s[:3, :3]).max()
                shift = np.abs(q[:3, 3] - s[:3, 3]).max()
                if rot > _AFFINE_ATOL_ROT or shift > _AFFINE_ATOL_MM:
                    log.warning("%s: qform %s and sform %s disagree: using the sform (code %d)", path,
                                _affine_fmt(q), _affine_fmt(s), s_code)
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: the affine holds NaN/inf ({_affine_fmt(affine)})")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: singular affine (a zero voxel size or collinear axes: {_affine_fmt(affine)})")
    return affine


def _read(path: Path, kind: str = "image") -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a NIfTI file")
    if not is_nifti_path(path):
        raise InputError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    header_errors = (nib.spatialimages.HeaderDataError, nib.spatialimages.HeaderTypeError,
                     nib.spatialimages.ImageDataError)
    try:
        img = nib.load(str(path))  # the header only
        _check_declared_size(path, img, kind)
        # force the read now so that a truncated/corrupt file fails here
        data = np.asanyarray(img.dataobj)
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InputError(f"{path}: corrupt gzip stream ({exc})") from None
    except nib.filebasedimages.ImageFileError as exc:
        raise InputError(f"{path}: not a NIfTI file ({_first_line(exc)})") from None
    except (OSError, ValueError, *header_errors) as exc:
        raise InputError(f"{path}: unreadable image ({_first_line(exc)})") from None
    return img, data


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def label_values(data: np.ndarray, name: str | Path) -> np.ndarray:
    """``data`` as int32 label ids, or a one-line :class:`InputError` naming ``name``: NaN/inf,
    negative, non-integer values (most often an intensity image given as a label map) or ids above
    :data:`LABEL_MAX` (which an int32 cast would wrap: 2**32 + 5 would become 5). The range is checked
    on the values as stored, before any cast."""
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.int32)
    _check_real(data, name)
    hint = " — an intensity image rather than a label map?"
    if not data.size:
        return data.astype(np.int32)
    bad = _count_nonfinite(data)
    if bad:
        raise InputError(f"{name}: label map holds {bad} NaN/inf voxels")
    lo, hi = data.min(), data.max()
    if lo < 0:
        raise InputError(f"{name}: label map holds negative values (min {_fmt(lo)}) in "
                         f"{int(np.count_nonzero(data < 0))} voxels{hint}")
    # a float >= 2**31 does not fit int32 (compare with 2**31: float32 cannot hold 2**31 - 1)
    if hi > LABEL_MAX or (data.dtype.kind == "f" and hi >= 2.0**31):
        n = int(np.count_nonzero(data > LABEL_MAX if data.dtype.kind != "f" else data >= 2.0**31))
        raise InputError(f"{name}: label id {_fmt(hi)} out of range in {n} voxels (ids must be whole numbers "
                         f"0 .. {LABEL_MAX}, int32)")
    if data.dtype.kind == "f" and not all(np.array_equal(np.rint(c), c) for c in _flat_chunks(data)):
        raise InputError(f"{name}: label map holds non-integer values{hint}")
    return data.astype(np.int32, copy=False)  # exact: whole numbers in range


def _image_values(data: np.ndarray, name: Path) -> np.ndarray:
    """``data`` as float32; NaN/inf, or values beyond the float32 range (which would become inf), are refused."""
    _check_real(data, name)
    bad = _count_nonfinite(data)
    if bad:
        raise InputError(f"{name}: image holds {bad} NaN/inf voxels")
    if data.dtype.kind == "f" and data.dtype.itemsize > 4 and data.size:
        top = float(np.finfo(np.float32).max)
        lo, hi = data.min(), data.max()
        if hi > top or lo < -top:
            n = int(np.count_nonzero(np.abs(data) > top))
            raise InputError(f"{name}: image values up to {_fmt(hi if hi > top else lo)} exceed the float32 "
                             f"range (+-{top:.3g}) in {n} voxels")
    return data.astype(np.float32, copy=False)


def _mask_values(data: np.ndarray, name: Path) -> np.ndarray:
    """``data`` as a boolean mask (non-zero voxels); refused: NaN/inf, more than one non-zero value."""
    _check_real(data, name)
    bad = _count_nonfinite(data)
    if bad:
        raise InputError(f"{name}: mask holds {bad} NaN/inf voxels")
    arr = data != 0
    if data.dtype != bool and arr.any():
        top = data.max()
        if np.any(arr & (data != top)):  # a second non-zero value: not a 0/1 (or 0/255) mask
            raise InputError(f"{name}: not a binary mask (more than one non-zero value, min {_fmt(data.min())}, "
                             f"max {_fmt(top)}) — an image, or a multi-label map that belongs in --labels as a file?")
    return arr


def load_volume(path: str | Path, kind: str = "image") -> Volume:
    """Read a 3D volume.

    ``kind="image"``: float32 array; NaN/inf and values beyond the float32 range are rejected.
    ``kind="labels"``: int32 array; NaN/inf, negative, non-integer or ids beyond int32 are rejected.
    ``kind="mask"``: boolean array (non-zero voxels); a file with more than one non-zero value
    (an image or a multi-label map) is refused.

    Before the data are read, the header's declared size is checked against the file's size and the
    memory budget (:func:`seg2med.io.budget.check_memory`); a NIfTI whose qform and sform disagree, or
    that has neither, is read with nibabel's choice of transform and a warning.
    """
    if kind not in ("image", "labels", "mask"):
        raise ValueError(f"unknown volume kind {kind!r}")
    p = Path(path)
    img, data = _read(p, kind)
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:  # (x, y, z, 1) or (x, y, z, 1, 1): one 3D volume
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{p}: expected a 3D volume, got shape {data.shape}")
    if data.size == 0:
        raise InputError(f"{p}: holds no voxels (shape {data.shape})")
    affine = _check_affine(p, img)
    header = img.header if isinstance(img.header, nib.Nifti1Header) else None
    if kind == "image":
        arr = _image_values(data, p)
    elif kind == "labels":
        arr = label_values(data, p)
    else:
        arr = _mask_values(data, p)
    return Volume(arr, affine, header, p)


def embedded_label_table(header: nib.Nifti1Header | None) -> dict[int, str] | None:
    """The id -> class-name table a label file carries in its header, or None.

    TotalSegmentator writes its multilabel (``--ml``) outputs with a Connectome Workbench
    ``CaretExtension`` XML label table in a NIfTI header extension (``<Label Key="5">liver</Label>``);
    that table, not an assumed numbering, says which id is which class. A malformed table is ignored.
    """
    if header is None:
        return None
    for ext in getattr(header, "extensions", ()):
        raw = ext.get_content()
        content = raw if isinstance(raw, bytes) else str(raw).encode()
        if b"<CaretExtension" not in content:
            continue
        try:
            root = ElementTree.fromstring(content.strip(b"\x00 \t\r\n"))
            table = {int(el.attrib["Key"]): (el.text or "").strip() for el in root.iter("Label")}
        except (ElementTree.ParseError, KeyError, ValueError) as exc:
            log.debug("ignoring a malformed CaretExtension label table (%s)", exc)
            continue
        table = {k: v for k, v in table.items() if k != 0 and v}
        if table:
            return table
    return None


def check_same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> None:
    """Raise :class:`GridMismatchError` (naming both shapes and affines) unless a and b share a grid."""
    same = a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)
    if not same:
        fmt = lambda m: np.array2string(np.asarray(m), precision=3, separator=",").replace("\n", "")  # noqa: E731
        raise GridMismatchError(
            f"{a.name} and {b.name}: different voxel grids "
            f"(shape {a.shape} vs {b.shape}; affine {fmt(a.affine)} vs {fmt(b.affine)})"
        )


def smallest_int_dtype(arr: np.ndarray) -> type:
    """Smallest of uint8 / int16 / int32 that holds the (non-negative) integer array."""
    hi = int(arr.max()) if arr.size else 0
    return np.uint8 if hi < 256 else np.int16 if hi < 32768 else np.int32


def save_volume(vol: Volume, path: str | Path, overwrite: bool = False, dtype: type | None = None) -> Path:
    """Write ``vol`` as NIfTI atomically, keeping its affine (and header) exactly.

    Integer arrays are stored as the smallest integer type holding them,
    floating arrays as float32 unless ``dtype`` says otherwise. No intensity
    scaling is applied (scl_slope/scl_inter are cleared), and the source header's display range
    (cal_min/cal_max), intent and extensions (e.g. an embedded label table) are cleared: they
    described other values.
    """
    arr = np.asarray(vol.array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if dtype is None:
        dtype = smallest_int_dtype(arr) if np.issubdtype(arr.dtype, np.integer) else np.float32
    arr = arr.astype(dtype, copy=False)
    if vol.header is not None:
        hdr = vol.header.copy()
        hdr.set_data_shape(arr.shape)
        # what described the source's values does not describe these: a label map's display window
        # (cal_min/cal_max 0..117) would show a CT in HU as black/white, its intent would call an image
        # labels; geometry, units and slice timing stay
        hdr["cal_min"] = hdr["cal_max"] = 0
        hdr.set_intent("none", (), allow_unknown=True)
        hdr.extensions.clear()  # e.g. the source's label table: it names the ids of another volume
        img = nib.Nifti1Image(arr, vol.affine, header=hdr)
    else:
        img = nib.Nifti1Image(arr, vol.affine)
        img.header.set_qform(vol.affine, code=1)
        img.header.set_sform(vol.affine, code=1)
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    from seg2med.io.outputs import owner_tag

    img.header["descrip"] = owner_tag().encode()  # how --overwrite knows seg2med wrote this file
    target = Path(path)
    _refuse_non_nifti(target)
    with atomic_write(target, overwrite) as tmp:
        nib.save(img, str(tmp))
    return target

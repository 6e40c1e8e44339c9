"""NIfTI (and other nibabel formats) reading and atomic writing.

A :class:`Volume` carries its array together with the affine and the header it
was read with, so that every output can be written on exactly the input grid.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import nibabel as nib
import numpy as np

from seg2med.errors import ConfigError, GridMismatchError, InputError
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


def _read(path: Path) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a NIfTI file")
    if not is_nifti_path(path):
        raise InputError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
        # force the read now so that a truncated/corrupt file fails here
        data = np.asanyarray(img.dataobj)
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InputError(f"{path}: corrupt gzip stream ({exc})") from None
    except nib.filebasedimages.ImageFileError as exc:
        raise InputError(f"{path}: not a NIfTI file ({str(exc).splitlines()[0]})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable image ({str(exc).splitlines()[0]})") from None
    return img, data


def label_values(data: np.ndarray, name: str | Path) -> np.ndarray:
    """``data`` as integer label ids (integer input unchanged, whole-number floats as int64), or a
    one-line :class:`InputError` naming ``name``: NaN/inf, non-integer or negative values (most often
    an intensity image given as a label map)."""
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.int32)
    hint = " — an intensity image rather than a label map?"
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)):
            raise InputError(f"{name}: label map holds NaN/inf voxels")
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(f"{name}: label map holds non-integer values{hint}")
        data = rounded
    if data.size and data.min() < 0:
        raise InputError(f"{name}: label map holds negative values (min {data.min():g}){hint}")
    return data if np.issubdtype(data.dtype, np.integer) else data.astype(np.int64)


def load_volume(path: str | Path, kind: str = "image") -> Volume:
    """Read a 3D volume.

    ``kind="image"``: float32 array; NaN/inf are rejected.
    ``kind="labels"``: integer array; non-integer values are rejected.
    ``kind="mask"``: boolean array (non-zero voxels); a file with more than one non-zero value
    (an image or a multi-label map) is refused.
    """
    p = Path(path)
    img, data = _read(p)
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:  # (x, y, z, 1) or (x, y, z, 1, 1): one 3D volume
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{p}: expected a 3D volume, got shape {data.shape}")
    header = img.header if isinstance(img.header, nib.Nifti1Header) else None
    if kind == "image":
        arr = data.astype(np.float32, copy=False)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(f"{p}: image holds {int(bad.sum())} NaN/inf voxels")
    elif kind == "labels":
        arr = label_values(data, p).astype(np.int32, copy=False)
    elif kind == "mask":
        arr = np.asarray(data) != 0
        if data.dtype != bool and arr.any():
            top = data.max()
            if np.any(arr & (data != top)):  # a second non-zero value: not a 0/1 (or 0/255) mask
                raise InputError(f"{p}: not a binary mask (more than one non-zero value, min {data.min():g}, "
                                 f"max {top:g}) — an image, or a multi-label map that belongs in --labels as a file?")
    else:
        raise ValueError(f"unknown volume kind {kind!r}")
    return Volume(arr, np.asarray(img.affine, dtype=np.float64), header, p)


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

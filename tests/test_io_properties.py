"""Property-based tests of the NIfTI reader (issue #11): for random headers, dtypes, shapes, affines (singular,
NaN, qform/sform codes), scaling and value ranges, ``load_volume`` either returns exactly the file's data (as
nibabel reads it) on the file's affine, or raises a one-line :class:`~seg2med.errors.Seg2MedError`; never another
exception and never a silently changed value."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seg2med.errors import Seg2MedError
from seg2med.io.nifti import load_volume

DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64,
          np.bool_]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _shapes() -> st.SearchStrategy[tuple[int, ...]]:
    core = hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=4)
    return st.one_of(core, st.tuples(core, st.integers(1, 2)).map(lambda t: (*t[0], *(1,) * t[1])),  # trailing 1s
                     hnp.array_shapes(min_dims=4, max_dims=5, min_side=1, max_side=3))  # 4D / 5D


@st.composite
def _arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(_shapes())
    if dtype.kind == "f":
        special = st.sampled_from([0.0, 1.0, 5.0, 117.0, 2.0**31 - 1, 2.0**31, 1e20, -1.0, 0.5, np.nan, np.inf,
                                   -np.inf, 1e300 if dtype.itemsize == 8 else 3e38])
        elements = st.one_of(special, st.floats(width=8 * dtype.itemsize, allow_nan=True, allow_infinity=True))
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        special = st.sampled_from([v for v in (0, 1, 5, 117, 14175, 2**31 - 1, 2**31, 2**32 + 5, info.max, info.min, -1)
                                   if info.min <= v <= info.max])
        elements = st.one_of(special, st.integers(int(info.min), int(info.max)))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def _affines(draw) -> np.ndarray:
    zooms = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0, -2.0]), min_size=3, max_size=3))
    aff = np.diag([*zooms, 1.0])
    if draw(st.booleans()):
        aff[:3, :3] = aff[:3, list(draw(st.permutations([0, 1, 2])))]
    aff[:3, 3] = draw(st.lists(st.floats(-500, 500, allow_nan=False), min_size=3, max_size=3))
    if draw(st.integers(0, 9)) == 0:
        aff[draw(st.integers(0, 2)), draw(st.integers(0, 3))] = draw(st.sampled_from([np.nan, np.inf]))
    return aff


def _write(path: Path, arr: np.ndarray, qform, q_code: int, sform, s_code: int, slope: float, inter: float) -> None:
    """Save ``arr`` with nibabel, then set the transforms and scaling in its header block (nibabel itself
    refuses NaN or singular transforms on writing)."""
    raw_path = path.with_name("raw.nii")
    stored = arr.astype(np.uint8) if arr.dtype == bool else arr  # NIfTI has no bool type
    nib.save(nib.Nifti1Image(stored, np.eye(4), dtype=stored.dtype), str(raw_path))
    hdr = nib.load(str(raw_path)).header.copy()
    try:
        with np.errstate(all="ignore"):
            hdr.set_qform(qform, code=q_code)
    except (nib.spatialimages.HeaderDataError, np.linalg.LinAlgError, ValueError):  # not decomposable into a quaternion (singular, NaN): keep the header's quaternion
        hdr["qform_code"] = q_code
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = sform[0], sform[1], sform[2]
    hdr["sform_code"] = s_code
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    data = raw_path.read_bytes()
    blob = hdr.binaryblock + data[len(hdr.binaryblock):]
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)


def _expected(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, np.asarray(img.affine)


@SETTINGS
@given(arr=_arrays(), kind=st.sampled_from(["image", "labels", "mask"]), qform=_affines(), sform=_affines(),
       q_code=st.sampled_from([0, 1, 2]), s_code=st.sampled_from([0, 1, 4]),
       slope=st.sampled_from([1.0, 1.0, 0.0, np.nan, 2.0, 0.5]), inter=st.sampled_from([0.0, 0.0, 1.5]),
       gz=st.booleans())
def test_load_volume_is_exact_or_a_seg2med_error(arr, kind, qform, sform, q_code, s_code, slope, inter, gz):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("v.nii.gz" if gz else "v.nii")
        _write(path, arr, qform, q_code, sform, s_code, slope, inter)
        try:
            vol = load_volume(path, kind=kind)
        except Seg2MedError as exc:
            msg = str(exc)
            assert "\n" not in msg and str(path) in msg  # one line naming the file
            return
        data, affine = _expected(path)
    assert data.ndim == 3 and vol.shape == data.shape and data.size > 0
    np.testing.assert_array_equal(vol.affine, affine)  # the file's own (nibabel's best) affine
    assert np.all(np.isfinite(vol.affine)) and abs(np.linalg.det(vol.affine[:3, :3])) > 0
    if kind == "labels":
        assert vol.array.dtype == np.int32
        # the same ids: compared as float64 (exact below 2**53; valid ids are below 2**31)
        np.testing.assert_array_equal(vol.array.astype(np.float64), data.astype(np.float64))
        assert np.array_equal(vol.array.astype(data.dtype), data)  # and exactly in the stored dtype
    elif kind == "image":
        assert vol.array.dtype == np.float32 and np.all(np.isfinite(vol.array))
        np.testing.assert_array_equal(vol.array, data.astype(np.float32))
    else:
        assert vol.array.dtype == bool
        np.testing.assert_array_equal(vol.array, data != 0)
        assert len(np.unique(data[data != 0])) <= 1  # a binary mask: one non-zero value at most


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 3000)),
       dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64]), gz=st.booleans())
def test_declared_size_beyond_the_file_is_an_error_not_a_read(shape, dtype, gz):
    """A header declaring far more data than the file holds (2 KiB of data) is refused before reading."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("b.nii.gz" if gz else "b.nii")
        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(dtype)
        hdr.set_data_shape(shape)
        hdr.set_data_offset(352)
        hdr.set_sform(np.eye(4), code=1)
        blob = hdr.binaryblock + b"\x00" * 4 + b"\x00" * 2048
        path.write_bytes(gzip.compress(blob) if gz else blob)
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        try:
            vol = load_volume(path, kind="image")
        except Seg2MedError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
    assert need <= 2048 and vol.array.size * np.dtype(dtype).itemsize == need


@SETTINGS
@given(st.data())
def test_a_cropped_volume_stays_in_place_as_nibabels_slicer_puts_it(data):
    """``Volume.crop(box)``: the same voxels and, for every affine, the affine nibabel's ``img.slicer[box]`` gives (each
    kept voxel at the same world position)."""
    from seg2med.io import Volume

    shape = data.draw(st.tuples(*(st.integers(1, 6),) * 3))
    affine = np.eye(4)
    affine[:3, :] = data.draw(hnp.arrays(np.float64, (3, 4), elements=st.floats(-50, 50)))
    assume(abs(np.linalg.det(affine[:3, :3])) > 1e-3)  # a NIfTI image needs an invertible affine
    box = tuple(slice(*sorted(data.draw(st.tuples(st.integers(0, n), st.integers(0, n))))) for n in shape)
    box = tuple(s if s.stop > s.start else slice(s.start, s.start + 1) for s in box)
    box = tuple(slice(min(s.start, n - 1), min(s.stop, n)) for s, n in zip(box, shape))
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    out = Volume(arr, affine).crop(box)
    ref = nib.Nifti1Image(arr, affine).slicer[box]
    assert np.array_equal(out.array, np.asarray(ref.dataobj))
    assert np.allclose(out.affine, ref.affine, atol=1e-9)

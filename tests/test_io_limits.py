"""Reader limits (issue #11): label ids beyond int32, images beyond float32, masks with NaN/inf, qform/sform
warnings, headers that declare more data than the file (or the memory budget) holds, and the memory budget of
the commands whose options imply huge arrays (phantom, prepare, train). Each refusal is one line naming the
file or option, exit code != 0, no traceback and no output left behind."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_cli

from seg2med.errors import BudgetError, ConfigError, InputError
from seg2med.io.budget import MEMORY_ENV
from seg2med.io.nifti import label_values, load_volume


def _save(arr, path: Path, affine=None) -> Path:
    arr = np.asarray(arr)
    img = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine, dtype=arr.dtype)  # int64 as stored
    nib.save(img, str(path))
    return path


def _clean_error(res, *needles: str) -> str:
    assert res.code != 0
    assert "Traceback" not in res.err + res.out
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- label ids, image and mask values
def _labels(dtype, value) -> np.ndarray:
    arr = np.zeros((4, 4, 3), dtype=dtype)
    arr[1, 1, 1] = 5  # liver
    arr[2, 2, 2] = arr[3, 3, 0] = value
    return arr


@pytest.mark.parametrize(("dtype", "value", "shown"), [
    (np.int64, 2**32 + 5, "4294967301"),  # an int32 cast would make it 5 (liver)
    (np.uint32, 4294967295, "4294967295"),  # was reported as "negative"
    (np.float64, 1e20, "1e+20"),  # was air (or garbage)
    (np.float32, 2.0**31, "2.14748e+09"),  # float32 cannot hold 2**31 - 1: the first value above int32
    (np.int64, 2**31, "2147483648"),
])
def test_label_ids_beyond_int32_are_refused_before_the_cast(tmp_path, dtype, value, shown):
    p = _save(_labels(dtype, value), tmp_path / "seg.nii.gz")
    with pytest.raises(InputError) as exc:
        load_volume(p, kind="labels")
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and shown in msg and "in 2 voxels" in msg and "out of range" in msg
    with pytest.raises(InputError, match="out of range in 2 voxels"):  # the in-memory path (labelmap) too
        label_values(_labels(dtype, value), "arr")


def test_label_ids_at_the_int32_limit_are_read_exactly(tmp_path):
    for dtype, value in ((np.int64, 2**31 - 1), (np.uint32, 14175), (np.float64, 2.0**31 - 1), (np.float32, 117.0)):
        vol = load_volume(_save(_labels(dtype, value), tmp_path / "seg.nii"), kind="labels")
        assert vol.array.dtype == np.int32
        assert vol.array[2, 2, 2] == value and vol.array[1, 1, 1] == 5 and int(vol.array.sum()) == 5 + 2 * int(value)


def test_negative_nonfinite_and_fractional_label_values_name_value_and_count(tmp_path):
    with pytest.raises(InputError, match=r"negative values \(min -3\) in 2 voxels"):
        load_volume(_save(_labels(np.int16, -3), tmp_path / "a.nii"), kind="labels")
    with pytest.raises(InputError, match="2 NaN/inf voxels"):
        load_volume(_save(_labels(np.float32, np.inf), tmp_path / "b.nii"), kind="labels")
    with pytest.raises(InputError, match="non-integer"):
        load_volume(_save(_labels(np.float32, 2.5), tmp_path / "c.nii"), kind="labels")


def test_float64_image_beyond_float32_range_is_refused_not_made_inf(tmp_path):
    arr = np.zeros((4, 4, 3))
    arr[0, 0, 0] = 1e300
    p = _save(arr, tmp_path / "ct.nii")
    with pytest.raises(InputError) as exc:
        load_volume(p, kind="image")
    assert str(p) in str(exc.value) and "1e+300" in str(exc.value) and "float32 range" in str(exc.value)
    arr[0, 0, 0] = -3.0e38  # still representable: read as float32 of the same value
    vol = load_volume(_save(arr, tmp_path / "ok.nii"), kind="image")
    assert vol.array.dtype == np.float32 and vol.array[0, 0, 0] == np.float32(-3.0e38)


def test_mask_with_inf_is_refused_and_complex_data_is_unsupported(tmp_path):
    arr = np.zeros((4, 4, 3), np.float32)
    arr[1:3, 1:3, 1] = np.inf  # one non-zero value: accepted as a mask today
    with pytest.raises(InputError, match="mask holds 4 NaN/inf voxels"):
        load_volume(_save(arr, tmp_path / "m.nii"), kind="mask")
    cplx = np.zeros((4, 4, 3), np.complex64)
    cplx[0, 0, 0] = 1 + 2j  # would lose its imaginary part silently
    with pytest.raises(InputError, match="unsupported data type complex64"):
        load_volume(_save(cplx, tmp_path / "c.nii"), kind="image")


# --------------------------------------------------------------------------- qform / sform
def _img_with_codes(q_affine, q_code, s_affine, s_code) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), None)
    img.header.set_qform(q_affine, code=q_code)
    img.header.set_sform(s_affine, code=s_code)
    return img


def test_qform_sform_disagreement_warns_and_uses_the_sform(tmp_path, caplog):
    s_aff, q_aff = np.diag([2.0, 2.0, 3.0, 1.0]), np.diag([2.0, 2.0, 3.0, 1.0])
    q_aff[0, 3] = 10.0
    p = tmp_path / "dis.nii"
    nib.save(_img_with_codes(q_aff, 1, s_aff, 2), str(p))
    with caplog.at_level(logging.WARNING, logger="seg2med.io.nifti"):
        vol = load_volume(p, kind="labels")
    np.testing.assert_array_equal(vol.affine, s_aff)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(p) in warnings[0] and "disagree" in warnings[0] and "using the sform" in warnings[0]


def test_no_affine_warns_and_uses_nibabels_fallback(tmp_path, caplog):
    p = tmp_path / "none.nii"
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), None)
    img.header.set_zooms((2.0, 2.0, 3.0))
    nib.save(img, str(p))
    with caplog.at_level(logging.WARNING, logger="seg2med.io.nifti"):
        vol = load_volume(p, kind="labels")
    np.testing.assert_array_equal(vol.affine, nib.load(str(p)).header.get_base_affine())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(p) in warnings[0] and "no usable affine" in warnings[0]


def test_agreeing_transforms_or_an_sform_only_file_do_not_warn(tmp_path, caplog):
    aff = np.array([[0.0, -1.5, 0, 100.0], [1.5, 0, 0, -200.0], [0, 0, 2.5, 333.3], [0, 0, 0, 1]])
    nib.save(_img_with_codes(aff, 1, aff, 1), str(tmp_path / "a.nii"))
    _save(np.zeros((4, 4, 3), np.int16), tmp_path / "b.nii", aff)  # nibabel's default: sform only
    with caplog.at_level(logging.WARNING, logger="seg2med.io.nifti"):
        for name in ("a.nii", "b.nii"):
            np.testing.assert_allclose(load_volume(tmp_path / name).affine, aff, atol=1e-5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_nan_or_singular_affine_is_refused(tmp_path):
    for name, field, col, value, needle in (("nan.nii", "srow_x", 0, np.nan, "the affine holds NaN/inf"),
                                            ("flat.nii", "srow_z", 2, 0.0, "singular affine")):
        p = _save(np.zeros((2, 2, 2), np.int16), tmp_path / name)  # sform only (nibabel's default)
        hdr = nib.load(str(p)).header.copy()
        hdr[field][col] = value  # nibabel will not write such an affine itself: patch the header block
        raw = p.read_bytes()
        p.write_bytes(hdr.binaryblock + raw[len(hdr.binaryblock):])
        with pytest.raises(InputError, match=needle):
            load_volume(p)


# --------------------------------------------------------------------------- declared size vs file and budget
def _bomb(path: Path, shape: tuple[int, ...], dtype=np.float32) -> Path:
    """A header declaring ``shape`` followed by (almost) no data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_sform(np.eye(4), code=1)
    hdr.set_data_offset(352)
    raw = hdr.binaryblock + b"\x00" * 4 + b"\x00" * 1024  # vox_offset 352 and 1 KiB of 'data'
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def test_uncompressed_header_declaring_more_than_the_file_is_truncated(tmp_path):
    p = _bomb(tmp_path / "bomb.nii", (2000, 2000, 2000))
    with pytest.raises(InputError) as exc:
        load_volume(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: truncated: header declares 8000000000 voxels") and "29.8 GiB" in msg
    assert "after a 352 B header, but the file holds 1376 B" in msg


def test_compressed_header_declaring_beyond_the_deflate_limit_is_refused(tmp_path):
    p = _bomb(tmp_path / "bomb.nii.gz", (30000, 30000, 30000), np.uint8)
    with pytest.raises(InputError) as exc:
        load_volume(p, kind="labels")
    msg = str(exc.value)
    assert str(p) in msg and "27000000000000 voxels" in msg and "compressed file can hold at most" in msg


def test_a_file_beyond_the_memory_budget_is_refused_before_reading(tmp_path, monkeypatch):
    arr = np.zeros((64, 64, 64), np.int16)  # 512 KiB on disk, + the 1 MiB int32 copy for labels
    p = _save(arr, tmp_path / "big.nii")
    monkeypatch.setenv(MEMORY_ENV, str(1.0 / 1024))  # 1 MiB
    with pytest.raises(BudgetError) as exc:
        load_volume(p, kind="labels")
    assert str(p) in str(exc.value) and "1.5 MiB" in str(exc.value) and MEMORY_ENV in str(exc.value)
    monkeypatch.setenv(MEMORY_ENV, str(2.0 / 1024))
    assert load_volume(p, kind="labels").shape == (64, 64, 64)


def test_mgz_declaring_more_than_it_can_hold_is_refused(tmp_path):
    img = nib.MGHImage(np.zeros((8, 8, 8), np.float32), np.eye(4))
    img.header.set_data_shape((4000, 4000, 4000))
    p = tmp_path / "bomb.mgz"
    nib.save(nib.MGHImage(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(p))
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(img.header.binaryblock + raw[len(img.header.binaryblock):]))
    with pytest.raises(InputError, match="compressed file can hold at most"):
        load_volume(p)


def test_cli_refuses_a_header_bomb_in_one_line(tmp_path, capsys, monkeypatch):
    p = _bomb(tmp_path / "bomb.nii.gz", (2000, 2000, 2000))
    out = tmp_path / "prior.nii.gz"
    res = run_cli(["simulate", "--labels", p, "--out", out], capsys, monkeypatch)
    _clean_error(res, str(p), "8000000000 voxels")
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["bomb.nii.gz"]


# --------------------------------------------------------------------------- commands: phantom, prepare, train
@pytest.mark.parametrize(("args", "needle"), [
    (["--spacing", "inf"], "finite numbers > 0 mm (got inf, inf)"),
    (["--spacing", "nan"], "finite numbers > 0 mm (got nan, nan)"),
    (["--spacing", "0"], "finite numbers > 0 mm (got 0, 0)"),
    (["--spacing", "-1"], "finite numbers > 0 mm (got -1, -1)"),
    (["--size", "0"], "size >= 16 and slices >= 1 (got size 0, slices 64)"),
    (["--slices", "0"], "size >= 16 and slices >= 1 (got size 256, slices 0)"),
    (["--size", "100000", "--slices", "100000"], "phantom: 100000 x 100000 x 100000 voxels: needs 14.2 PiB"),
])
def test_phantom_bad_sizes_are_one_line_errors(tmp_path, capsys, monkeypatch, args, needle):
    out = tmp_path / "ph.nii.gz"
    res = run_cli(["phantom", "--out", out, *args], capsys, monkeypatch)
    _clean_error(res, needle)
    assert not list(tmp_path.iterdir())


def test_phantom_budget_counts_16_bytes_per_voxel(monkeypatch):
    from seg2med.anatomy.phantom import check_phantom_options, make_phantom

    monkeypatch.setenv(MEMORY_ENV, str((16 * 64 * 64 * 16 + 16) / 2**30))  # 64 x 64 x 16 voxels
    check_phantom_options(2.0, 2.0, 64, 16)
    assert make_phantom(size=64, slices=16, spacing=5.0).shape == (64, 64, 16)
    with pytest.raises(BudgetError, match="phantom: 64 x 64 x 17 voxels: needs 1.1 MiB"):
        make_phantom(size=64, slices=17, spacing=5.0)
    with pytest.raises(ConfigError):
        check_phantom_options(float("inf"), 1.0, 64, 16)


def _prepare_inputs(tmp_path: Path) -> tuple[Path, Path]:
    ct = np.full((24, 24, 6), -1000.0, np.float32)
    ct[4:20, 4:20, :] = 40.0
    seg = np.zeros((24, 24, 6), np.int16)
    seg[6:18, 6:18, 1:5] = 5
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    return _save(ct, tmp_path / "ct.nii.gz", aff), _save(seg, tmp_path / "seg.nii.gz", aff)


def test_prepare_tiny_spacing_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    ct, seg = _prepare_inputs(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    out = tmp_path / "ds"
    res = run_cli(["prepare", "--images", ct, "--labels", seg, "--out", out, "--spacing", "0.001"], capsys, monkeypatch)
    line = _clean_error(res, "resampling 6 axial slices to 0.001 mm", "36000 x 36000 px each", "more than the memory budget")
    assert "29.0 GiB" in line  # 6 x 36000^2 x 4 B, plus the 256 x 256 slices
    assert not out.exists() and {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_prepare_budget_counts_the_resampled_stack(monkeypatch):
    from seg2med.data.prepare import PrepareConfig, SubjectInput, check_resample_memory
    from seg2med.io import Volume

    img = Volume(np.zeros((20, 20, 5), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    s = SubjectInput("A", img, img, np.ones((20, 20, 5), bool))
    cfg = PrepareConfig(spacing=0.5, size=32).validate()
    need = 4 * 5 * 40 * 40 + 16 * 5 * 32 * 32  # resampled 40 x 40 stack + the kept 32 x 32 slices
    monkeypatch.setenv(MEMORY_ENV, str((need + 16) / 2**30))
    check_resample_memory(s, cfg)
    monkeypatch.setenv(MEMORY_ENV, str((need - 16) / 2**30))
    with pytest.raises(BudgetError, match=r"A \(<array>\): resampling 5 axial slices to 0.5 mm \(40 x 40 px each\)"):
        check_resample_memory(s, cfg)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    from seg2med.data import PrepareConfig, prepare_dataset
    from seg2med.data.synthetic import phantom_subjects

    out = tmp_path_factory.mktemp("limits") / "ds"
    prepare_dataset(phantom_subjects(2), out, PrepareConfig(modality="ct", spacing=8.0, size=32, split=(0.5, 0.5, 0.0)))
    return out


def test_train_huge_batch_is_refused_before_training(tiny_dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    res = run_cli(["train", "--data", tiny_dataset, "--out", out, "--preset", "tiny", "--batch", "100000",
                   "--device", "cpu"], capsys, monkeypatch)
    _clean_error(res, "train: a batch of 100000 slices of 32 x 32", "more than the memory budget")
    assert not out.exists()


def test_batch_budget_counts_inputs_and_cpu_activations(tiny_dataset, monkeypatch):
    from seg2med.data.dataset import SliceDataset
    from seg2med.training.data import check_batch_memory, ddpm_activation_bytes

    ds = SliceDataset(tiny_dataset, split="train")
    has_labels = any(r.get("has_labels") for r in ds.manifest["subjects"])
    per_pixel = 2 * 4 * (3 + (2 if has_labels else 0)) + ddpm_activation_bytes((16, 32, 64, 64), 1)
    assert ddpm_activation_bytes((16, 32, 64, 64), 1) == pytest.approx(3659, rel=0.03)  # measured, tiny
    assert ddpm_activation_bytes((64, 128, 256, 256), 2) == pytest.approx(21893, rel=0.03)  # measured, paper
    need = 8 * 32 * 32 * per_pixel
    monkeypatch.setenv(MEMORY_ENV, str((need + 16) / 2**30))
    check_batch_memory(ds, 8, "train", ddpm_activation_bytes((16, 32, 64, 64), 1))
    with pytest.raises(BudgetError, match="train: a batch of 9 slices of 32 x 32"):
        check_batch_memory(ds, 9, "train", ddpm_activation_bytes((16, 32, 64, 64), 1))

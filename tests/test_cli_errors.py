"""Bad input: one clear line naming the file and the problem, exit code != 0, no traceback, no output."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import run_cli


def _assert_clean_error(res, *needles: str) -> None:
    assert res.code != 0
    assert "Traceback" not in res.err and "Traceback" not in res.out
    text = " ".join(res.err.split())
    for n in needles:
        assert n in text, (n, res.err)


def _save(arr, path, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def small_labels(tmp_path):
    arr = np.zeros((12, 12, 6), np.int16)
    arr[3:9, 3:9, 1:5] = 5  # liver
    arr[5:7, 5:7, 2:4] = 52  # aorta
    return _save(arr, tmp_path / "seg.nii.gz", np.diag([2.0, 2.0, 3.0, 1.0]))


def test_missing_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", tmp_path / "nope.nii.gz", "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "nope.nii.gz", "file not found")
    assert not out.exists()


def test_not_a_nifti(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "notes.nii"
    bad.write_bytes(b"this is not an image at all" * 20)
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", bad, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "notes.nii")
    assert not out.exists()
    txt = tmp_path / "labels.txt"
    txt.write_text("x")
    res = run_cli(["simulate", "--labels", txt, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "labels.txt", "not a NIfTI")


def test_corrupt_gzip(tmp_path, small_labels, capsys, monkeypatch):
    data = small_labels.read_bytes()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", broken, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "broken.nii.gz")
    assert not out.exists()
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"x" * 10)[:-6] + b"\x00" * 6)
    res = run_cli(["simulate", "--labels", garbage, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "garbage.nii.gz")


def test_grid_mismatch_names_both_shapes_and_affines(tmp_path, small_labels, capsys, monkeypatch):
    ct = np.full((10, 12, 6), -1000.0, np.float32)  # air around a soft-tissue block: a plausible CT
    ct[3:7, 3:9, 1:5] = 40.0
    img = _save(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "l.nii.gz"
    res = run_cli(["anatomy", "--labels", small_labels, "--image", img, "--modality", "ct", "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "different voxel grids", "(12, 12, 6)", "(10, 12, 6)", "affine")
    assert not out.exists()


def test_empty_label_map(tmp_path, capsys, monkeypatch):
    empty = _save(np.zeros((8, 8, 4), np.uint8), tmp_path / "empty.nii.gz")
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", empty, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "empty.nii.gz", "empty")
    assert not out.exists()


@pytest.mark.parametrize(("arr", "needle"), [
    (np.full((8, 8, 4), -1000.0, np.float32), "negative values (min -1000)"),  # a CT image
    (np.full((8, 8, 4), 0.5, np.float32), "non-integer values"),  # an MR image / probability map
])
def test_an_image_given_as_labels_is_named_as_such(tmp_path, capsys, monkeypatch, arr, needle):
    img = _save(arr, tmp_path / "ct.nii.gz")
    for cmd in (["simulate", "--labels", img, "--out", tmp_path / "p.nii.gz"],
                ["generate", "--labels", img, "--out", tmp_path / "s.nii.gz", "--model", "ct-demo-tiny", "--steps", "2"]):
        res = run_cli(cmd, capsys, monkeypatch)
        _assert_clean_error(res, "ct.nii.gz", needle, "an intensity image rather than a label map?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


@pytest.mark.parametrize("cmd", ["simulate", "anatomy", "generate", "phantom"])
def test_an_output_that_is_not_nifti_is_refused_before_any_work(tmp_path, small_labels, capsys, monkeypatch, cmd):
    out = tmp_path / "result.txt"
    args = [cmd, "--out", out] + ([] if cmd == "phantom" else ["--labels", small_labels])
    res = run_cli(args + (["--model", "ct-demo-tiny", "--steps", "1"] if cmd == "generate" else []), capsys, monkeypatch)
    _assert_clean_error(res, "result.txt", "output must be a NIfTI file named *.nii.gz or *.nii")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_a_folder_of_images_given_as_masks_is_refused(tmp_path, capsys, monkeypatch):
    # e.g. a BraTS modality folder passed as --labels: each file is read as a class mask
    folder = tmp_path / "flair"
    folder.mkdir()
    ok = np.zeros((8, 8, 4), np.uint8)
    ok[2:5, 2:5, 1:3] = 255  # a 0/255 mask is fine
    _save(ok, folder / "liver.nii.gz")
    img = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    _save(img, folder / "case_flair.nii.gz")
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", folder, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "case_flair.nii.gz", "not a binary mask", "max 255")
    assert not out.exists()
    (folder / "case_flair.nii.gz").unlink()
    res = run_cli(["simulate", "--labels", folder, "--out", out], capsys, monkeypatch)
    assert res.code == 0, res.err


@pytest.mark.parametrize(("device", "needle"), [
    ("foo", "unknown device 'foo' (expected auto, cpu, cuda or cuda:N)"),
    ("mps", "unknown device 'mps'"),
    ("cuda:0", "no CUDA device is available"),
])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, small_labels, capsys, monkeypatch, device, needle):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    out = tmp_path / "s.nii.gz"
    res = run_cli(["generate", "--labels", small_labels, "--out", out, "--model", "ct-demo-tiny", "--device", device],
                  capsys, monkeypatch)
    _assert_clean_error(res, needle)
    assert not out.exists()


def test_parse_device_names() -> None:
    import torch

    from seg2med.errors import ConfigError
    from seg2med.models.precision import parse_device

    assert parse_device("CPU") == torch.device("cpu")
    assert parse_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert parse_device("cuda", local_rank=n + 1) == torch.device("cuda", (n + 1) % n)
        with pytest.raises(ConfigError, match=f"has {n} CUDA device"):
            parse_device(f"cuda:{n}")
    with pytest.raises(ConfigError, match="unknown device 'cuda0'"):
        parse_device("cuda0")


def test_nan_in_image(tmp_path, small_labels, capsys, monkeypatch):
    arr = np.zeros((12, 12, 6), np.float32)
    arr[0, 0, 0] = np.nan
    arr[1, 0, 0] = np.inf
    img = _save(arr, tmp_path / "ct.nii.gz", np.diag([2.0, 2.0, 3.0, 1.0]))
    out = tmp_path / "l.nii.gz"
    res = run_cli(["anatomy", "--labels", small_labels, "--image", img, "--modality", "ct", "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "ct.nii.gz", "2 NaN/inf")
    assert not out.exists()


def test_unknown_scheme_and_sequence(tmp_path, small_labels, capsys, monkeypatch):
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", small_labels, "--out", out, "--scheme", "totl"], capsys, monkeypatch)
    _assert_clean_error(res, "unknown label scheme 'totl'")
    res = run_cli(["simulate", "--labels", small_labels, "--out", out, "--sequence", "bssfp"], capsys, monkeypatch)
    _assert_clean_error(res, "bssfp")
    assert not out.exists()
    assert not (tmp_path / "p.json").exists()


def test_output_exists_without_overwrite_is_refused_and_untouched(tmp_path, small_labels, capsys, monkeypatch):
    out = tmp_path / "p.nii.gz"
    out.write_bytes(b"precious")
    res = run_cli(["simulate", "--labels", small_labels, "--out", out], capsys, monkeypatch)
    _assert_clean_error(res, "p.nii.gz", "--overwrite")
    assert out.read_bytes() == b"precious"
    res = run_cli(["simulate", "--labels", small_labels, "--out", out, "--overwrite"], capsys, monkeypatch)
    _assert_clean_error(res, "p.nii.gz", "not written by seg2med")  # --overwrite replaces only seg2med's own files
    assert out.read_bytes() == b"precious"
    out.unlink()
    assert run_cli(["simulate", "--labels", small_labels, "--out", out], capsys, monkeypatch).code == 0
    res = run_cli(["simulate", "--labels", small_labels, "--out", out, "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err  # its own output it does replace
    assert nib.load(str(out)).get_fdata().shape == (12, 12, 6)
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "keep.txt").write_text("keep")
    res = run_cli(["prepare", "--images", small_labels, "--labels", small_labels, "--out", ds], capsys, monkeypatch)
    _assert_clean_error(res, "ds", "--overwrite")
    assert (ds / "keep.txt").read_text() == "keep"


def test_console_script_prints_one_line_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("seg2med")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run([str(exe), "simulate", "--labels", str(tmp_path / "x.nii.gz"), "--out", str(tmp_path / "y.nii.gz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len([l for l in proc.stderr.strip().splitlines() if l.strip()]) == 1
    assert "x.nii.gz: file not found" in proc.stderr


def test_unknown_ids_warn_by_default_and_fail_with_strict(tmp_path, small_labels, capsys, monkeypatch):
    arr = np.asarray(nib.load(str(small_labels)).dataobj).copy()
    arr[0, 0, 0:3] = 150  # not a TotalSegmentator 'total' id
    seg = _save(arr, tmp_path / "odd.nii.gz", np.diag([2.0, 2.0, 3.0, 1.0]))
    out = tmp_path / "p.nii.gz"
    res = run_cli(["simulate", "--labels", seg, "--out", out], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert "150" in res.err and "3 voxels" in " ".join(res.err.split())
    out2 = tmp_path / "q.nii.gz"
    res = run_cli(["simulate", "--labels", seg, "--out", out2, "--strict"], capsys, monkeypatch)
    _assert_clean_error(res, "odd.nii.gz", "150", "3 voxels")
    assert not out2.exists()

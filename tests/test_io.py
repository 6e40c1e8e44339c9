"""io.files: atomic writes keep nothing on failure, refuse overwrites, and give outputs normal permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seg2med.errors import InputError, OutputExistsError
from seg2med.io.checkpoints import save_weights
from seg2med.io.files import atomic_dir, atomic_write
from seg2med.io.nifti import Volume, load_volume, save_volume


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_safetensors_and_nifti_outputs_get_umask_permissions_not_0600(tmp_path: Path, umask_022) -> None:
    # safetensors recreates the file it writes as 0600; a checkpoint must be readable like any new file
    w = save_weights(tmp_path / "w.safetensors", {"a": torch.zeros(3)})
    assert _mode(w) == 0o644
    vol = Volume(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 3.0, 1.0]))
    n = save_volume(vol, tmp_path / "v.nii.gz")
    assert _mode(Path(n)) == 0o644
    with atomic_dir(tmp_path / "run") as d:
        (d / "x.txt").write_text("x")
    assert _mode(tmp_path / "run") == 0o755


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_overwrite_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "old"
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_json_is_strict_json_with_nan_as_null(tmp_path: Path) -> None:
    # a one-subject evaluation has sd = NaN: the file must still parse as strict JSON (jq, JavaScript)
    from seg2med.io.files import read_json, write_json

    p = write_json(tmp_path / "s.json", {"sd": float("nan"), "x": [np.float32(np.inf), np.array([1.5, np.nan])], "n": 1})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    import json

    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert strict == {"sd": None, "x": [None, [1.5, None]], "n": 1} == read_json(p)


def test_saved_volume_keeps_geometry_but_not_the_source_display_window_or_intent(tmp_path: Path) -> None:
    # a generated CT written with its label map's header must not inherit the labels' display
    # window (viewers would show HU -1000..1000 clipped to 0..117) nor a "label" intent
    src = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.diag([-1.5, -1.5, 3.0, 1.0]))
    src.header["cal_min"], src.header["cal_max"] = 0, 117
    src.header.set_intent("label")
    src.header.set_xyzt_units("mm", "sec")
    nib.save(src, tmp_path / "labels.nii.gz")
    labels = load_volume(tmp_path / "labels.nii.gz", kind="labels")
    out = save_volume(labels.like(np.full(labels.shape, -1000.0, np.float32)), tmp_path / "ct.nii.gz")
    hdr = nib.load(out).header
    assert (float(hdr["cal_min"]), float(hdr["cal_max"])) == (0.0, 0.0)
    assert int(hdr["intent_code"]) == 0
    assert hdr.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_array_equal(nib.load(out).affine, labels.affine)
    assert nib.load(out).get_fdata().min() == -1000.0


def test_load_volume_reads_trailing_singleton_dims_as_3d_and_refuses_true_4d(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) % 7
    nib.save(nib.Nifti1Image(data[..., None, None], np.eye(4)), tmp_path / "x5d.nii.gz")
    vol = load_volume(tmp_path / "x5d.nii.gz", kind="labels")
    assert vol.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.array, data)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), np.eye(4)), tmp_path / "x4d.nii.gz")
    with pytest.raises(InputError, match=r"x4d.nii.gz: expected a 3D volume, got shape \(4, 5, 6, 2\)"):
        load_volume(tmp_path / "x4d.nii.gz")

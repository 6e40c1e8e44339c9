"""`seg2med lesion`: a tumour inserted, moved or scaled in a brain label map (Med-DDPM's BraTS 2021 case), with nested
compartments, inside the brain, seeded, on the input grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cli_helpers import run_cli
from seg2med.anatomy.lesion import (ED, ET, NCR, TumourParameters, compartment_volumes, insert_tumour, move_tumour,
                                    sample_tumour, scale_tumour)
from seg2med.errors import ConfigError, InputError
from seg2med.io import load_volume

BRAIN = 4


@pytest.fixture(scope="module")
def seg_path(data_dir):
    return data_dir / "med-ddpm" / "brats2021" / "seg" / "BraTS2021_01306_seg.nii.gz"


@pytest.fixture(scope="module")
def seg(seg_path):
    return load_volume(seg_path, kind="labels")


def _brain_only(seg):
    arr = np.asarray(seg.array).copy()
    arr[(arr > 0) & (arr < 4)] = BRAIN
    return seg.like(arr)


def test_an_inserted_tumour_has_nested_compartments_inside_the_brain_and_the_asked_size(seg):
    clean = _brain_only(seg)
    p = TumourParameters(centre=(90.0, 100.0, 70.0), radius_mm=12.0, core_fraction=0.5, edema_mm=8.0,
                         irregularity=0.0, shape_seed=0)
    out = insert_tumour(clean, p)
    arr, before = np.asarray(out.array), np.asarray(clean.array)
    assert out.shape == clean.shape and np.array_equal(out.affine, clean.affine) and out.array.dtype == before.dtype
    assert not arr[before == 0].any()  # nothing outside the brain
    # nesting: a core voxel touches only core or enhancing tumour; the enhancing rim only tumour or oedema
    grow = lambda m: ndimage.binary_dilation(m, ndimage.generate_binary_structure(3, 1))  # noqa: E731
    assert set(np.unique(arr[grow(arr == NCR)])) <= {NCR, ET}
    assert set(np.unique(arr[grow(arr == ET)])) <= {NCR, ET, ED}
    # a sphere (irregularity 0) at 1 mm: core 4/3 pi 6^3 = 905 mL/1000, enhancing shell to 12 mm, oedema to 20 mm
    ml = compartment_volumes(out)
    assert ml["necrotic_tumor_core"] == pytest.approx(4 / 3 * np.pi * 6**3 / 1000, rel=0.1)
    assert ml["enhancing_tumor"] == pytest.approx(4 / 3 * np.pi * (12**3 - 6**3) / 1000, rel=0.1)
    assert ml["peritumoral_edema"] <= 4 / 3 * np.pi * (20**3 - 12**3) / 1000 * 1.02  # cut where it leaves the brain
    centroid = np.array(ndimage.center_of_mass(arr == NCR))
    assert np.allclose(centroid, p.centre, atol=0.5)


def test_random_tumours_are_seeded_irregular_and_lie_deep_in_the_brain(seg):
    clean = _brain_only(seg)
    a, b, c = (sample_tumour(clean, seed) for seed in (5, 5, 6))
    assert a == b and a != c
    assert np.array_equal(insert_tumour(clean, a).array, insert_tumour(clean, b).array)
    depth = ndimage.distance_transform_edt(np.asarray(clean.array) > 0, sampling=clean.spacing)
    for p in (a, c):
        assert depth[tuple(int(round(v)) for v in p.centre)] >= p.radius_mm
        tumour = np.isin(np.asarray(insert_tumour(clean, p).array), (NCR, ET))
        # irregular: the boundary's distance from the centre varies (a sphere's would not, beyond the voxels)
        edge = tumour & ~ndimage.binary_erosion(tumour)
        r = np.linalg.norm((np.argwhere(edge) - np.array(p.centre)) * np.array(clean.spacing), axis=1)
        assert r.std() / r.mean() > 0.05


def test_moving_and_scaling_the_existing_tumour(seg):
    arr = np.asarray(seg.array)
    tumour = np.isin(arr, (NCR, ED, ET))
    c0 = np.array(ndimage.center_of_mass(tumour))
    moved = move_tumour(seg, (0.0, 0.0, 10.0))  # 10 mm superior (+z in RAS+)
    m = np.isin(np.asarray(moved.array), (NCR, ED, ET))
    shift_vox = np.linalg.solve(seg.affine[:3, :3], [0.0, 0.0, 10.0])
    assert np.allclose(np.array(ndimage.center_of_mass(m)), c0 + shift_vox, atol=1.5)
    assert np.asarray(moved.array)[tumour & ~m].tolist() == [BRAIN] * int((tumour & ~m).sum())  # old place: brain
    half = scale_tumour(seg, 0.5)
    v0, v1 = compartment_volumes(seg), compartment_volumes(half)
    total = lambda v: v["necrotic_tumor_core"] + v["peritumoral_edema"] + v["enhancing_tumor"]  # noqa: E731
    assert total(v1) == pytest.approx(total(v0) / 8, rel=0.2)
    assert v1["non_tumour_brain"] + total(v1) == pytest.approx(v0["non_tumour_brain"] + total(v0), rel=1e-9)
    with pytest.raises(ConfigError, match="--scale"):
        scale_tumour(seg, 0.0)
    with pytest.raises(InputError, match="no tumour"):
        move_tumour(_brain_only(seg), (1.0, 0.0, 0.0))


def test_cli_writes_the_edited_mask_with_the_edit_in_its_sidecar(seg_path, seg, tmp_path, capsys, monkeypatch):
    out = tmp_path / "edited.nii.gz"
    centre = seg.affine @ np.array([96.0, 96.0, 60.0, 1.0])
    res = run_cli(["lesion", "--labels", seg_path, "--out", out, "--insert", "--centre",
                   ",".join(f"{v:.3f}" for v in centre[:3]), "--radius", "10", "--seed", "2"], capsys, monkeypatch)
    assert res.code == 0, res.err
    img = nib.load(out)
    assert img.shape == seg.shape and np.array_equal(img.affine, nib.load(seg_path).affine)
    side = json.loads(out.with_name("edited.json").read_text())
    lesion = side["report"]["lesion"]
    assert side["scheme"] == "brats_medddpm" and lesion["edit"] == "insert" and lesion["tumour"]["radius_mm"] == 10.0
    assert np.allclose(lesion["tumour"]["centre_mm"], centre[:3], atol=1e-3)
    after = lesion["volumes_ml"]["after"]
    assert after["enhancing_tumor"] > lesion["volumes_ml"]["before"]["enhancing_tumor"]
    assert "mL" in res.out
    # the input is untouched, and a second run refuses to overwrite without --overwrite
    assert np.array_equal(np.asarray(nib.load(seg_path).dataobj), np.asarray(seg.array))
    res = run_cli(["lesion", "--labels", seg_path, "--out", out, "--scale", "2"], capsys, monkeypatch)
    assert res.code != 0 and "exists" in res.err


@pytest.mark.parametrize("args, message", [
    (["--insert", "--scale", "2"], "one edit"),
    ([], "one edit"),
    (["--scale", "2", "--radius", "5"], "go with --insert"),
    (["--insert", "--centre", "1,2"], "x,y,z"),
    (["--insert", "--centre", "a,b,c"], "comma-separated numbers"),
    (["--insert", "--centre", "5000,0,0"], "outside the grid"),
    (["--insert", "--radius", "500"], "radius_mm must be a number in"),
    (["--move", "1,0,0", "--scheme", "brats2021"], "BraTS2021_01306_seg.nii.gz: label id 3 is not a class of scheme"),
])
def test_cli_bad_edits_are_one_line_errors(seg_path, tmp_path, capsys, monkeypatch, args, message):
    out = tmp_path / "x.nii.gz"
    res = run_cli(["lesion", "--labels", seg_path, "--out", out, *args], capsys, monkeypatch)
    assert res.code == 2, res.err
    assert message in res.err and "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_random_tumour_in_an_aseg_map_is_centred_in_cerebral_white_matter(data_dir):
    """An aseg map (voxelmorph's FreeSurfer segmentation) edited with --insert: the random centre lies in cerebral
    white matter (where gliomas arise) for every seed, and the report says so; a BraTS map keeps 'deep in the brain'."""
    from seg2med.api import edit_lesion
    from seg2med.io import Volume
    from seg2med.labels import get_scheme

    scan = np.load(data_dir / "voxelmorph" / "test_scan.npz")
    aseg = Volume(scan["seg"].astype(np.int16), np.eye(4))
    wm_ids = [get_scheme("aseg").id_of(n) for n in ("left_cerebral_white_matter", "right_cerebral_white_matter")]
    for seed in (0, 1, 2):
        lv = edit_lesion(aseg, scheme="aseg", insert=True, seed=seed)
        rec = lv.report["lesion"]
        assert rec["placed"] == "random, in white matter"
        centre = tuple(int(round(c)) for c in rec["tumour"]["centre"])
        assert np.asarray(aseg.array)[centre] in wm_ids
        arr = np.asarray(lv.volume.array)
        assert (arr == NCR).any() and lv.scheme.name == "brats_medddpm" and lv.volume.shape == aseg.shape
    brats = edit_lesion(seg_path_volume(data_dir), insert=True, seed=0).report["lesion"]
    assert brats["placed"] == "random, deep in the brain"


def seg_path_volume(data_dir):
    return load_volume(data_dir / "med-ddpm" / "brats2021" / "seg" / "BraTS2021_01306_seg.nii.gz", kind="labels")

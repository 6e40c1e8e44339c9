"""The command line on real data: simulate, anatomy, prepare (round trip), phantom, labels, demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import run_cli
from seg2med.data.prepare import load_manifest, read_subject_slices, restore_labels, restore_volume
from seg2med.io import load_volume


def test_simulate_cli_writes_float_prior_on_input_grid(ts_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mr.nii.gz"
    res = run_cli(["simulate", "--labels", ts_dir / "example_seg_mr.nii.gz", "--scheme", "total_mr", "--out", out,
                   "--sequence", "vibe-opp", "--field", "3", "--flip", "12"], capsys, monkeypatch)
    assert res.code == 0, res.err
    prior, seg = load_volume(out), load_volume(ts_dir / "example_seg_mr.nii.gz", kind="labels")
    assert prior.shape == seg.shape and np.array_equal(prior.affine, seg.affine)  # LPS input kept as is
    meta = json.loads((tmp_path / "mr.json").read_text())
    assert meta["sequence"]["name"] == "vibe-opp" and meta["sequence"]["field"] == 3.0 and meta["sequence"]["flip"] == 12.0
    assert meta["scheme"] == "total_mr+seg2med" and meta["body_contour"] == "labels"  # no --body / --image given
    assert prior.array.max() > 0 and prior.array.dtype == np.float32


def test_simulate_cli_seed_reproduces_and_zero_spread_matches(ts_dir, tmp_path, capsys, monkeypatch):
    seg = ts_dir / "example_seg.nii.gz"
    args = ["simulate", "--labels", seg, "--sequence", "ct"]
    for name, extra in [("a", ["--seed", "3", "--noise", "10", "--tissue-spread", "1"]),
                        ("b", ["--seed", "3", "--noise", "10", "--tissue-spread", "1"]),
                        ("c", ["--seed", "4", "--noise", "10", "--tissue-spread", "1"]),
                        ("d", []), ("e", ["--seed", "9"])]:
        assert run_cli(args + ["--out", tmp_path / f"{name}.nii.gz", *extra], capsys, monkeypatch).code == 0
    arr = {n: load_volume(tmp_path / f"{n}.nii.gz").array for n in "abcde"}
    assert np.array_equal(arr["a"], arr["b"])
    assert not np.array_equal(arr["a"], arr["c"])
    assert np.array_equal(arr["d"], arr["e"])  # a seed with zero spread = deterministic prior


def test_anatomy_cli_report_counts(ts_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "canon.nii.gz"
    res = run_cli(["anatomy", "--labels", ts_dir / "example_seg.nii.gz", "--tissue-masks", ts_dir / "example_seg_tissue_types",
                   "--image", ts_dir / "example_ct_sm.nii.gz", "--modality", "ct", "--out", out], capsys, monkeypatch)
    assert res.code == 0, res.err
    summary = " ".join(res.out.split())
    assert "scheme total+seg2med (ids named by the file's own label table)" in summary and "body contour from ct" in summary
    table = json.loads((tmp_path / "canon.json").read_text())
    assert table["labels"]["200"] == "body" and table["labels"]["5"] == "liver"
    assert table["report"]["label_table"] == "embedded" and table["report"]["contour_source"] == "ct"
    organs = load_volume(ts_dir / "example_seg.nii.gz", kind="labels").array
    muscle = load_volume(ts_dir / "example_seg_tissue_types" / "skeletal_muscle.nii.gz", kind="mask").array
    lost = sum(o["voxels"] for o in table["report"]["overlaps"]
               if o["rule"] == "organ_over_tissue" and o["loser"] == "skeletal_muscle")
    assert lost == int((muscle & (organs > 0)).sum())


def test_prepare_cli_round_trip_restores_ct(ts_dir, tmp_path, capsys, monkeypatch):
    ds = tmp_path / "ds"
    res = run_cli(["prepare", "--images", ts_dir / "example_ct_sm.nii.gz", "--labels", ts_dir / "example_seg.nii.gz",
                   "--tissue-masks", ts_dir / "example_seg_tissue_types", "--sequence", "ct", "--out", ds,
                   "--axes", "axial,coronal", "--spacing", "1.0", "--size", "384"], capsys, monkeypatch)
    assert res.code == 0, res.err
    m = load_manifest(ds)
    assert m["config"]["sequence"]["name"] == "ct" and m["config"]["scheme"] == "total"
    subj = m["subjects"][0]
    ct = load_volume(ts_dir / "example_ct_sm.nii.gz")
    for axis in ("axial", "coronal"):
        body = restore_labels(read_subject_slices(ds, subj, axis, key="mask"), subj, axis).astype(bool)
        assert body.sum() > 0.9 * (ct.array > -500).sum()  # the body contour (table removed)
        stored = read_subject_slices(ds, subj, axis, key="image")
        assert stored.shape[1:] == (384, 384) and stored.min() >= 0 and stored.max() <= 1
        back = restore_volume(stored, subj, axis, modality="ct")
        assert back.shape == ct.shape
        # 3 mm -> 1 mm puts every original voxel centre on the fine grid: only float rounding remains
        err = np.abs(back - np.clip(ct.array, -1000, 1000))[body]
        assert err.max() < 0.5, (axis, err.max())
        prior = restore_volume(read_subject_slices(ds, subj, axis, key="prior"), subj, axis, modality="ct")
        liver = load_volume(ts_dir / "example_seg.nii.gz", kind="labels").array == 5
        assert abs(np.median(prior[liver]) - 55.0) < 5  # the CT prior's liver value survives the round trip


def test_phantom_and_labels_cli(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ph.nii.gz"
    res = run_cli(["phantom", "--out", out, "--seed", "2", "--spacing", "2", "--slices", "24", "--size", "128"], capsys, monkeypatch)
    assert res.code == 0, res.err
    vol = load_volume(out, kind="labels")
    assert vol.shape == (128, 128, 24) and vol.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert {5, 1, 52, 63, 79, 200, 201}.issubset(set(np.unique(vol.array).tolist()))
    res = run_cli(["labels", "total_mr"], capsys, monkeypatch)
    assert res.code == 0 and "intervertebral_discs" in res.out


def test_demo_writes_named_outputs_and_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    res = run_cli(["demo", "--out", out, "--priors-only"], capsys, monkeypatch)
    assert res.code == 0, res.err
    for name in ("labels.nii.gz", "labels.json", "ct_prior.nii.gz", "mr_prior.nii.gz", "preview_ct.png", "preview_mr.png"):
        assert (out / name).stat().st_size > 0
    from PIL import Image

    img = np.asarray(Image.open(out / "preview_ct.png").convert("L"))
    assert img.shape[0] > 200 and img.std() > 10  # a real picture, not a blank canvas
    labels = load_volume(out / "labels.nii.gz", kind="labels")
    ct = load_volume(out / "ct_prior.nii.gz")
    assert np.array_equal(labels.affine, ct.affine)
    assert ct.array[labels.array == 5].mean() == pytest.approx(55.0)  # liver
    before = (out / "ct_prior.nii.gz").read_bytes()
    res = run_cli(["demo", "--out", out, "--priors-only"], capsys, monkeypatch)
    assert res.code != 0 and "--overwrite" in res.err
    assert (out / "ct_prior.nii.gz").read_bytes() == before


def test_demo_synthesis_from_user_labels_on_their_grid_in_bf16(ts_dir, tmp_path, capsys, monkeypatch):
    # the demo's main job with the shipped ct-demo and mr-demo, on a crop of subject A's label map
    from seg2med.io import Volume, save_volume

    seg = load_volume(ts_dir / "example_seg.nii.gz", kind="labels")
    shift = np.eye(4)
    shift[2, 3] = 12
    crop = save_volume(Volume(seg.array[:, :, 12:16], seg.affine @ shift), tmp_path / "crop.nii.gz")
    out = tmp_path / "demo"
    res = run_cli(["demo", "--out", out, "--labels", crop, "--steps", "2", "--precision", "fp16"], capsys, monkeypatch)
    assert res.code != 0 and "fp16 needs a CUDA device" in res.err and not out.exists()
    res = run_cli(["demo", "--out", out, "--labels", crop, "--steps", "2", "--precision", "bf16", "--convert"],
                  capsys, monkeypatch)
    assert res.code == 0, res.err
    src = load_volume(crop, kind="labels")
    # --convert: the synthetic CT converted to MR image to image, on the same grid, the crosswalk recorded
    conv = load_volume(out / "ct_to_mr.nii.gz")
    assert conv.shape == src.shape and np.array_equal(conv.affine, src.affine) and conv.array.std() > 0
    cmeta = json.loads((out / "ct_to_mr.json").read_text())
    assert (cmeta["convert"]["modality"], cmeta["convert"]["to"]) == ("ct", "mr")
    assert (cmeta["crosswalk"]["source"], cmeta["crosswalk"]["target"]) == ("total", "total_mr")
    assert (out / "preview_convert.png").stat().st_size > 0
    canonical = load_volume(out / "labels.nii.gz", kind="labels")  # organs + body contour, on the crop's grid
    assert np.array_equal(canonical.affine, src.affine)
    for mod, lo, hi in (("ct", -1000.0, 1000.0), ("mr", None, None)):
        syn = load_volume(out / f"{mod}_synthetic.nii.gz")
        assert syn.shape == src.shape and np.array_equal(syn.affine, src.affine)
        meta = json.loads((out / f"{mod}_synthetic.json").read_text())
        assert (meta["model_name"], meta["steps"], meta["precision"]) == (f"{mod}-demo", 2, "bf16")
        inside = canonical.array != 0
        assert syn.array[inside].std() > 0  # an image, not a constant
        if lo is not None:
            assert lo <= syn.array.min() and syn.array.max() <= hi
            assert syn.array[~inside].max() == pytest.approx(-1000.0)  # air outside the body


def test_generate_with_a_totalsegmentator_body_mask_restores_the_body_wall(ts_dir, tmp_path, capsys, monkeypatch):
    """An organ-only TotalSegmentator label map gives a body that hugs the organs (fat and muscle wall become
    air, with a warning); --body (TotalSegmentator --task body) puts them back: far closer to the real CT."""
    from seg2med.anatomy import body_mask_from_ct
    from seg2med.io import save_volume

    ct = load_volume(ts_dir / "example_ct_sm.nii.gz")
    body = body_mask_from_ct(ct.array, ct.spacing, affine=ct.affine)
    (tmp_path / "body_task").mkdir()
    save_volume(ct.like(body.astype(np.uint8)), tmp_path / "body_task" / "body.nii.gz")
    maes = {}
    for name, extra in (("organs", []), ("body", ["--body", tmp_path / "body_task"])):
        out = tmp_path / f"{name}.nii.gz"
        res = run_cli(["generate", "--labels", ts_dir / "example_seg.nii.gz", "--out", out, "--model", "ct-demo-tiny",
                       "--steps", "5", "--batch", "30", *extra], capsys, monkeypatch)
        assert res.code == 0, res.err
        assert ("no body contour" in " ".join(res.err.split())) == (name == "organs")
        assert f"body contour from {'labels' if name == 'organs' else 'given'})" in " ".join(res.out.split())
        syn = load_volume(out)
        assert np.array_equal(syn.affine, ct.affine)
        assert json.loads(out.with_suffix("").with_suffix(".json").read_text())["body_contour"] == (
            "labels" if name == "organs" else "given")
        maes[name] = float(np.abs(np.clip(syn.array, -1000, 1000) - np.clip(ct.array, -1000, 1000))[body].mean())
    assert maes["body"] < 80.0 and maes["organs"] > 250.0, maes


def test_demo_body_and_tissue_masks_need_labels(tmp_path, capsys, monkeypatch):
    res = run_cli(["demo", "--out", tmp_path / "d", "--body", tmp_path / "b.nii.gz", "--priors-only"], capsys, monkeypatch)
    assert res.code != 0 and "--tissue-masks and --body go with --labels" in " ".join(res.err.split())
    assert not (tmp_path / "d").exists()


def test_a_seg2med_label_volume_refuses_body_and_tissue_options(tmp_path, capsys, monkeypatch):
    # labels written by seg2med already hold body and tissues: --body / --tissue-masks would be silently ignored
    lab = tmp_path / "ph.nii.gz"
    assert run_cli(["phantom", "--out", lab, "--slices", "4", "--size", "64", "--spacing", "6"], capsys, monkeypatch).code == 0
    res = run_cli(["simulate", "--labels", lab, "--out", tmp_path / "p.nii.gz", "--body", lab], capsys, monkeypatch)
    assert res.code != 0 and "a seg2med label volume already holds its tissues and body; --body would be ignored" in " ".join(res.err.split())
    assert not (tmp_path / "p.nii.gz").exists()
    assert run_cli(["simulate", "--labels", lab, "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch).code == 0

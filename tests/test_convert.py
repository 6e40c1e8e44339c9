"""`seg2med convert`: an image of one modality -> the other, through its anatomy, on the image's grid."""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np

from cli_helpers import run_cli


def _median(ct, lab, side, name):
    ids = {n: int(i) for i, n in side.items()}
    return float(np.median(ct[lab == ids[name]]))


def test_mr_subject_converted_to_ct_keeps_its_grid_records_every_stage_and_orders_the_tissues(ts_dir, tmp_path, capsys,
                                                                                              monkeypatch):
    """Subject C's MR with its total_mr labels -> CT (ct-demo-tiny, a total model): the crosswalk keeps vertebrae as
    bone; no same-patient CT exists, so what is checked is what CT must be: bone > liver > body fat-ish, air outside."""
    image, labels = ts_dir / "example_mr_sm.nii.gz", ts_dir / "example_seg_mr.nii.gz"
    out = tmp_path / "ct.nii.gz"
    res = run_cli(["convert", "--image", image, "--modality", "mr", "--to", "ct", "--model", "ct-demo-tiny",
                   "--labels", labels, "--out", out, "--steps", 2, "--precision", "fp32"], capsys, monkeypatch)
    assert res.code == 0, res.err
    src, ct_img = nib.load(image), nib.load(out)
    assert ct_img.shape == src.shape and np.allclose(ct_img.affine, src.affine)
    meta = json.loads((tmp_path / "ct.json").read_text())
    conv = meta["convert"]
    assert conv["modality"] == "mr" and conv["to"] == "ct" and conv["labels"]["source"] == "given"
    assert conv["body_contour"] == "mr" and meta["crosswalk"]["source"] == "total_mr" and meta["crosswalk"]["target"] == "total"
    ct = np.asarray(ct_img.dataobj, dtype=np.float32)
    lab = np.asarray(nib.load(labels).dataobj).astype(int)
    mr_ids = {"vertebrae": 19, "liver": 5, "spleen": 1, "autochthon_left": 46}
    med = {n: float(np.median(ct[lab == i])) for n, i in mr_ids.items()}
    assert med["vertebrae"] > 150 > med["liver"] > 0 and 0 < med["spleen"] < 120 and 0 < med["autochthon_left"] < 100
    from seg2med.anatomy import body_mask_from_mr
    from seg2med.io import load_volume

    mrv = load_volume(image, kind="image")
    body = body_mask_from_mr(mrv.array, mrv.spacing, affine=mrv.affine)
    assert (~body).sum() > 1000 and float(np.median(ct[~body])) < -900  # air outside the MR's body contour
    assert float(np.median(ct[body & (lab == 0)])) > -200  # unlabelled body: soft tissue / fat, not air
    assert meta["qc"]["summary"]["passed"]


def test_convert_with_an_installed_totalsegmentator_runs_its_mr_task(ts_dir, tmp_path, capsys, monkeypatch):
    """--segmenter totalsegmentator: the installed command (a stand-in here that writes subject C's labels) is run
    with task total_mr on the MR image; without it, or without its weights, a one-line error and nothing written."""
    image = ts_dir / "example_mr_sm.nii.gz"
    known = ts_dir / "example_seg_mr.nii.gz"
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    res = run_cli(["convert", "--image", image, "--modality", "mr", "--to", "ct", "--model", "ct-demo-tiny",
                   "--segmenter", "totalsegmentator", "--out", tmp_path / "x.nii.gz"], capsys, monkeypatch)
    assert res.code != 0 and "TotalSegmentator is not installed" in res.err and not (tmp_path / "x.nii.gz").exists()
    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "TotalSegmentator"
    exe.write_text(f"""#!{sys.executable}
import sys, shutil
a = sys.argv
assert '--ml' in a and a[a.index('--task') + 1] == 'total_mr'
shutil.copy({str(known)!r}, a[a.index('-o') + 1])
""")
    exe.chmod(0o755)
    home = tmp_path / "tshome"
    (home / "nnunet" / "results" / "Dataset850_TotalSegMRI_part1_organs_1088subj").mkdir(parents=True)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    out = tmp_path / "ct.nii.gz"
    res = run_cli(["convert", "--image", image, "--modality", "mr", "--to", "ct", "--model", "ct-demo-tiny",
                   "--segmenter", "totalsegmentator", "--out", out, "--steps", 1, "--precision", "fp32"], capsys, monkeypatch)
    assert res.code == 0, res.err
    conv = json.loads((tmp_path / "ct.json").read_text())["convert"]
    assert conv["labels"] == {"source": "totalsegmentator", "task": "total_mr", "scheme": "total_mr+seg2med"}


def test_convert_refuses_what_it_cannot_do_on_one_line(ts_dir, tmp_path, capsys, monkeypatch):
    image, labels = ts_dir / "example_mr_sm.nii.gz", ts_dir / "example_seg_mr.nii.gz"
    base = ["convert", "--image", image, "--modality", "mr", "--out", tmp_path / "x.nii.gz"]
    cases = [
        (["--to", "ct", "--model", "ct-demo-tiny"], "--labels L"),
        (["--to", "mr", "--model", "mr-demo-tiny", "--labels", labels], "both mr"),
        (["--to", "ct", "--model", "mr-demo-tiny", "--labels", labels], "generates mr, not ct"),
        (["--to", "ct", "--model", "ct-demo-tiny", "--labels", labels, "--segmenter", "totalsegmentator"], "--labels L"),
        (["--to", "ct", "--model", "ct-demo-tiny", "--labels", ts_dir / "example_seg.nii.gz"], "grid"),
    ]
    for extra, needle in cases:
        res = run_cli(base + extra, capsys, monkeypatch)
        assert res.code != 0 and needle in res.err and "Traceback" not in res.err, (extra, res.err)
        assert sum(ln.startswith("error:") for ln in res.err.splitlines()) == 1, res.err
    assert not (tmp_path / "x.nii.gz").exists()


def test_shipped_ct_segmenter_segments_held_out_slices_and_makes_convert_work_from_the_image_alone(ts_dir, tmp_path,
                                                                                                 capsys, monkeypatch):
    """ct-seg-demo (one training subject: a demonstration) on subject A's held-out block z 58-71: the large muscles
    and the spinal cord well (measured Dice 0.89 / 0.88 / 0.87); then convert needs no label map at all."""
    from seg2med.inference.segment import list_segmenters, load_segmenter, segment_volume
    from seg2med.io import Volume, load_volume, save_volume
    from seg2med.metrics import dice_per_class

    assert "ct-seg-demo" in list_segmenters()
    shift = np.eye(4)
    shift[2, 3] = 58
    ct, lab = load_volume(ts_dir / "example_ct.nii.gz"), load_volume(ts_dir / "example_seg_fast_force_split.nii.gz",
                                                                   kind="labels")
    block = Volume(np.ascontiguousarray(ct.array[:, :, 58:72]), ct.affine @ shift)
    truth = np.asarray(lab.array[:, :, 58:72])
    pred = segment_volume(block, load_segmenter("ct-seg-demo")).array
    dice = dice_per_class(pred, truth, classes=[86, 87, 79])  # autochthon left / right, spinal cord
    assert all(d > 0.8 for d in dice.values()), dice
    path = save_volume(block, tmp_path / "ct_block.nii.gz")
    out = tmp_path / "mr.nii.gz"
    res = run_cli(["convert", "--image", path, "--modality", "ct", "--to", "mr", "--model", "mr-demo-tiny",
                   "--segmenter", "ct-seg-demo", "--out", out, "--steps", 1, "--precision", "fp32"], capsys, monkeypatch)
    assert res.code == 0, res.err
    meta = json.loads((tmp_path / "mr.json").read_text())
    assert meta["convert"]["labels"]["source"] == "segmenter" and meta["crosswalk"]["target"] == "total_mr"
    assert nib.load(out).shape == block.shape

"""`seg2med evaluate --unpaired`: synthetic volumes judged without a same-patient real image (per-organ check,
re-segmentation Dice beside the segmenter's Dice on real images, Fréchet distance to a reference set)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import run_cli

BLOCK = (58, 72)  # subject A's held-out block (neither ct-seg-demo nor the CT models trained on it)


@pytest.fixture(scope="module")
def block(ts_dir, tmp_path_factory):
    """Subject A's held-out block: the real CT, its labels (fast task, split), and a copy 600 HU too dark."""
    from seg2med.io import Volume, load_volume, save_volume

    d = tmp_path_factory.mktemp("unpaired")
    shift = np.eye(4)
    shift[2, 3] = BLOCK[0]
    ct = load_volume(ts_dir / "example_ct.nii.gz")
    lab = load_volume(ts_dir / "example_seg_fast_force_split.nii.gz", kind="labels")
    real = Volume(np.ascontiguousarray(ct.array[:, :, BLOCK[0]:BLOCK[1]]), ct.affine @ shift)
    out = {"real": save_volume(real, d / "real" / "A.nii.gz"),
           "labels": save_volume(Volume(np.ascontiguousarray(lab.array[:, :, BLOCK[0]:BLOCK[1]]), ct.affine @ shift),
                                 d / "labels" / "A.nii.gz"),
           "dark": save_volume(real.like(real.array - 600.0), d / "dark" / "A.nii.gz")}
    return out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_real_ct_scored_as_an_output_matches_the_segmenter_on_real_images_and_a_dark_copy_fails_the_organ_check(
        block, tmp_path, capsys, monkeypatch):
    """Consistency and sensitivity: the real CT given as an 'output' gets exactly the Dice of the segmenter on the real
    image (same image, same labels), and passes the HU check; 600 HU darker, its organs leave their ranges and its
    Dice falls."""
    out = tmp_path / "rep"
    res = run_cli(["evaluate", "--unpaired", "--pred", f"real={block['real'].parent}", "--pred",
                   f"dark={block['dark'].parent}", "--labels", block["labels"].parent, "--ref", block["real"].parent,
                   "--ref-labels", block["labels"].parent, "--segmenter", "ct-seg-demo", "--out", out], capsys,
                  monkeypatch)
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "seg2med-unpaired-evaluation" and summary["modality"] == "ct"
    real, dark = summary["methods"]["real"], summary["methods"]["dark"]
    on_real = summary["real_image"]
    assert real["resegmentation"]["classes"] == on_real["classes"] >= 10
    assert real["resegmentation"]["dice"]["mean"] == pytest.approx(on_real["dice"]["mean"], abs=1e-9)
    assert on_real["classes_dice_above_0.8"] >= 3 >= on_real["classes_dice_above_0.9"]  # measured: 3 and 0
    assert dark["resegmentation"]["dice"]["mean"] < real["resegmentation"]["dice"]["mean"] - 0.1
    assert real["organs_failed"] <= 2 and real["organs_checked"] >= 10
    assert dark["organs_failed"] >= real["organs_checked"] // 2 and dark["subjects_passed"] == 0
    organs = {(r["method"], r["name"]): r for r in _rows(out / "organs.csv")}
    liver_real, liver_dark = float(organs[("real", "liver")]["median"]), float(organs[("dark", "liver")]["median"])
    assert 20 < liver_real < 120 and liver_dark == pytest.approx(liver_real - 600, abs=1)
    assert organs[("real", "liver")]["ok"] == "True" and organs[("dark", "liver")]["ok"] == "False"
    dice = _rows(out / "dice.csv")
    assert {r["method"] for r in dice} == {"real", "dark", "real image"}
    assert "body" not in {r["name"] for r in dice}  # seg2med's body / tissue classes are not scored
    # the distances: the real CT against itself is 0, the dark copy is far
    assert real["frechet_seg"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert dark["frechet_seg"]["value"] > 1.0
    assert summary["distribution_slices"]["reference"] == BLOCK[1] - BLOCK[0]
    assert "segmenter on real images" in (out / "report.html").read_text()
    assert "organs in HU range: " in res.out and "Dice" in res.out


def test_mr_needs_its_sequence_and_then_checks_the_tissue_order(ts_dir, tmp_path, capsys, monkeypatch):
    """Subject C's real MR as an 'output' (no sidecar): refused without --sequence, one line; with it, the organs'
    order of brightness is compared with the prior's: the ranks are in organs.csv, the inverted pairs counted."""
    base = ["evaluate", "--unpaired", "--pred", ts_dir / "example_mr_sm.nii.gz", "--labels",
            ts_dir / "example_seg_mr.nii.gz"]
    res = run_cli([*base, "--out", tmp_path / "a"], capsys, monkeypatch)
    assert res.code == 2 and res.err.count("\n") == 1 and "--sequence" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "a").exists()
    res = run_cli([*base, "--sequence", "vibe-in", "--out", tmp_path / "b"], capsys, monkeypatch)
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    e = summary["methods"]["example_mr_sm"]
    assert summary["modality"] == "mr" and e["organs_checked"] >= 10 and "inverted_pairs" in e
    rows = _rows(tmp_path / "b" / "organs.csv")
    assert all(r["expected_rank"] and r["rank"] for r in rows if r["ok"] in ("True", "False"))
    qc = _rows(tmp_path / "b" / "qc.csv")[0]
    assert qc["sequence"] == "vibe-in" and int(qc["inverted_pairs"]) == e["inverted_pairs"]["mean"]
    assert any("no segmenter" in n for n in summary["notes"])


def test_labels_of_another_scheme_are_brought_to_the_segmenters_through_the_crosswalk(ts_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    """Subject C's total_mr labels and a CT made from them (the CT prior: an MR -> CT conversion without the model):
    the CT segmenter (scheme total) is scored in total's classes, and the report says which crosswalk was used."""
    import seg2med

    lv = seg2med.build_anatomy(ts_dir / "example_seg_mr.nii.gz", image=ts_dir / "example_mr_sm.nii.gz", modality="mr")
    ct = seg2med.save_prior(seg2med.simulate_prior(lv, "ct"), tmp_path / "C_ct.nii.gz")
    res = run_cli(["evaluate", "--unpaired", "--pred", ct, "--labels", ts_dir / "example_seg_mr.nii.gz", "--segmenter",
                   "ct-seg-demo", "--out", tmp_path / "rep"], capsys, monkeypatch)
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert any("crosswalk total_mr -> total" in n for n in summary["notes"])
    from seg2med.labels import get_scheme

    total = get_scheme("total").classes
    dice = _rows(tmp_path / "rep" / "dice.csv")
    assert dice and all(total[r["name"]] == int(r["class"]) for r in dice)
    assert {"liver", "spleen"} <= {r["name"] for r in dice}
    assert summary["real_image"] is None and any("--ref-labels" in n for n in summary["notes"])


def test_unpaired_options_refuse_what_does_not_fit_on_one_line(block, ts_dir, tmp_path, capsys, monkeypatch):
    cases = [
        (["evaluate", "--unpaired", "--pred", block["real"], "--out", tmp_path / "o"], "--labels"),
        (["evaluate", "--pred", block["real"], "--out", tmp_path / "o"], "--ref is needed"),
        (["evaluate", "--pred", block["real"], "--ref", block["real"], "--ref-labels", block["labels"], "--out",
          tmp_path / "o"], "--ref-labels applies to --unpaired only"),
        (["evaluate", "--unpaired", "--pred", block["real"], "--labels", block["labels"], "--ref-labels",
          block["labels"], "--out", tmp_path / "o"], "--ref-labels needs --ref"),
        (["evaluate", "--unpaired", "--pred", block["real"], "--labels", block["labels"], "--sequence", "nope",
          "--out", tmp_path / "o"], "nope"),
        (["evaluate", "--unpaired", "--pred", ts_dir / "example_mr_sm.nii.gz", "--labels",
          ts_dir / "example_seg_mr.nii.gz", "--sequence", "vibe-in", "--segmenter", "ct-seg-demo", "--out",
          tmp_path / "o"], "trained on CT images, but the outputs are MR"),
        (["evaluate", "--unpaired", "--pred", block["real"], "--labels", ts_dir / "example_seg.nii.gz", "--out",
          tmp_path / "o"], "grid"),
    ]
    for args, expected in cases:
        res = run_cli(args, capsys, monkeypatch)
        assert res.code != 0 and expected in res.err, (args, res.err)
        assert "Traceback" not in res.err and [ln for ln in res.err.splitlines() if ln.startswith("error:")]
        assert not (tmp_path / "o").exists()
    assert nib.load(block["real"]).shape[2] == BLOCK[1] - BLOCK[0]  # inputs untouched


def test_fid_to_the_reference_set_with_local_inception_weights_is_zero_for_the_real_ct_and_grows_when_it_is_darker(
        block, random_inception_weights, tmp_path, capsys, monkeypatch):
    """`--fid-weights FILE` (here a randomly initialised Inception-v3 of the supported layout: nothing is downloaded)
    adds FID to the reference set beside the per-organ check; the real CT against itself is 0, the dark copy is not."""
    from seg2med.metrics._thirdparty import import_bare

    def no_download(*args, **kwargs):
        raise AssertionError("FID tried to download weights")

    monkeypatch.setattr(import_bare("torch_fidelity", "feature_extractor_inceptionv3"), "load_state_dict_from_url",
                        no_download)
    out = tmp_path / "rep"
    res = run_cli(["evaluate", "--unpaired", "--pred", f"real={block['real'].parent}", "--pred",
                   f"dark={block['dark'].parent}", "--labels", block["labels"].parent, "--ref", block["real"].parent,
                   "--ref-labels", block["labels"].parent, "--fid-weights", random_inception_weights, "--out", out],
                  capsys, monkeypatch)
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    real, dark = summary["methods"]["real"], summary["methods"]["dark"]
    assert real["fid"]["value"] == pytest.approx(0.0, abs=1e-3)
    assert dark["fid"]["value"] > 1.0
    assert "frechet_seg" not in real or real["frechet_seg"] is None  # no own segmenter given: no Fréchet-Seg
    assert not any("FID not computed" in n for n in summary["notes"])
    assert summary["distribution_slices"]["reference"] == BLOCK[1] - BLOCK[0]

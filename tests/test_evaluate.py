"""`seg2med evaluate`: per-subject CSV, summary JSON with statistics, HTML report with real figures; clean errors."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

import seg2med
from cli_helpers import run_cli
from seg2med.evaluation import collect_cases, evaluate_cases
from seg2med.metrics import ssim

Z_BLOCKS = [(40, 46), (58, 64), (70, 76)]  # three "subjects": slabs of subject A


def _save(arr, affine, path):
    nib.save(nib.Nifti1Image(np.asarray(arr), affine), str(path))
    return path


@pytest.fixture(scope="module")
def ct_cases(ts_dir, tmp_path_factory):
    """Real CT slabs as references; 'good' = slightly blurred, 'bad' = blurred + noise; labels and priors beside."""
    root = tmp_path_factory.mktemp("eval")
    ct = nib.load(str(ts_dir / "example_ct.nii.gz"))
    seg = nib.load(str(ts_dir / "example_seg_fast_force_split.nii.gz"))
    arr, lab = np.asarray(ct.dataobj, np.float32), np.asarray(seg.dataobj, np.int16)
    rng = np.random.default_rng(0)
    dirs = {k: root / k for k in ("ref", "good", "bad", "labels", "prior")}
    for d in dirs.values():
        d.mkdir()
    for i, (z0, z1) in enumerate(Z_BLOCKS):
        aff = ct.affine.copy()
        aff[:3, 3] += ct.affine[:3, 2] * z0
        ref = arr[:, :, z0:z1]
        name = f"s{i}.nii.gz"
        _save(ref, aff, dirs["ref"] / name)
        _save(lab[:, :, z0:z1], aff, dirs["labels"] / name)
        _save(ndimage.gaussian_filter(ref, (0.7, 0.7, 0)), aff, dirs["good"] / name)
        bad = ndimage.gaussian_filter(ref, (2.0, 2.0, 0)) + rng.normal(0, 80, ref.shape)
        _save(bad.astype(np.float32), aff, dirs["bad"] / name)
        _save(np.where(lab[:, :, z0:z1] > 0, 40.0, -1000.0).astype(np.float32), aff, dirs["prior"] / name)
    return dirs


def test_evaluate_writes_csv_summary_and_html_with_real_figures(ct_cases, tmp_path):
    d = ct_cases
    out = tmp_path / "report"
    written = seg2med.api.evaluate([f"ddpm={d['good']}", f"unet={d['bad']}"], d["ref"], out, labels=d["labels"],
                                   prior=d["prior"])
    rows = list(csv.DictReader(open(written["csv"])))
    assert len(rows) == 2 * len(Z_BLOCKS)
    assert {r["method"] for r in rows} == {"ddpm", "unet"}
    for col in ("ssim", "ms_ssim", "psnr", "mae", "mae_hu", "histcc", "fsim"):
        assert col in rows[0]
    # every subject: the better prediction wins on every metric
    for s in {r["subject"] for r in rows}:
        good = next(r for r in rows if r["subject"] == s and r["method"] == "ddpm")
        bad = next(r for r in rows if r["subject"] == s and r["method"] == "unet")
        for m in ("ssim", "ms_ssim", "psnr", "histcc", "fsim"):
            assert float(good[m]) > float(bad[m]), (s, m)
        assert float(good["mae_hu"]) < float(bad["mae_hu"])
    summary = json.loads(written["summary"].read_text())
    assert summary["reference_method"] == "ddpm" and summary["subjects"] == 3 and summary["modality"] == "ct"
    ssim_good = [float(r["ssim"]) for r in rows if r["method"] == "ddpm"]
    ssim_bad = [float(r["ssim"]) for r in rows if r["method"] == "unet"]
    entry = summary["methods"]["unet"]["ssim"]
    assert entry["mean"] == pytest.approx(np.mean(ssim_bad)) and entry["sd"] == pytest.approx(np.std(ssim_bad, ddof=1))
    assert entry["p_vs_ddpm"] == pytest.approx(stats.mannwhitneyu(ssim_bad, ssim_good, alternative="two-sided").pvalue)
    page = written["html"].read_text()
    for fig in ("boxplots", "histograms", "qualitative"):
        path = out / summary["figures"][fig]
        assert f'src="{summary["figures"][fig]}"' in page
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.05
    assert "FID not computed" in page  # honest about what was not measured


def test_ssim_on_the_qualitative_panel_is_the_slice_ssim_in_the_body(ct_cases):
    d = ct_cases
    cases = collect_cases({"ddpm": d["good"]}, d["ref"], labels=d["labels"])
    ev = evaluate_cases(cases[:1])
    p = ev.panels[0]
    ref = np.asarray(nib.load(str(cases[0].reference)).dataobj, np.float64)[:, :, p["slice"]]
    good = np.asarray(nib.load(str(cases[0].predictions["ddpm"])).dataobj, np.float64)[:, :, p["slice"]]
    to01 = lambda a: np.clip((a + 1000) / 2000, 0, 1)  # noqa: E731
    expected = ssim(to01(good), to01(ref), 1.0, mask=p["mask"])
    assert p["methods"]["ddpm"]["ssim"] == pytest.approx(expected, abs=1e-9)


def test_single_files_and_mr_normalisation(ct_cases, tmp_path):
    """MR-like data (no HU): each volume is scaled by its own percentiles, so a global gain changes nothing."""
    d = ct_cases
    ref = nib.load(str(d["ref"] / "s0.nii.gz"))
    mr = np.clip(np.asarray(ref.dataobj, np.float32) + 1024, 0, None)
    r = _save(mr, ref.affine, tmp_path / "mr_ref.nii.gz")
    p = _save(mr * 3.0, ref.affine, tmp_path / "mr_pred.nii.gz")
    written = seg2med.api.evaluate(p, r, tmp_path / "rep", modality="mr", labels=d["labels"] / "s0.nii.gz")
    row = next(csv.DictReader(open(written["csv"])))
    assert float(row["ssim"]) == pytest.approx(1.0, abs=1e-6) and float(row["mae"]) == pytest.approx(0.0, abs=1e-6)
    assert "mae_hu" not in row


def test_cli_evaluate_and_bad_inputs(ct_cases, tmp_path, capsys, monkeypatch):
    d = ct_cases
    res = run_cli(["evaluate", "--pred", d["good"], "--ref", d["ref"], "--out", tmp_path / "r1"], capsys, monkeypatch)
    assert res.code == 0 and (tmp_path / "r1" / "report.html").is_file()
    # the same output again without --overwrite: refused, nothing changed
    before = (tmp_path / "r1" / "per_subject.csv").read_bytes()
    res = run_cli(["evaluate", "--pred", d["good"], "--ref", d["ref"], "--out", tmp_path / "r1"], capsys, monkeypatch)
    assert res.code != 0 and "--overwrite" in res.err and (tmp_path / "r1" / "per_subject.csv").read_bytes() == before
    # prediction on another grid
    ref = nib.load(str(d["ref"] / "s0.nii.gz"))
    shifted = ref.affine.copy()
    shifted[0, 3] += 3.0
    other = _save(np.asarray(ref.dataobj), shifted, tmp_path / "s0.nii.gz")
    res = run_cli(["evaluate", "--pred", other, "--ref", d["ref"] / "s0.nii.gz", "--out", tmp_path / "r2"], capsys, monkeypatch)
    assert res.code != 0 and "different voxel grids" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "r2").exists()
    # empty prediction folder
    (tmp_path / "empty").mkdir()
    res = run_cli(["evaluate", "--pred", tmp_path / "empty", "--ref", d["ref"], "--out", tmp_path / "r3"], capsys, monkeypatch)
    assert res.code != 0 and "empty" in res.err and "NIfTI" in res.err and "Traceback" not in res.err
    # FID weights that do not exist: refused before any work, nothing downloaded
    res = run_cli(["evaluate", "--pred", d["good"], "--ref", d["ref"], "--out", tmp_path / "r4", "--fid-weights",
                   tmp_path / "inception.pth"], capsys, monkeypatch)
    assert res.code != 0 and "inception.pth" in res.err and "FID" in res.err
    assert not (tmp_path / "r4").exists()
    # a subject without reference
    (tmp_path / "preds").mkdir()
    _save(np.asarray(ref.dataobj), ref.affine, tmp_path / "preds" / "nobody.nii.gz")
    res = run_cli(["evaluate", "--pred", tmp_path / "preds", "--ref", d["ref"], "--out", tmp_path / "r5"], capsys, monkeypatch)
    assert res.code != 0 and "nobody" in res.err


def test_totalsegmentator_is_used_only_when_installed_with_weights(ct_cases, tmp_path, monkeypatch, capsys):
    d = ct_cases
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no TotalSegmentator anywhere
    res = run_cli(["evaluate", "--pred", d["good"], "--ref", d["ref"], "--labels", d["labels"], "--out", tmp_path / "r0",
                   "--segmenter", "totalsegmentator"], capsys, monkeypatch)
    assert res.code != 0 and "TotalSegmentator is not installed" in res.err and not (tmp_path / "r0").exists()
    # a stand-in TotalSegmentator command: labels = 5 (liver) where the image is tissue; weights folder present
    import sys

    (tmp_path / "bin").mkdir()
    exe = tmp_path / "bin" / "TotalSegmentator"
    exe.write_text(f"""#!{sys.executable}
import sys, os, nibabel as nib, numpy as np
a = sys.argv
img = nib.load(a[a.index('-i') + 1])
assert '--ml' in a and a[a.index('--task') + 1] == 'total' and os.environ['TOTALSEG_HOME_DIR']
nib.save(nib.Nifti1Image((np.asarray(img.dataobj) > -200).astype(np.int16) * 5, img.affine), a[a.index('-o') + 1])
""")
    exe.chmod(0o755)
    home = tmp_path / "tshome"
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    res = run_cli(["evaluate", "--pred", d["good"], "--ref", d["ref"], "--labels", d["labels"], "--out", tmp_path / "r1",
                   "--segmenter", "totalsegmentator"], capsys, monkeypatch)
    assert res.code != 0 and "no TotalSegmentator weights" in res.err  # never a download
    (home / "nnunet" / "results" / "Dataset291_TotalSegmentator_part1_organs_1559subj").mkdir(parents=True)
    written = seg2med.api.evaluate(f"ddpm={d['good']}", d["ref"], tmp_path / "r2", labels=d["labels"], segmenter="totalsegmentator")
    rows = list(csv.DictReader(open(tmp_path / "r2" / "dice.csv")))
    liver = [r for r in rows if r["class"] == "5"]
    with_liver = {r["subject"] for r in liver}  # classes are scored where the input labels hold them
    assert {r["method"] for r in liver} == {"ddpm", "real image"} and with_liver and len(liver) == 2 * len(with_liver)
    assert all(0.0 < float(r["dice"]) < 1.0 for r in liver)  # tissue mask vs liver label: partial overlap
    assert json.loads(written["summary"].read_text())["methods"]["ddpm"]["dice_mean"]["n"] == len(Z_BLOCKS)

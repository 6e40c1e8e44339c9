"""Through-plane quality (issue #14): coronal / sagittal SSIM and the roughness ratio across and within slices."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import seg2med
from cli_helpers import run_cli
from seg2med.evaluation.core import (
    INTENSITY_METRICS,
    METRIC_GOALS,
    EvalOptions,
    _metrics_that_fit,
    goal_text,
    intensity_metrics,
)
from seg2med.metrics.image import PLANE_AXES, SSIM_MIN_SIDE, roughness_ratio, ssim, ssim_plane_shape


# --------------------------------------------------------------------------- roughness_ratio
def _ramps(shape=(12, 10, 8), sx=1.0, sz=1.0):
    x, _, z = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return sx * x + sz * z


def test_roughness_ratio_is_exactly_one_for_identical_volumes():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(9, 8, 7))
    assert roughness_ratio(ref, ref.copy(), axis=2) == 1.0
    assert roughness_ratio(ref, ref.copy(), mask=ref > 0, axis=0) == 1.0


def test_roughness_ratio_of_a_ramp_of_twice_the_slope_is_four():
    ref = _ramps(sx=0.0, sz=1.0)  # a linear ramp along z
    assert roughness_ratio(2 * ref, ref, axis=2) == pytest.approx(4.0, rel=1e-12)
    assert roughness_ratio(2 * ref + 7.0, ref, axis=-1) == pytest.approx(4.0, rel=1e-12)  # an offset changes nothing


def test_roughness_ratio_follows_the_axis():
    ref = _ramps(sx=1.0, sz=1.0)
    pred = _ramps(sx=1.0, sz=3.0)  # three times steeper across slices, the same in-plane
    assert roughness_ratio(pred, ref, axis=2) == pytest.approx(9.0, rel=1e-12)
    assert roughness_ratio(pred, ref, axis=0) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="constant along it"):  # ref is flat along y: undefined, not 0 or inf
        roughness_ratio(pred, ref, axis=1)
    with pytest.raises(ValueError, match="out of range"):
        roughness_ratio(pred, ref, axis=3)


def test_roughness_ratio_counts_only_pairs_with_both_voxels_in_the_mask():
    ref = _ramps(sx=0.0, sz=1.0)
    pred = ref.copy()
    pred[:, :, 5:] += 100.0  # a jump between slices 4 and 5
    mask = np.zeros(ref.shape, bool)
    mask[:, :, :5] = True  # slice 5 outside: the jump's pair is not counted
    assert roughness_ratio(pred, ref, mask, axis=2) == pytest.approx(1.0)
    mask[:, :, 5] = True
    assert roughness_ratio(pred, ref, mask, axis=2) == pytest.approx((4 * 1 + 101**2) / 5)
    one = np.zeros(ref.shape, bool)
    one[:, :, 3] = True
    with pytest.raises(ValueError, match="no pair of neighbouring voxels"):
        roughness_ratio(pred, ref, one, axis=2)
    with pytest.raises(ValueError, match="constant"):
        roughness_ratio(pred, ref, one, axis=0)


def test_per_slice_noise_is_rough_across_slices_and_not_in_plane():
    rng = np.random.default_rng(1)
    ref = ndimage.gaussian_filter(rng.normal(size=(32, 32, 16)), 2.0)
    flicker = ref + rng.normal(0, ref.std(), (1, 1, 16))  # one offset per axial slice: streaks across slices
    assert roughness_ratio(flicker, ref, axis=2) > 1.5
    assert roughness_ratio(flicker, ref, axis=0) == pytest.approx(1.0, abs=1e-9)
    assert roughness_ratio(flicker, ref, axis=1) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- SSIM planes
def test_ssim_planes_and_a_clear_refusal_for_thin_volumes():
    assert PLANE_AXES == {"sagittal": 0, "coronal": 1, "axial": 2} and SSIM_MIN_SIDE == 11
    assert ssim_plane_shape((40, 30, 14), 1) == (40, 14) and ssim_plane_shape((40, 30, 14), 0) == (30, 14)
    rng = np.random.default_rng(2)
    a = rng.random((24, 20, 12))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    # axis 1: the (x, z) planes, the same as SSIM of the transposed volume's axial planes
    assert ssim(b, a, 1.0, axis=1) == pytest.approx(ssim(b.transpose(0, 2, 1), a.transpose(0, 2, 1), 1.0, axis=2))
    assert ssim(a, a, 1.0, mask=a > 0.5, axis=0) == pytest.approx(1.0)
    thin = a[:, :, :6]
    with pytest.raises(ValueError, match="smaller than its 11 x 11 Gaussian window"):
        ssim(thin, thin, 1.0, axis=1)


def test_registry_names_the_new_metrics_with_honest_goals():
    for name in ("ssim_coronal", "ssim_sagittal", "roughness_z", "roughness_xy"):
        assert name in INTENSITY_METRICS and name in EvalOptions().metrics  # in the default set: cheap
    assert goal_text("ssim_coronal") == "higher" and goal_text("mae") == "lower"
    assert goal_text("roughness_z") == goal_text("roughness_xy") == "closer to 1"
    assert METRIC_GOALS["roughness_z"] == 1.0 and METRIC_GOALS["fid"] == "lower"


def test_metrics_that_do_not_fit_are_skipped_with_a_note():
    shape = (64, 64, 6)
    ref01 = np.random.default_rng(3).random(shape)
    mask = np.ones(shape, bool)
    computed, skipped, notes = _metrics_that_fit(tuple(INTENSITY_METRICS), shape, ref01, mask)
    assert {"ssim_coronal", "ssim_sagittal", "ms_ssim"} <= set(skipped)
    assert "roughness_z" in computed and "ssim" in computed
    assert any(n.startswith("ssim_coronal not computed (NaN): its planes (along voxel axis 1) are 64 x 6 px") for n in notes)
    one = np.zeros(shape, bool)
    one[:, :, 2] = True
    _, skipped, notes = _metrics_that_fit(["roughness_z", "roughness_xy"], shape, ref01, one)
    assert skipped == ["roughness_z"] and "no pair of neighbouring voxels" in notes[0]


def test_intensity_metrics_on_identical_and_streaked_volumes():
    rng = np.random.default_rng(4)
    ref = np.clip(0.5 + ndimage.gaussian_filter(rng.normal(size=(32, 32, 16)), 2.0), 0, 1)
    mask = np.ones(ref.shape, bool)
    names = ["ssim", "ssim_coronal", "ssim_sagittal", "roughness_z", "roughness_xy"]
    same = intensity_metrics(ref, ref.copy(), mask, names)
    assert same == pytest.approx({n: 1.0 for n in names})
    streaked = np.clip(ref + rng.normal(0, 0.05, (1, 1, 16)), 0, 1)
    m = intensity_metrics(streaked, ref, mask, names)
    assert m["roughness_z"] > 1.2 and m["roughness_xy"] == pytest.approx(1.0, abs=0.05)
    assert m["ssim_coronal"] < m["ssim"] and m["ssim_sagittal"] < m["ssim"]  # the streaks are through-plane


# --------------------------------------------------------------------------- evaluate API / CLI / report
def _phantom(shape=(48, 44, 16)) -> np.ndarray:
    """A smooth CT-like body (HU): an ellipse of soft tissue with a brighter organ, air outside."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1
    organ = (x - 0.2) ** 2 + y**2 + (z / 2) ** 2 < 0.15
    hu = np.where(body, 40.0, -1000.0) + np.where(organ, 60.0, 0.0) + np.where(body, 30 * x * z, 0.0)
    return ndimage.gaussian_filter(hu, (1.0, 1.0, 1.5)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("throughplane")
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    ref = _phantom()
    streaked = ref + np.random.default_rng(5).normal(0, 25.0, (1, 1, ref.shape[2])).astype(np.float32)
    paths = {}
    for name, arr in (("ref", ref), ("same", ref.copy()), ("streaked", streaked)):
        (d / name).mkdir()
        paths[name] = d / name / "s0.nii.gz"
        nib.save(nib.Nifti1Image(arr, aff), str(paths[name]))
    return paths


def test_evaluate_writes_through_plane_metrics_and_figure(synthetic_pair, tmp_path):
    p = synthetic_pair
    out = tmp_path / "rep"
    written = seg2med.api.evaluate({"same": p["same"], "streaked": p["streaked"]}, p["ref"], out)
    rows = {r["method"]: r for r in csv.DictReader(open(written["csv"]))}
    for col in ("ssim_coronal", "ssim_sagittal", "roughness_z", "roughness_xy"):
        assert col in rows["same"]
    same, streaked = rows["same"], rows["streaked"]
    assert float(same["ssim_coronal"]) == pytest.approx(1.0) and float(same["ssim_sagittal"]) == pytest.approx(1.0)
    assert float(same["roughness_z"]) == pytest.approx(1.0) and float(same["roughness_xy"]) == pytest.approx(1.0)
    assert float(streaked["roughness_z"]) > 1.2
    assert float(streaked["roughness_xy"]) == pytest.approx(1.0, abs=1e-6)  # one offset per slice: in-plane intact
    assert float(streaked["ssim_coronal"]) < float(streaked["ssim"])
    summary = json.loads(written["summary"].read_text())
    entry = summary["methods"]["streaked"]["roughness_z"]
    assert entry["mean"] == pytest.approx(float(streaked["roughness_z"])) and entry["n"] == 1
    assert summary["better"]["roughness_z"] == "closer to 1" and summary["better"]["ssim_coronal"] == "higher"
    page = written["html"].read_text()
    assert summary["figures"]["through_plane"] == "figures/through_plane.png"
    assert 'src="figures/through_plane.png"' in page and "roughness z (closer to 1)" in page
    img = mpimg.imread(out / "figures" / "through_plane.png")
    assert img.shape[0] > 300 and img.shape[1] > 300 and img[..., :3].std() > 0.05


def test_evaluate_cli_skips_coronal_ssim_on_a_thin_volume_with_a_note(synthetic_pair, tmp_path, capsys, monkeypatch):
    p = synthetic_pair
    ref = nib.load(str(p["ref"]))
    thin_ref, thin_pred = tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(ref.dataobj)[:, :, 4:10], ref.affine), str(thin_ref))
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(p["streaked"])).dataobj)[:, :, 4:10], ref.affine), str(thin_pred))
    res = run_cli(["evaluate", "--pred", thin_pred, "--ref", thin_ref, "--out", tmp_path / "rep"], capsys, monkeypatch)
    assert res.code == 0, res.err
    row = next(csv.DictReader(open(tmp_path / "rep" / "per_subject.csv")))
    assert row["ssim_coronal"] == "nan" and row["ssim_sagittal"] == "nan"
    assert float(row["roughness_z"]) > 1.2 and float(row["ssim"]) > 0.5
    notes = json.loads((tmp_path / "rep" / "summary.json").read_text())["notes"]
    assert any(n.startswith("ssim_coronal not computed (NaN): its planes (along voxel axis 1) are 48 x 6 px") for n in notes)


def test_evaluate_notes_when_the_voxel_axes_are_not_ras_ordered(synthetic_pair, tmp_path):
    p = synthetic_pair
    arr = np.asarray(nib.load(str(p["ref"])).dataobj)
    perm = np.array([[0, 0, 3.0, 0], [1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])  # voxel axes (A, S, R)
    for name in ("r", "q"):
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(arr, perm), str(tmp_path / name / "s0.nii.gz"))
    written = seg2med.api.evaluate(tmp_path / "q", tmp_path / "r", tmp_path / "rep")
    notes = json.loads(written["summary"].read_text())["notes"]
    assert any("not closest-RAS order" in n and "ssim_coronal" in n for n in notes), notes


# --------------------------------------------------------------------------- real data
def test_real_ct_per_slice_noise_is_rougher_across_slices_than_the_same_noise_smoothed_along_z(ts_dir):
    ct = np.asarray(nib.load(str(ts_dir / "example_ct.nii.gz")).dataobj, np.float64)[:, :, 58:72]  # subject A's test block
    body = ct > -500
    to01 = lambda a: np.clip((a + 1000) / 2000, 0, 1)  # noqa: E731
    ref01 = to01(ct)
    noise = np.random.default_rng(0).normal(0, 40.0, ct.shape)  # independent in every voxel: new in every slice
    smooth = ndimage.gaussian_filter1d(noise, 2.0, axis=2)
    smooth *= noise.std() / smooth.std()  # the same amplitude, correlated across slices
    noisy01, smooth01 = to01(ct + noise), to01(ct + smooth)
    rz_noisy, rz_smooth = roughness_ratio(noisy01, ref01, body, 2), roughness_ratio(smooth01, ref01, body, 2)
    rx_noisy, rx_smooth = roughness_ratio(noisy01, ref01, body, 0), roughness_ratio(smooth01, ref01, body, 0)
    # independent noise of sd s adds 2 s^2 to every mean squared neighbour difference (s = 40 HU = 0.02 in [0, 1])
    pairs = body[:, :, :-1] & body[:, :, 1:]
    ref_term = np.mean(np.diff(ref01, axis=2)[pairs] ** 2)
    assert rz_noisy == pytest.approx(1 + 2 * 0.02**2 / ref_term, rel=0.02) and rz_noisy > 2.0
    assert rz_smooth == pytest.approx(1.0, abs=0.1) and rz_noisy > 1.8 * rz_smooth
    assert rx_noisy == pytest.approx(rx_smooth, rel=0.02) and rx_noisy > 1.5  # the same in-plane noise either way
    assert ssim(smooth01, ref01, 1.0, body, axis=1) > ssim(noisy01, ref01, 1.0, body, axis=1)

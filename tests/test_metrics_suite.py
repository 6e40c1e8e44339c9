"""Metrics suite: MS-SSIM, HistCC, FSIM, Fréchet distance / FID, Dice / HD95, statistics, accumulator.

Image metrics run on real CT slices of the shared example data (122 x 101 px,
windowed to [0, 1]); FID uses a weights file made from torch-fidelity's own
randomly initialised Inception-v3 (nothing is downloaded).
"""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import pytest
import torch
from monai.metrics import compute_ms_ssim
from scipy import ndimage, stats

from seg2med.errors import InputError
from seg2med.io import load_volume
from seg2med.metrics import (
    FID_WEIGHTS_ENV,
    MetricAccumulator,
    count_valid,
    dice_per_class,
    feature_statistics,
    fid,
    frechet_distance,
    frechet_from_features,
    fsim,
    hd95_per_class,
    histcc,
    inception_features,
    mann_whitney,
    mean_sd,
    ms_ssim,
    ms_ssim_min_size,
    per_subject_means,
)
from seg2med.metrics._thirdparty import import_bare

SMALL = {"kernel_size": 5, "kernel_sigma": 0.8}  # MS-SSIM window that fits 5 scales on 101-px slices


@pytest.fixture(scope="module")
def ct01(ts_dir) -> np.ndarray:
    """Real CT volume windowed to [-1000, 1000] HU and scaled to [0, 1] (122 x 101 x 30)."""
    ct = load_volume(ts_dir / "example_ct_sm.nii.gz").array
    return np.clip((ct.astype(np.float64) + 1000.0) / 2000.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def ct_slice(ct01) -> np.ndarray:
    return ct01[:, :, 15]


# --------------------------------------------------------------------------- MS-SSIM


def test_ms_ssim_is_one_for_identical_and_decreases_with_blur(ct_slice):
    assert ms_ssim(ct_slice, ct_slice, 1.0, **SMALL) == pytest.approx(1.0, abs=1e-6)
    values = [ms_ssim(ndimage.gaussian_filter(ct_slice, s), ct_slice, 1.0, **SMALL) for s in (0.5, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert values[-1] < 0.95


def test_ms_ssim_3d_is_the_mean_of_monai_per_slice_values(ct01):
    vol = ct01[:, :, :4]
    blurred = ndimage.gaussian_filter(vol, (1.0, 1.0, 0))
    per_slice = [
        float(compute_ms_ssim(torch.from_numpy(blurred[None, None, :, :, k]), torch.from_numpy(vol[None, None, :, :, k]),
                              spatial_dims=2, data_range=1.0, **SMALL))
        for k in range(vol.shape[2])
    ]
    assert ms_ssim(blurred, vol, 1.0, **SMALL) == pytest.approx(np.mean(per_slice), abs=1e-6)
    assert ms_ssim(blurred[:, :, 0], vol[:, :, 0], 1.0, **SMALL) == pytest.approx(per_slice[0], abs=1e-6)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_ms_ssim_agrees_with_piq_on_a_real_ct_slice(ct_slice, sigma):
    """An independent implementation (piq.multi_scale_ssim, same weights and window) within 1e-2.

    The two differ in small details of padding / downsampling (measured: 1e-3 at sigma 0.7, 6e-3 at 3.0).
    """
    piq_ms = import_bare("piq", "ms_ssim")
    blurred = ndimage.gaussian_filter(ct_slice, sigma)
    ours = ms_ssim(blurred, ct_slice, 1.0, kernel_size=5, kernel_sigma=0.8)
    ref = piq_ms.multi_scale_ssim(torch.tensor(blurred)[None, None], torch.tensor(ct_slice)[None, None], data_range=1.0,
                                  kernel_size=5, kernel_sigma=0.8).item()
    assert ours == pytest.approx(ref, abs=1e-2)


def test_ms_ssim_too_small_slices_name_the_limit_and_small_kernels_fit():
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((128, 128)), 2)
    assert ms_ssim_min_size() == 176
    with pytest.raises(ValueError, match=r"at least 176 px.*kernel_size <= 8"):
        ms_ssim(a, a, 1.0)
    assert ms_ssim(a, a, 1.0, kernel_size=7, kernel_sigma=1.0) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(a, a, 1.0, weights=(0.3, 0.3, 0.4)) == pytest.approx(1.0, abs=1e-6)  # 3 scales, 11-px window
    with pytest.raises(ValueError, match="differ in shape"):
        ms_ssim(a, a[:100], 1.0, kernel_size=3)


def test_masked_ms_ssim_ignores_differences_outside_the_mask(ct_slice):
    rng = np.random.default_rng(1)
    body = ct_slice > 0.3
    body_box = np.zeros_like(body)
    body_box[20:100, 15:90] = body[20:100, 15:90]
    pred = ndimage.gaussian_filter(ct_slice, 1.0)
    outside_noise = np.where(body_box, pred, np.clip(pred + rng.normal(0, 0.2, pred.shape), 0, 1))
    masked = ms_ssim(pred, ct_slice, 1.0, mask=body_box, **SMALL)
    assert ms_ssim(outside_noise, ct_slice, 1.0, mask=body_box, **SMALL) == pytest.approx(masked, abs=1e-7)
    assert ms_ssim(outside_noise, ct_slice, 1.0, **SMALL) < masked < 1.0
    with pytest.raises(ValueError, match="mask is empty"):
        ms_ssim(pred, ct_slice, 1.0, mask=np.zeros_like(body), **SMALL)


# --------------------------------------------------------------------------- HistCC


def test_histcc_is_pearson_of_the_histograms(ct_slice):
    rng = np.random.default_rng(2)
    assert histcc(ct_slice, ct_slice) == pytest.approx(1.0)
    shuffled = rng.permutation(ct_slice.ravel()).reshape(ct_slice.shape)  # same histogram, other image
    assert histcc(shuffled, ct_slice) == pytest.approx(1.0)
    noisy = np.clip(ct_slice + rng.normal(0, 0.05, ct_slice.shape), 0, 1)
    body = ct_slice > 0.3
    ha = np.histogram(noisy[body], bins=64, range=(0, 1))[0]
    hb = np.histogram(ct_slice[body], bins=64, range=(0, 1))[0]
    expected = np.corrcoef(ha, hb)[0, 1]
    assert histcc(noisy, ct_slice, mask=body, bins=64, value_range=(0, 1)) == pytest.approx(expected, abs=1e-12)
    assert histcc(noisy[body], ct_slice[body], bins=64, value_range=(0, 1)) == pytest.approx(expected, abs=1e-12)  # 1-D
    assert histcc(noisy, ct_slice) < histcc(ct_slice * 0.999, ct_slice, value_range=(0, 1), bins=32) <= 1.0


# --------------------------------------------------------------------------- FSIM


def test_fsim_loader_does_not_need_torchvision():
    fs = import_bare("piq", "fsim")
    tfi = import_bare("torch_fidelity", "feature_extractor_inceptionv3")
    assert callable(fs.fsim) and hasattr(tfi, "FeatureExtractorInceptionV3")
    assert getattr(sys.modules["piq"], "__seg2med_bare__", False)
    assert getattr(sys.modules["torch_fidelity"], "__seg2med_bare__", False)
    assert "torchvision" not in sys.modules
    with pytest.raises(ImportError, match="pip install"):
        import_bare("seg2med_no_such_package", "mod")


def test_fsim_one_for_identical_and_strictly_decreasing_with_blur_and_noise(ct_slice):
    assert fsim(ct_slice, ct_slice, 1.0) == pytest.approx(1.0, abs=1e-9)
    blur = [fsim(ndimage.gaussian_filter(ct_slice, s), ct_slice, 1.0) for s in (0.5, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in itertools.pairwise(blur)), blur
    rng = np.random.default_rng(3)
    noise = [fsim(np.clip(ct_slice + rng.normal(0, s, ct_slice.shape), 0, 1), ct_slice, 1.0) for s in (0.01, 0.03, 0.1)]
    assert all(a > b for a, b in itertools.pairwise(noise)), noise
    assert 1.0 > blur[0] and noise[-1] < 0.8


def test_fsim_equals_piq_on_a_fixed_pair_and_with_an_all_true_mask(ct_slice):
    fs = import_bare("piq", "fsim")
    pred = ndimage.gaussian_filter(ct_slice, 1.0)
    ref_value = float(fs.fsim(torch.tensor(pred, dtype=torch.float32)[None, None],
                              torch.tensor(ct_slice, dtype=torch.float32)[None, None], data_range=1.0, chromatic=False))
    value = fsim(pred, ct_slice, 1.0)  # float64 through piq
    assert value == pytest.approx(ref_value, abs=1e-4)
    assert fsim(pred, ct_slice, 1.0, mask=np.ones(ct_slice.shape, bool)) == pytest.approx(value, abs=1e-12)
    # in [0, 255] units, as piq's constants are tuned for
    assert fsim(pred * 255, ct_slice * 255, 255.0) == pytest.approx(ref_value, abs=1e-4)


def test_masked_fsim_pools_with_phase_congruency_weights_inside_the_mask(ct_slice):
    fs = import_bare("piq", "fsim")
    from seg2med.metrics.similarity import _fsim_pooled

    pred = ndimage.gaussian_filter(ct_slice, 1.0)
    body = ct_slice > 0.3
    x = torch.tensor(pred)[None, None] * 255
    y = torch.tensor(ct_slice)[None, None] * 255
    num_all, den_all = _fsim_pooled(fs, x, y, torch.ones_like(x))
    num_in, den_in = _fsim_pooled(fs, x, y, torch.tensor(body, dtype=torch.float64)[None, None])
    num_out, den_out = _fsim_pooled(fs, x, y, torch.tensor(~body, dtype=torch.float64)[None, None])
    assert float(num_in + num_out) == pytest.approx(float(num_all)) and float(den_in + den_out) == pytest.approx(float(den_all))
    assert fsim(pred, ct_slice, 1.0, mask=body) == pytest.approx(float(num_in / den_in), abs=1e-12)


def test_fsim_3d_averages_slices_and_checks_range(ct01):
    vol = ct01[:, :, :3]
    pred = ndimage.gaussian_filter(vol, (1.0, 1.0, 0))
    per_slice = [fsim(pred[:, :, k], vol[:, :, k], 1.0) for k in range(3)]
    assert fsim(pred, vol, 1.0) == pytest.approx(np.mean(per_slice), abs=1e-12)
    with pytest.raises(ValueError, match=r"values in \[0, data_range"):
        fsim(vol * 2000 - 1000, vol * 2000 - 1000, 2000.0)


# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.5, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_non_diagonal_against_the_2x2_trace_formula():
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 0.5]])
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 0.0])
    # for a 2x2 matrix with positive eigenvalues: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    expected = 1.25 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, s1, np.zeros(3), np.eye(3))


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_frechet_distance_handles_singular_covariances():
    s = np.diag([1.0, 0.0, 0.0])
    assert np.isfinite(frechet_distance(np.zeros(3), s, np.zeros(3), s))
    assert frechet_distance(np.zeros(3), s, np.ones(3), s) == pytest.approx(3.0, abs=1e-5)


def test_feature_statistics_and_frechet_from_features_agree_with_the_formula():
    rng = np.random.default_rng(4)
    for n, d in ((6, 10), (60, 4)):  # fewer vectors than dimensions (SVD route) and more (sqrtm route)
        a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        b = rng.normal(0.5, 2.0, size=(n + 3, d))
        mu1, s1 = feature_statistics(a)
        assert np.allclose(mu1, a.mean(0)) and np.allclose(s1, np.cov(a, rowvar=False))
        mu2, s2 = feature_statistics(b)
        assert frechet_from_features(a, b) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
        assert frechet_from_features(a, a) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.ones((1, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_from_features(np.ones((3, 2)), np.ones((3, 4)))


# --------------------------------------------------------------------------- FID


def test_fid_without_weights_is_an_input_error(monkeypatch, tmp_path):
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    x = np.zeros((2, 16, 16))
    with pytest.raises(InputError, match=f"{FID_WEIGHTS_ENV}.*weights-inception-2015-12-05-6726825d.pth") as exc:
        fid(x, x)
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        fid(x, x, weights=tmp_path / "missing.pth")
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(tmp_path / "missing-too.pth"))
    with pytest.raises(InputError, match="missing-too.pth"):
        fid(x, x)
    bad = tmp_path / "bad.pth"
    torch.save({"some": torch.zeros(2)}, bad)
    with pytest.raises(InputError, match="not FID Inception-v3 weights"):
        fid(x, x, weights=bad)


def test_fid_with_local_weights(ct01, random_inception_weights, monkeypatch):
    mod = import_bare("torch_fidelity", "feature_extractor_inceptionv3")

    def no_download(*args, **kwargs):
        raise AssertionError("FID tried to download weights")

    monkeypatch.setattr(mod, "load_state_dict_from_url", no_download)
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(random_inception_weights))
    slices = np.moveaxis(ct01, 2, 0)
    x, y = slices[0:4], slices[20:24]
    feats = inception_features(x)
    assert feats.shape == (4, 2048) and np.isfinite(feats).all() and feats.std() > 1e-3
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(feats, rowvar=False)))
    d_xy = fid(x, y, weights=random_inception_weights)
    assert d_xy > 1e-3
    assert d_xy == pytest.approx(frechet_from_features(feats, inception_features(y)), rel=1e-9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid(x * 2, y)


# --------------------------------------------------------------------------- Dice / HD95


def _squares(k: int, size: int = 40, side: int = 16, ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((size,) * ndim, np.int16)
    pred = np.zeros_like(ref)
    box = (slice(10, 10 + side),) * ndim
    ref[box] = 3
    shifted = (slice(10 + k, 10 + k + side),) + box[1:]
    pred[shifted] = 3
    return pred, ref


@pytest.mark.parametrize("k", [1, 3, 5])
def test_dice_and_hd95_of_offset_squares(k):
    pred, ref = _squares(k)
    assert dice_per_class(pred, ref) == {3: pytest.approx((16 - k) / 16, abs=1e-6)}
    assert hd95_per_class(pred, ref, spacing=1.0) == {3: pytest.approx(k, abs=1e-5)}
    # offset along axis 0: only that axis' spacing matters
    assert hd95_per_class(pred, ref, spacing=(2.5, 0.7))[3] == pytest.approx(2.5 * k, abs=1e-5)


def test_dice_and_hd95_of_offset_cubes_in_3d():
    pred, ref = _squares(2, size=24, side=8, ndim=3)
    assert dice_per_class(pred, ref)[3] == pytest.approx(6 / 8, abs=1e-6)
    assert hd95_per_class(pred, ref, spacing=(1.5, 1.0, 1.0))[3] == pytest.approx(3.0, abs=1e-5)


def test_absent_classes():
    pred, ref = _squares(2)
    pred[0:3, 0:3] = 7  # only in the prediction
    ref[36:40, 36:40] = 9  # only in the reference
    d = dice_per_class(pred, ref, classes=[3, 5, 7, 9])
    h = hd95_per_class(pred, ref, spacing=1.0, classes=[3, 5, 7, 9])
    assert math.isnan(d[5]) and math.isnan(h[5])  # in neither
    assert d[7] == 0.0 and d[9] == 0.0 and h[7] == math.inf and h[9] == math.inf
    assert sorted(dice_per_class(pred, ref)) == [3, 7, 9]  # default: every label but background 0
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_class(pred, ref, spacing=(1.0, 1.0, 1.0))


def test_dice_matches_numpy_on_a_real_label_map(ts_dir):
    seg = load_volume(ts_dir / "example_seg.nii.gz", kind="labels").array.astype(np.int32)
    moved = np.zeros_like(seg)
    moved[1:] = seg[:-1]  # one voxel along axis 0 (3 mm)
    dice = dice_per_class(moved, seg)
    for c, v in dice.items():
        p, r = moved == c, seg == c
        expected = 2 * np.sum(p & r) / (p.sum() + r.sum()) if p.any() and r.any() else 0.0
        assert v == pytest.approx(expected, abs=1e-6)
    classes = [c for c in dice if (seg == c).sum() > 200][:3]
    hd = hd95_per_class(moved, seg, spacing=3.0, classes=classes)
    assert all(0 < v <= 3.0 + 1e-5 for v in hd.values()), hd


# --------------------------------------------------------------------------- statistics and accumulator


def test_mann_whitney_matches_scipy_and_a_hand_example():
    u, p = mann_whitney([1, 2, 3], [4, 5, 6])
    assert u == 0.0 and p == pytest.approx(0.1)  # exact: 2 * 1 / C(6, 3)
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 12), rng.normal(0.8, 1, 9)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided")
    res = mann_whitney(list(a) + [float("nan")], b)
    assert res.u == ref.statistic and res.p == pytest.approx(ref.pvalue, rel=1e-12)
    with pytest.raises(ValueError, match="both samples"):
        mann_whitney([float("nan")], [1.0])


def test_mean_sd_ignores_nan_and_per_subject_means():
    mean, sd = mean_sd([1.0, 2.0, 3.0, float("nan")])
    assert (mean, sd) == (2.0, 1.0) and count_valid([1.0, float("nan"), math.inf]) == 2
    m = mean_sd([4.0])
    assert m.mean == 4.0 and math.isnan(m.sd)
    assert all(math.isnan(v) for v in mean_sd([]))
    rows = [
        {"subject": "a", "method": "m", "ssim": 0.5, "mae": float("nan")},
        {"subject": "a", "method": "m", "ssim": 0.7, "mae": 10.0},
        {"subject": "b", "method": "m", "ssim": 0.9, "mae": float("nan")},
    ]
    out = per_subject_means(rows)
    assert out[0] == {"subject": "a", "method": "m", "ssim": pytest.approx(0.6), "mae": 10.0}
    assert out[1]["ssim"] == 0.9 and math.isnan(out[1]["mae"])


def test_metric_accumulator_tables_summary_and_pvalues():
    rng = np.random.default_rng(6)
    acc = MetricAccumulator(reference="prior")
    model = {f"s{i}": 0.9 + 0.01 * rng.normal() for i in range(6)}
    prior = {f"s{i}": 0.7 + 0.01 * rng.normal() for i in range(6)}
    for s, value in model.items():
        acc.add(s, "model", ssim=value - 0.01, mae=40.0)
        acc.add(s, "model", {"ssim": value + 0.01})  # a second slice of the same subject: averaged
        acc.add(s, "prior", ssim=prior[s], mae=90.0 + float(s[1:]))
    assert len(acc) == 18 and acc.methods == ["model", "prior"] and acc.metrics == ["ssim", "mae"]
    table = acc.per_subject()
    assert len(table) == 12
    row = next(r for r in table if r["subject"] == "s2" and r["method"] == "model")
    assert row["ssim"] == pytest.approx(model["s2"]) and row["mae"] == 40.0
    summary = acc.summary()
    assert summary["model"]["ssim"]["mean"] == pytest.approx(np.mean(list(model.values())))
    assert summary["model"]["ssim"]["sd"] == pytest.approx(np.std(list(model.values()), ddof=1))
    assert summary["prior"]["mae"] == {"mean": pytest.approx(92.5), "sd": pytest.approx(np.std(range(90, 96), ddof=1)), "n": 6}
    pv = acc.pvalues()
    assert set(pv) == {"model"}
    ref = stats.mannwhitneyu(list(model.values()), list(prior.values()), alternative="two-sided")
    assert pv["model"]["ssim"] == {"u": 36.0, "p": pytest.approx(ref.pvalue)}
    assert pv["model"]["ssim"]["p"] < 0.01
    with pytest.raises(ValueError, match="reference method 'x'"):
        acc.pvalues("x")
    with pytest.raises(ValueError, match="no metric values"):
        acc.add("s0", "model")

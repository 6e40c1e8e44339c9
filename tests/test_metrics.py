"""SSIM / PSNR / MAE against scikit-image and NumPy references on real CT slices."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from seg2med.io import load_volume
from seg2med.metrics import mae, psnr, ssim


@pytest.fixture(scope="module")
def ct_pair(ts_dir):
    ct = np.clip(load_volume(ts_dir / "example_ct_sm.nii.gz").array, -1000, 1000)
    rng = np.random.default_rng(0)
    noisy = ct + rng.normal(0, 40, ct.shape).astype(np.float32)
    return ct, noisy


def test_ssim_matches_scikit_image_on_a_real_slice(ct_pair):
    ct, noisy = ct_pair
    a, b = ct[:, :, 15], noisy[:, :, 15]
    ref = structural_similarity(b, a, data_range=2000, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(b, a, data_range=2000) == pytest.approx(ref, abs=1e-4)
    assert ssim(a, a, data_range=2000) == pytest.approx(1.0)
    assert ssim(b, a, data_range=2000) < 0.99


def test_masked_3d_ssim_averages_the_slice_maps_inside_the_mask(ct_pair):
    ct, noisy = ct_pair
    body = ct > -500
    maps = [structural_similarity(noisy[:, :, k], ct[:, :, k], data_range=2000, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, full=True)[1] for k in range(ct.shape[2])]
    expected = np.stack(maps, axis=2)[body].mean()
    assert ssim(noisy, ct, data_range=2000, mask=body) == pytest.approx(expected, abs=1e-6)


def test_psnr_and_mae_match_numpy_references(ct_pair):
    ct, noisy = ct_pair
    assert psnr(noisy, ct, data_range=2000) == pytest.approx(peak_signal_noise_ratio(ct, noisy, data_range=2000), abs=1e-4)
    body = ct > -500
    assert mae(noisy, ct, body) == pytest.approx(float(np.abs(noisy - ct)[body].mean()), abs=1e-4)
    assert psnr(ct, ct, data_range=2000) == float("inf")
    with pytest.raises(ValueError, match="shape"):
        mae(ct[:, :, :2], ct)

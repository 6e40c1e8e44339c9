"""End-to-end on real data: label map -> canonical anatomy -> prior, compared with the real scans."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import seg2med
from seg2med.io import load_volume


def _organ_means(image: np.ndarray, labels: np.ndarray, ids) -> dict[int, float]:
    return {int(i): float(image[labels == i].mean()) for i in ids if (labels == i).sum() >= 20}


def _organ_ids(lv) -> list[int]:
    """Organ classes present (ids below seg2med's extension range)."""
    present = np.unique(lv.volume.array)
    return [int(i) for i in present if 0 < i < 200]


@pytest.mark.parametrize(
    "image_name,seg_name,tissue",
    [
        ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", None),
        ("example_ct_sm.nii.gz", "example_seg.nii.gz", "example_seg_tissue_types"),
    ],
)
def test_ct_prior_per_organ_hu_correlates_with_real_ct(ts_dir, image_name, seg_name, tissue):
    ct = load_volume(ts_dir / image_name)
    lv = seg2med.build_anatomy(
        ts_dir / seg_name, scheme="total", image=ct, modality="ct",
        tissue_masks=ts_dir / tissue if tissue else None,
    )
    prior = seg2med.simulate_prior(lv, "ct")
    assert prior.volume.shape == ct.shape
    assert np.array_equal(prior.volume.affine, ct.affine)
    assert prior.volume.array.dtype == np.float32
    ids = _organ_ids(lv)
    assert len(ids) >= 30
    real = _organ_means(ct.array, lv.volume.array, ids)
    sim = _organ_means(prior.volume.array, lv.volume.array, ids)
    keys = sorted(real)
    r = stats.pearsonr([real[k] for k in keys], [sim[k] for k in keys]).statistic
    assert r >= 0.9, r
    # tissue types, where given, get fat / muscle HU like the real scan
    if tissue:
        s = lv.scheme
        for name, lo, hi in [("subcutaneous_fat", -150, -50), ("torso_fat", -150, -40), ("skeletal_muscle", 0, 80)]:
            m = lv.volume.array == s.id_of(name)
            assert m.sum() > 100
            assert lo < prior.volume.array[m].mean() < hi
            assert lo - 60 < ct.array[m].mean() < hi + 60


def test_prior_written_to_disk_keeps_affine_shape_and_float32(ts_dir, tmp_path):
    prior = seg2med.simulate_prior(ts_dir / "example_seg.nii.gz", "vibe-opp", scheme="total")
    out = seg2med.save_prior(prior, tmp_path / "p.nii.gz")
    back = load_volume(out)
    src = load_volume(ts_dir / "example_seg.nii.gz", kind="labels")
    assert back.shape == src.shape and np.array_equal(back.affine, src.affine)
    assert np.array_equal(back.array, prior.volume.array)  # float32, bit-exact, never truncated
    assert not np.array_equal(back.array, np.round(back.array))


def test_vibe_in_prior_ranks_organs_like_real_mr(ts_dir):
    mr = load_volume(ts_dir / "example_mr_sm.nii.gz")
    lv = seg2med.build_anatomy(ts_dir / "example_seg_mr.nii.gz", scheme="total_mr", image=mr, modality="mr")
    assert np.array_equal(lv.volume.affine, mr.affine) and lv.volume.shape == mr.shape
    prior = seg2med.simulate_prior(lv, "vibe-in")
    ids = _organ_ids(lv)
    real = _organ_means(mr.array, lv.volume.array, ids)
    sim = _organ_means(prior.volume.array, lv.volume.array, ids)
    keys = sorted(real)
    rho = stats.spearmanr([real[k] for k in keys], [sim[k] for k in keys]).statistic
    assert len(keys) >= 15
    assert rho >= 0.6, rho


def test_saved_canonical_labels_are_reused_as_is(ts_dir, tmp_path):
    lv = seg2med.build_anatomy(ts_dir / "example_seg.nii.gz", scheme="total", tissue_masks=ts_dir / "example_seg_tissue_types")
    path = seg2med.save_label_volume(lv, tmp_path / "canon.nii.gz")
    again = seg2med.build_anatomy(path)
    assert again.scheme.classes == lv.scheme.classes
    assert np.array_equal(again.volume.array, lv.volume.array)
    p1 = seg2med.simulate_prior(lv, "space").volume.array
    p2 = seg2med.simulate_prior(path, "space").volume.array
    assert np.array_equal(p1, p2)

"""The brain out-of-distribution suite (``benchmarks/brain_ood.py``): its cases are what they claim to be (exact
geometry, a view inside the brain, an unseen subject with its own T1, an inserted tumour), and the shipped brain model
at its defaults beats the priors alone on every case that has a real image."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "brain_ood.py"


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("brain_ood", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["brain_ood"] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cases(suite, data_dir):
    return {c.name: c for c in suite.build_cases(data_dir, list(suite.CASES))}


def _world_box(vol):
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, vol.shape[0] - 0.5) for j in (-0.5, vol.shape[1] - 0.5)
                        for k in (-0.5, vol.shape[2] - 0.5)])
    w = (vol.affine @ corners.T).T[:, :3]
    return w.min(axis=0), w.max(axis=0)


def test_tcga_cases_keep_the_held_out_block_and_their_geometry(cases):
    held, spacing, interior = cases["heldout"], cases["spacing"], cases["interior"]
    assert held.labels.shape == (240, 240, 16) and held.labels.spacing == pytest.approx((1.0, 1.0, 1.0))
    # 2 mm voxels over the same field of view (the corners of the grid do not move); the images on the labels' grid
    assert spacing.labels.spacing == pytest.approx((2.0, 2.0, 2.0)) and spacing.labels.shape == (120, 120, 8)
    for a, b in zip(_world_box(held.labels), _world_box(spacing.labels)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for case in (held, spacing, interior):
        assert set(case.real) == {"t1", "t1ce", "t2", "flair"}
        for v in case.real.values():
            assert v.shape == case.labels.shape and np.allclose(v.affine, case.labels.affine)
    lab = np.asarray(interior.labels.array)
    assert (lab != 0).mean() >= 0.995 and min(lab.shape[:2]) >= 64  # a view inside the brain (72 x 82 mm)
    assert {1, 2} <= set(np.unique(lab).tolist())  # with the tumour in it


def test_aseg_cases_are_an_unseen_brain_with_its_t1_and_an_inserted_tumour(cases):
    from seg2med.labels import get_scheme

    aseg, tumour = cases["aseg"], cases["aseg-tumour"]
    lab = np.asarray(aseg.labels.array)
    assert aseg.scheme == "aseg" and not get_scheme("aseg").unknown_ids(lab)  # cortex parcels read as cortex
    assert {2, 3, 4, 41, 42, 43} <= set(np.unique(lab).tolist())  # white matter, cortex, ventricles both sides
    t1 = aseg.real["t1"]
    assert set(aseg.real) == {"t1"} and t1.shape == lab.shape and np.allclose(t1.affine, aseg.labels.affine)
    axial = int(np.argmax(np.abs(aseg.labels.affine[2, :3])))
    assert lab.shape[axial] == 16
    real = np.asarray(t1.array, dtype=np.float32)
    assert np.median(real[np.isin(lab, (2, 41))]) > np.median(real[np.isin(lab, (3, 42))]) > np.median(real[np.isin(lab, (4, 43))])
    # the inserted tumour: nested compartments inside what was brain, nothing outside the brain changed
    edited = np.asarray(tumour.labels.array)
    assert tumour.scheme == "brats_medddpm" and not tumour.real and edited.shape == lab.shape
    assert {1, 2, 3, 4} <= set(np.unique(edited).tolist())
    assert np.array_equal(edited == 0, lab == 0)

"""Prior-consistency guidance (``seg2med.sampling.anchor``): the coarse intensities of every step's clean-image
estimate are kept within a tolerance of the prior's, the fine detail is the model's."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seg2med
from cli_helpers import run_cli, small_ct_labels
from seg2med.errors import ConfigError
from seg2med.models.config import SchedulerConfig, build_scheduler, spaced_scheduler
from seg2med.sampling import PriorAnchor, training_target, x0_corrected_denoiser


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread (conftest.one_thread)."""


@settings(max_examples=20, deadline=None)
@given(offset=st.floats(-0.8, 0.8), seed=st.integers(0, 2**31 - 1))
def test_hard_anchor_removes_a_constant_offset_to_the_slice_edge_and_keeps_fine_detail(offset, seed):
    g = torch.Generator().manual_seed(seed)
    prior = torch.rand((2, 1, 48, 40), generator=g) * 0.2 - 0.5
    fine = torch.zeros_like(prior)
    fine[..., ::2, :] = 0.05  # a 2-pixel stripe pattern: far finer than sigma
    fine -= 0.025
    anchor = PriorAnchor(scale=2.0)
    # a constant offset is removed everywhere, to the slice edge (the border is replicated, not zero-padded)
    torch.testing.assert_close(anchor(prior + offset, prior), prior, atol=1e-5, rtol=0)
    # detail finer than sigma stays (away from the border, where the stripes are balanced in the kernel)
    out = anchor(prior + offset + fine, prior)
    inner = (..., slice(10, -10), slice(10, -10))
    assert float((out - prior - fine)[inner].abs().max()) < 2e-3


@settings(max_examples=20, deadline=None)
@given(offset=st.floats(-0.6, 0.6), tol=st.floats(0.01, 0.3))
def test_tolerance_leaves_small_departures_alone_and_pulls_large_ones_back_to_the_tolerance(offset, tol):
    prior = torch.full((1, 1, 24, 24), -0.2)
    out = PriorAnchor(scale=3.0, tolerance=tol)(prior + offset, prior)
    expected = offset if abs(offset) <= tol else np.sign(offset) * tol
    torch.testing.assert_close(out - prior, torch.full_like(prior, float(expected)), atol=1e-5, rtol=0)


def test_with_a_body_mask_the_air_around_a_small_body_does_not_dilute_the_correction():
    prior = torch.full((1, 1, 64, 64), -1.0)
    prior[..., 24:40, 24:40] = 0.1
    inside = prior > -1.0 + 1e-3
    image = torch.where(inside, prior - 0.3, prior)  # the model 0.3 too dark inside the body, right outside it
    anchor = PriorAnchor(scale=8.0)
    masked = anchor(image, prior, inside)
    torch.testing.assert_close(masked[inside], prior[inside], atol=1e-4, rtol=0)
    diluted = anchor(image, prior)  # a plain low-pass averages the body's offset with the zeros of the air
    assert float((prior - diluted)[inside].mean()) > 0.1


def test_weight_moves_part_of_the_way():
    prior = torch.zeros((1, 1, 16, 16))
    out = PriorAnchor(scale=2.0, weight=0.25)(prior + 0.4, prior)
    torch.testing.assert_close(out, torch.full_like(prior, 0.3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [{"scale": 0.0}, {"scale": 2.0, "tolerance": -0.1}, {"scale": 2.0, "weight": 0.0},
                                 {"scale": 2.0, "weight": 1.5}])
def test_bad_anchor_parameters_are_refused(bad):
    with pytest.raises(ConfigError, match="prior anchor"):
        PriorAnchor(**bad)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_corrected_denoiser_makes_monai_ddim_step_use_the_corrected_clean_image(prediction):
    """Whatever the network predicts, MONAI's own DDIM step must see ``correct(x0)`` as its x0 estimate."""
    cfg = SchedulerConfig(prediction_type=prediction, clip_sample=False)
    sched, grid = spaced_scheduler(cfg, "ddim", 10)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand((2, 1, 8, 8), generator=g) * 2 - 1, torch.randn((2, 1, 8, 8), generator=g)
    for j in (9, 5, 1):
        t = torch.full((2,), int(grid[j]), dtype=torch.long)
        train = build_scheduler(cfg)
        x_t = train.add_noise(x0, noise, t)
        exact = training_target(cfg, train, x0, noise, t)
        same = x0_corrected_denoiser(lambda x, tt: exact, cfg, lambda z: z)(x_t, t)
        torch.testing.assert_close(same, exact, atol=1e-4, rtol=1e-4)  # identity correction: output unchanged
        target = torch.full_like(x0, 0.25)
        out = x0_corrected_denoiser(lambda x, tt: exact, cfg, lambda z: target)(x_t, t)
        _, pred_x0 = sched.step(out, j, x_t)
        torch.testing.assert_close(pred_x0, target, atol=1e-3, rtol=1e-3)


def test_corrected_denoiser_makes_monai_rflow_step_use_the_corrected_clean_image():
    cfg = SchedulerConfig(kind="rflow")
    sched = build_scheduler(cfg, "rflow")
    sched.set_timesteps(10, input_img_size_numel=64)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand((2, 1, 8, 8), generator=g) * 2 - 1, torch.randn((2, 1, 8, 8), generator=g)
    for t in (float(sched.timesteps[0]), float(sched.timesteps[5])):
        tt = torch.full((2,), t)
        x_t = sched.add_noise(x0, noise, tt)
        target = torch.full_like(x0, -0.4)
        out = x0_corrected_denoiser(lambda x, _t: x0 - noise, cfg, lambda z: target)(x_t, tt)
        _, pred_x0 = sched.step(out, t, x_t)
        torch.testing.assert_close(pred_x0, target, atol=1e-4, rtol=1e-4)


def _ct_labels_file(tmp_path):
    return small_ct_labels(tmp_path)[0]


def test_generate_with_a_hard_anchor_puts_every_organ_back_on_its_prior_value(tmp_path):
    """On a label map unlike its training subject (no fat, no body wall) the tiny CT model puts every organ
    about 250-300 HU too low; anchored (sigma 9 mm, no tolerance) every organ median is within 40 HU of the prior's."""
    path = _ct_labels_file(tmp_path)
    labels = np.asarray(nib.load(path).dataobj)
    kw = dict(model="ct-demo-tiny", steps=4, seed=0, device="cpu")
    free = seg2med.generate(path, anchor_scale=0, fov_margin=0, **kw)  # the shipped default anchors: off here
    held = seg2med.generate(path, anchor_scale=9.0, **kw)
    prior = free.prior.array

    def offsets(img):
        return np.array([np.median(img[labels == i]) - np.median(prior[labels == i]) for i in (1, 2, 5, 80)])

    assert np.all(np.abs(offsets(free.samples[0].array)) > 150)  # the failure the anchor is for
    assert np.all(np.abs(offsets(held.samples[0].array)) < 40)
    assert held.metadata["anchor"] == {"scale_mm": 9.0, "tolerance": 0.0}
    assert free.metadata["anchor"] is None
    assert np.array_equal(held.samples[0].affine, free.samples[0].affine)
    assert held.samples[0].shape == labels.shape


def test_cli_refuses_a_negative_anchor_before_any_work(tmp_path, capsys, monkeypatch):
    path = _ct_labels_file(tmp_path)
    out = tmp_path / "ct.nii.gz"
    r = run_cli(["generate", "--labels", path, "--out", out, "--model", "ct-demo-tiny", "--steps", "2",
                 "--anchor-scale", "-3"], capsys, monkeypatch)
    assert r.code != 0 and "--anchor-scale must be a number >= 0" in " ".join(r.err.split()) and "Traceback" not in r.err
    assert not out.exists()


def test_cli_writes_the_anchor_into_the_sidecar(tmp_path, capsys, monkeypatch):
    path = _ct_labels_file(tmp_path)
    out = tmp_path / "ct.nii.gz"
    r = run_cli(["generate", "--labels", path, "--out", out, "--model", "ct-demo-tiny", "--steps", "2",
                 "--anchor-scale", "12", "--anchor-tolerance", "50"], capsys, monkeypatch)
    assert r.code == 0, r.err
    meta = json.loads(out.with_name("ct.json").read_text())
    assert meta["anchor"] == {"scale_mm": 12.0, "tolerance": 50.0}


# --------------------------------------------------------------------------- field-of-view margin
def test_extend_edges_continues_a_body_cut_by_the_field_of_view_and_leaves_air_edges_alone():
    from seg2med.data.geometry import SliceGeometry

    geo = SliceGeometry.plan((20, 16, 3), (3.0, 3.0, 3.0), "axial", spacing=3.0, size=32)
    (p0, p1), (p2, p3) = geo.pad
    assert geo.size == (32, 32) and p0 == 6 and p2 == 8
    plane = np.zeros((3, 20, 16), np.float32)
    plane[:, :, :10] = 0.6  # tissue reaching the left and right ends of the first plane axis
    plane[:, 0, 4] = 0.9
    slices = np.pad(plane, ((0, 0), (p0, p1), (p2, p3)))
    ext = geo.extend_edges(slices, margin=4)
    inner = (slice(None), slice(p0, 32 - p1), slice(p2, 32 - p3))
    np.testing.assert_array_equal(ext[inner], plane)  # the field of view itself is untouched
    np.testing.assert_array_equal(ext[:, p0 - 4 : p0, p2 + 4], np.full((3, 4), 0.9, np.float32))  # continued 4 px outward
    assert (ext[:, : p0 - 4] == 0).all() and (ext[:, 32 - p1 + 4 :] == 0).all()  # and no further
    assert (ext[:, p0:32 - p1, p2 + 10 : 32 - p3 + 4] == 0).all()  # an edge in air stays air
    for order in (0, 1):  # the padding is dropped on the way back: the same volume either way
        np.testing.assert_array_equal(geo.undo(ext, order=order), geo.undo(slices, order=order))


def test_a_margin_grows_the_canvas_when_the_plane_leaves_too_little_room():
    from seg2med.data.geometry import SliceGeometry

    tight = SliceGeometry.plan((30, 12, 2), (3.0, 3.0, 3.0), "axial", spacing=3.0, size=32, grow_multiple=8)
    roomy = SliceGeometry.plan((30, 12, 2), (3.0, 3.0, 3.0), "axial", spacing=3.0, size=32, grow_multiple=8, margin=5)
    assert tight.size == (32, 32) and roomy.size == (40, 32)  # 30 + 2 * 5 = 40 (a multiple of 8); 12 + 10 fits in 32
    assert min(roomy.pad[0]) >= 5


def _loaded_with_sampling(sampling):
    from seg2med.inference import load_model

    model = load_model("ct-demo-tiny", device="cpu")
    model.config = {**model.config, "sampling": sampling}
    return model


def test_guidance_defaults_come_from_the_model_config_and_options_override_them():
    from seg2med.inference.generate import Guidance

    model = _loaded_with_sampling({"anchor_scale": 4.0, "fov_margin": 15.0})
    g = Guidance.of_model(model)
    assert (g.anchor_scale, g.anchor_tolerance, g.fov_margin) == (4.0, 0.0, 15.0)
    assert g.margin_px(model) == round(15.0 / model.spec.spacing)
    assert g.anchor(model).scale == pytest.approx(4.0 / model.spec.spacing)
    off = Guidance.of_model(model, anchor_scale=0.0, fov_margin=None)
    assert off.anchor(model) is None and off.fov_margin == 15.0
    assert off.record(model) == {"anchor": None, "fov_margin_mm": 15.0, "tri_planar": False}
    assert Guidance.of_model(_loaded_with_sampling({"tri_planar": True}), tri_planar=False).tri_planar is False
    shared = _loaded_with_sampling({"slice_noise": "shared"})  # a model whose slices start from one noise
    assert Guidance.of_model(model).slice_noise == "independent" and Guidance.of_model(shared).slice_noise == "shared"
    assert Guidance.of_model(shared, slice_noise="correlated").slice_noise == "correlated"
    assert Guidance.of_model(shared, tri_planar=True).slice_noise == "independent"  # gives way to tri-planar sampling
    window = model.spec.image_window()
    tol = Guidance.of_model(model, anchor_tolerance=50.0).anchor(model).tolerance
    assert tol == pytest.approx(100.0 / (window["high"] - window["low"]))  # 50 HU on the [-1, 1] scale


@pytest.mark.parametrize("sampling, needle", [({"anchor_scal": 4.0}, "unknown keys ['anchor_scal']"),
                                              ({"fov_margin": -1.0}, "--fov-margin must be a number >= 0"),
                                              ({"anchor_scale": "4"}, "--anchor-scale must be a number >= 0"),
                                              ({"tri_planar": 1}, "--tri-planar must be true or false"),
                                              ({"slice_noise": "slerp"}, "--slice-noise must be one of independent"),
                                              ([4.0], "'sampling' must be a JSON object")])
def test_a_bad_sampling_block_names_the_config_file(sampling, needle):
    from seg2med.errors import InputError
    from seg2med.inference.generate import Guidance

    with pytest.raises(InputError) as err:
        Guidance.of_model(_loaded_with_sampling(sampling))
    assert needle in str(err.value) and "config.json" in str(err.value)

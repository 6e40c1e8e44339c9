"""Tri-planar sampling: the isotropic canvas, the plane-cycling denoiser and the x0 parametrisation it relies on.

The key exactness check: a denoiser that acts voxel by voxel (here the exact score of Gaussian data whose mean
is the condition) gives the same prediction whichever way the volume is sliced, so tri-planar sampling with it
must reproduce slice-by-slice sampling exactly; any mix-up of axes, slices or the background shows up there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seg2med.data.codec import VolumeCodec
from seg2med.data.geometry import VolumeGeometry
from seg2med.models.config import SchedulerConfig, build_scheduler
from seg2med.sampling import X0Parametrisation, plane_cycle, plane_cycling_denoiser, sample
from seg2med.sampling.planes import neighbour_slices, slices_of


# --------------------------------------------------------------------------- the canvas
def test_volume_geometry_at_the_target_spacing_is_a_pad_that_undo_removes_exactly():
    rng = np.random.default_rng(0)
    vol = rng.random((30, 21, 7)).astype(np.float32)
    geo = VolumeGeometry.plan(vol.shape, (3.0, 3.0, 3.0), spacing=3.0, min_size=32, grow_multiple=8)
    assert geo.size == (32, 32, 32) and geo.resampled_shape == (30, 21, 7)
    canvas = geo.forward(vol)
    assert canvas.shape == (32, 32, 32)
    assert np.array_equal(canvas[1:31, 5:26, 12:19], vol)  # centre-padded: (2 // 2, 11 // 2, 25 // 2) before
    assert canvas.sum() == pytest.approx(vol.sum(), rel=1e-6)
    assert np.array_equal(geo.undo(canvas), vol)


def test_volume_geometry_grows_to_the_network_multiple_with_room_for_the_margin_in_plane_only():
    geo = VolumeGeometry.plan((130, 40, 50), (1.5, 3.0, 6.0), spacing=3.0, min_size=32, grow_multiple=16, margin=5)
    assert geo.resampled_shape == (65, 40, 100)  # 1.5 mm -> half the voxels, 6 mm -> twice
    assert geo.size == (80, 64, 112)  # 65 + 10 -> 80, 40 + 10 -> 64, z without margin: 100 -> 112
    assert all(s % 16 == 0 for s in geo.size)
    assert VolumeGeometry.from_dict(geo.to_dict()) == geo


def test_volume_geometry_round_trip_of_a_smooth_volume_at_another_spacing():
    x, y, z = np.meshgrid(np.linspace(0, 1, 40), np.linspace(0, 1, 30), np.linspace(0, 1, 24), indexing="ij")
    vol = (np.sin(3 * x) + y * z).astype(np.float32)
    geo = VolumeGeometry.plan(vol.shape, (1.5, 1.5, 2.0), spacing=3.0, min_size=16, grow_multiple=8)
    back = geo.undo(geo.forward(vol))
    assert back.shape == vol.shape
    assert np.abs(back - vol)[2:-2, 2:-2, 2:-2].max() < 0.02  # linear interpolation of a smooth field


def test_volume_extend_edges_continues_the_field_of_view_on_the_chosen_axes_only():
    geo = VolumeGeometry.plan((8, 8, 8), (1.0, 1.0, 1.0), spacing=1.0, min_size=16)
    canvas = geo.forward(np.ones((8, 8, 8), dtype=np.float32))
    ext = geo.extend_edges(canvas, 2)  # axes 0 and 1
    assert ext[2:14, 2:14, 4:12].min() == 1.0 and ext[1, 8, 8] == 0.0 and ext[8, 1, 8] == 0.0
    assert ext[8, 8, 3] == 0.0 and ext[8, 8, 12] == 0.0  # z untouched
    assert np.array_equal(geo.undo(ext), np.ones((8, 8, 8)))


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 12)] * 3), flips=st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3),
       perm=st.permutations([0, 1, 2]))
def test_volume_codec_round_trip_is_exact_on_any_orientation_at_the_model_spacing(shape, flips, perm):
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, list(perm)] * 3.0 * np.asarray(flips)
    vol = (np.arange(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(np.float32)
    codec = VolumeCodec.plan(affine, shape, spacing=3.0, min_size=4, grow_multiple=4)
    enc = codec.encode({"x": vol}, np.ones(shape, dtype=bool))
    assert all(s % 4 == 0 and s >= 4 for s in enc["x"].shape)
    assert np.array_equal(codec.decode(enc["x"], order=1), vol)


# --------------------------------------------------------------------------- the sampler pieces
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample", "rflow"])
def test_x0_parametrisation_converts_an_output_to_its_clean_estimate_and_back(kind):
    cfg = SchedulerConfig(kind="rflow") if kind == "rflow" else SchedulerConfig(prediction_type=kind)
    par = X0Parametrisation(cfg)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64), torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 500, 900])
    assert torch.allclose(par.output(par.x0(out, x, t), x, t), out, atol=1e-9)
    if kind == "epsilon":  # x_t = sqrt(a) x0 + sqrt(1 - a) eps
        a = build_scheduler(cfg).alphas_cumprod.double()[t].view(-1, 1, 1, 1, 1)
        x0 = torch.randn(3, 1, 4, 5, 6, generator=g, dtype=torch.float64)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * out
        assert torch.allclose(par.x0(out, xt, t), x0, atol=1e-9)


def test_plane_cycle_ends_on_the_first_axis():
    assert plane_cycle([2, 1, 0], 8) == [0, 2, 1, 0, 2, 1, 0, 2]
    assert plane_cycle([2, 1, 0], 1) == [2]
    assert plane_cycle([2], 3) == [2, 2, 2]
    with pytest.raises(ValueError):
        plane_cycle([3], 2)


def test_neighbour_slices_along_any_axis_repeat_the_edges():
    prior = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    cond = neighbour_slices(prior, 1, 1)  # coronal: along axis 1
    assert cond.shape == (3, 3, 2, 4)
    assert torch.equal(cond[0, 0], prior[:, 0]) and torch.equal(cond[0, 2], prior[:, 1])
    assert torch.equal(cond[2, 1], prior[:, 2]) and torch.equal(cond[2, 2], prior[:, 2])
    assert torch.equal(slices_of(prior, 2)[3], prior[:, :, 3])


def test_plane_cycling_denoiser_runs_only_body_slices_along_the_cycle_and_fills_the_rest_with_background():
    prior = -torch.ones(4, 5, 6)
    prior[1:3, 2:4, 1:5] = 0.5  # body: x 1-2, y 2-3, z 1-4
    seen: list[tuple[int, tuple[int, ...]]] = []

    def make(cond):
        def denoise(x, t):
            seen.append((int(t[0]), tuple(x.shape)))
            return cond[:, :1] * 0 + 7.0  # a constant prediction, where it ran
        return denoise

    par = X0Parametrisation(SchedulerConfig(prediction_type="sample"))
    background = -torch.ones(1, 1, 4, 5, 6)
    counts: list[int] = []
    den = plane_cycling_denoiser(make, prior, par, background, axes=[2, 1, 0], calls=3, batch=3, on_slices=counts.append)
    x, t = torch.zeros(1, 1, 4, 5, 6), torch.tensor([5])
    outs = [den(x, t) for _ in range(3)]
    assert plane_cycle([2, 1, 0], 3) == [1, 0, 2]
    assert counts == [2, 2, 4]  # calls along y (2 body slices), x (2), z (4): the cycle ends on axis 2
    assert [s for _, s in seen] == [(2, 1, 4, 6), (2, 1, 5, 6), (3, 1, 4, 5), (1, 1, 4, 5)]  # batch 3
    assert torch.equal(outs[0][0, 0, :, 2:4], torch.full((4, 2, 6), 7.0)) and float(outs[0][0, 0, :, 0].max()) == -1.0
    assert torch.equal(outs[1][0, 0, 1:3], torch.full((2, 5, 6), 7.0)) and float(outs[1][0, 0, 0].max()) == -1.0
    assert torch.equal(outs[2][0, 0, :, :, 1:5], torch.full((4, 5, 4), 7.0)) and float(outs[2][0, 0, :, :, 0].max()) == -1.0


def test_tri_planar_sampling_with_a_voxelwise_denoiser_equals_slice_by_slice_sampling():
    """Data x0 ~ N(mu, s0^2) per voxel with mu = the condition: the exact epsilon-denoiser is voxelwise, so the
    slicing cannot change any prediction and the two samplers must agree to rounding."""
    cfg, s0 = SchedulerConfig(clip_sample=False), 0.3
    cum = build_scheduler(cfg).alphas_cumprod.double()

    def make(cond):
        mu = cond[:, :1].double()

        def denoise(x, t):
            a = cum[t].view(-1, 1, 1, 1)
            return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s0**2 + 1 - a)
        return denoise

    g = torch.Generator().manual_seed(0)
    prior = -torch.ones(6, 7, 5, dtype=torch.float64)
    prior[1:5, 2:6, :] = torch.rand(4, 4, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 1, 6, 7, 5, generator=g, dtype=torch.float64)
    par = X0Parametrisation(cfg)
    background = -torch.ones(1, 1, 6, 7, 5, dtype=torch.float64)
    den = plane_cycling_denoiser(make, prior, par, background, axes=[2, 1, 0], calls=10, batch=4)
    tri = sample(den, tuple(noise.shape), cfg, "ddim", 10, noise=noise)[0, 0]
    axial = slices_of(prior, 2)[:, None]  # [5, 1, 6, 7]
    planar = sample(make(axial), (5, 1, 6, 7), cfg, "ddim", 10, noise=slices_of(noise[0], 2).clone())[:, 0].movedim(0, 2)
    # every body voxel lies in a body slice along each axis, so the network predicts it at every step
    assert torch.allclose(tri[1:5, 2:6], planar[1:5, 2:6], atol=1e-9)
    assert float((tri[1:5, 2:6] - noise[0, 0, 1:5, 2:6]).abs().mean()) > 0.1  # it did denoise



# --------------------------------------------------------------------------- generation
def test_tri_planar_generation_keeps_the_input_grid_records_the_canvas_and_is_seeded(tmp_path, capsys, monkeypatch):
    import nibabel as nib

    from cli_helpers import run_cli, small_ct_labels

    path, lab = small_ct_labels(tmp_path, depth=6)
    affine = np.array([[0.0, -3.0, 0, 50], [3.0, 0, 0, -20], [0, 0, 3.0, 7], [0, 0, 0, 1]])  # not RAS-ordered
    nib.save(nib.Nifti1Image(lab, affine), path)
    outs = []
    for seed, name in [(0, "a"), (0, "b"), (1, "c")]:
        res = run_cli(["generate", "--labels", path, "--out", tmp_path / f"{name}.nii.gz", "--model", "ct-demo-tiny",
                       "--tri-planar", "--seed", seed, "--steps", 2, "--precision", "fp32"], capsys, monkeypatch)
        assert res.code == 0, res.err
        outs.append(nib.load(tmp_path / f"{name}.nii.gz"))
    img = outs[0]
    assert img.shape == lab.shape and np.allclose(img.affine, affine)
    data = [np.asarray(o.dataobj) for o in outs]
    assert np.array_equal(data[0], data[1]) and not np.array_equal(data[0], data[2])
    assert float(data[0][lab == 0].max()) == -1000.0  # air (the low end of the window) outside the body
    liver, muscle = float(data[0][lab == 5].mean()), float(data[0][lab == 80].mean())
    assert 0 < liver < 120 and -50 < muscle < 120  # soft tissue where the labels say so
    import json

    meta = json.loads((tmp_path / "a.json").read_text())
    assert meta["tri_planar"] is True and meta["axis"] == "tri-planar"
    assert meta["axes"] == ["axial", "coronal", "sagittal"]
    assert all(s % 8 == 0 and s >= 128 for s in meta["canvas"]["size"])
    assert meta["network_slices_per_step"] > 0



def test_shared_and_correlated_slice_noise_make_identical_conditions_give_alike_slices_and_are_recorded(tmp_path, capsys, monkeypatch):
    """--slice-noise shared: every slice starts from the same noise, so a label map that is the same on every slice
    (and deterministic DDIM) gives the same image on every slice; correlated noise at correlation 1 is exactly that,
    at 0.9 neighbouring slices differ less than with independent noise (which differ by HUs)."""
    import json

    import nibabel as nib

    from cli_helpers import run_cli, small_ct_labels

    path, lab = small_ct_labels(tmp_path, depth=5)
    vols, metas = {}, {}
    for mode, corr in (("shared", None), ("independent", None), ("correlated", 1.0), ("correlated", 0.9)):
        name = f"{mode}{corr or ''}"
        out = tmp_path / f"{name}.nii.gz"
        extra = [] if corr is None else ["--slice-correlation", corr]
        res = run_cli(["generate", "--labels", path, "--out", out, "--model", "ct-demo-tiny", "--slice-noise", mode,
                       *extra, "--steps", 2, "--batch", 2, "--precision", "fp32", "--anchor-scale", 0],
                      capsys, monkeypatch)
        assert res.code == 0, res.err
        vols[name] = np.asarray(nib.load(out).dataobj)
        metas[name] = json.loads((tmp_path / f"{name}.json").read_text())
        assert metas[name]["slice_noise"] == mode
    shared, independent = vols["shared"], vols["independent"]
    # across batches too (batch 2; the last batch of one slice runs other kernels: 0.002 HU)
    assert max(float(np.abs(shared[..., 0] - shared[..., z]).max()) for z in range(1, 5)) < 0.05
    assert float(np.abs(independent[..., 0] - independent[..., 3]).max()) > 1.0
    np.testing.assert_array_equal(vols["correlated1.0"], shared)
    body = lab != 0

    def neighbour_diff(v):
        return float(np.mean([np.abs(v[..., z + 1] - v[..., z])[body[..., z]].mean() for z in range(4)]))

    assert neighbour_diff(vols["correlated0.9"]) < 0.8 * neighbour_diff(independent)
    assert neighbour_diff(vols["correlated0.9"]) > neighbour_diff(shared) + 0.1
    # the sidecar: the correlation asked for (per model spacing) and the one of these slices' spacing
    spacing = float(np.linalg.norm(nib.load(path).affine[:3, 2]))
    assert metas["correlated0.9"]["slice_correlation"] == 0.9
    assert metas["correlated0.9"]["slice_noise_correlation"] == pytest.approx(0.9 ** (spacing / 3.0))
    assert metas["independent"]["slice_noise_correlation"] is None and metas["shared"]["slice_noise_correlation"] == 1.0
    bad = run_cli(["generate", "--labels", path, "--out", tmp_path / "x.nii.gz", "--model", "ct-demo-tiny",
                   "--slice-noise", "shared", "--tri-planar"], capsys, monkeypatch)
    assert bad.code != 0 and "--slice-noise shared applies to slice-by-slice sampling" in bad.err
    bad = run_cli(["generate", "--labels", path, "--out", tmp_path / "x.nii.gz", "--model", "ct-demo-tiny",
                   "--slice-noise", "slerp"], capsys, monkeypatch)
    assert bad.code != 0 and "--slice-noise must be one of independent, correlated, shared" in bad.err
    bad = run_cli(["generate", "--labels", path, "--out", tmp_path / "x.nii.gz", "--model", "ct-demo-tiny",
                   "--slice-noise", "correlated", "--slice-correlation", 1.5], capsys, monkeypatch)
    assert bad.code != 0 and "--slice-correlation" in bad.err and "[0, 1]" in bad.err
    assert len(bad.err.strip().splitlines()) == 1
    assert not (tmp_path / "x.nii.gz").exists()


@settings(max_examples=20, deadline=None)
@given(c=st.floats(0.0, 1.0), n=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_correlated_slice_noise_is_seeded_and_its_first_slice_does_not_depend_on_the_correlation(c, n, seed):
    from seg2med.sampling.noise import correlated_slice_noise

    a = correlated_slice_noise(n, (1, 4, 4), c, torch.Generator().manual_seed(seed))
    b = correlated_slice_noise(n, (1, 4, 4), c, torch.Generator().manual_seed(seed))
    first = torch.randn((1, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    assert a.shape == (n, 1, 4, 4) and torch.equal(a, b) and torch.equal(a[0], first[0])


@pytest.mark.parametrize("c", [0.0, 0.5, 0.9, 1.0])
def test_correlated_slice_noise_is_unit_gaussian_per_slice_with_neighbour_correlation_c_and_lag_two_c_squared(c):
    """The AR(1) (slerp) chain keeps every slice N(0, 1) and correlates slices j apart by c**j."""
    from seg2med.sampling.noise import correlated_slice_noise

    z = correlated_slice_noise(6, (1, 128, 128), c, torch.Generator().manual_seed(3)).double().flatten(1)
    assert torch.allclose(z.std(dim=1), torch.ones(6, dtype=torch.float64), atol=0.03)
    assert torch.allclose(z.mean(dim=1), torch.zeros(6, dtype=torch.float64), atol=0.03)

    def corr(j):
        return float(np.mean([torch.corrcoef(torch.stack([z[k], z[k + j]]))[0, 1] for k in range(6 - j)]))

    assert corr(1) == pytest.approx(c, abs=0.02) and corr(2) == pytest.approx(c * c, abs=0.02)


def test_slice_noise_correlation_holds_per_model_spacing_so_thin_slices_correlate_more():
    from seg2med.inference.generate import slice_noise_correlation
    from seg2med.sampling.noise import check_correlation

    assert slice_noise_correlation("independent", 0.9, 1.5, 3.0) is None
    assert slice_noise_correlation("shared", 0.9, 1.5, 3.0) == 1.0
    assert slice_noise_correlation("correlated", 0.9, 3.0, 3.0) == pytest.approx(0.9)
    assert slice_noise_correlation("correlated", 0.81, 1.5, 3.0) == pytest.approx(0.9)
    assert slice_noise_correlation("correlated", 0.9, 6.0, 3.0) == pytest.approx(0.81)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_correlation(-0.1)

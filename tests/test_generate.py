"""Generation: geometry kept exactly, seeds reproduce, K samples + std map, bad checkpoints and options."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

import seg2med
from cli_helpers import run_cli
from seg2med.io import Volume, load_volume, save_volume
from seg2med.io.checkpoints import save_weights, write_checkpoint_config
from seg2med.models import ModelConfig, SchedulerConfig, build_model

TINY = dict(channels=(8, 16, 16, 16), norm_num_groups=8, num_head_channels=8)


def make_checkpoint(folder, modality="ct", sequence=None, size=32, spacing=4.0, seed=0, neighbours=0, scheduler=None):
    torch.manual_seed(seed)
    mcfg = ModelConfig.from_preset("tiny", **TINY, neighbours=neighbours)
    net = build_model(mcfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", net.state_dict())
    save_weights(folder / "ema.safetensors", net.state_dict())
    data = {"modality": modality, "sequence": sequence or {"name": "ct"}, "scheme": "total", "spacing": spacing, "size": size,
            "ct_window": [0.0, 2000.0], "mr_percentiles": [10.0, 90.0]}
    if modality == "mr":
        data["image_normalization"] = {"method": "window", "low": 10.0, "high": 500.0}
    write_checkpoint_config(folder, {"method": "ddpm", "model": mcfg.to_dict(), "scheduler": (scheduler or SchedulerConfig()).to_dict(),
                                     "data": data, "weights": {"model": "model.safetensors", "ema": "ema.safetensors"}})
    return folder


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "run")


def _phantom_file(tmp_path, affine=None, name="ph.nii.gz"):
    lv = seg2med.make_phantom(seed=1, spacing=5.0, slices=5, size=24)
    vol = lv.volume if affine is None else Volume(lv.volume.array, affine)
    return save_volume(vol, tmp_path / name)


def test_generate_keeps_affine_shape_spacing_and_seed_reproduces(tmp_path, ckpt):
    labels = _phantom_file(tmp_path)
    a = seg2med.generate(labels, model=ckpt, steps=3, seed=7, batch=2)
    b = seg2med.generate(labels, model=ckpt, steps=3, seed=7, batch=2)
    c = seg2med.generate(labels, model=ckpt, steps=3, seed=8, batch=2)
    src = load_volume(labels, kind="labels")
    vol = a.samples[0]
    assert vol.shape == src.shape and np.array_equal(vol.affine, src.affine)
    assert np.array_equal(vol.array, b.samples[0].array)  # bit-identical for the same seed
    assert not np.array_equal(vol.array, c.samples[0].array)
    assert vol.array.dtype == np.float32 and np.isfinite(vol.array).all()
    assert vol.array[src.array == 0].max() == pytest.approx(-1000.0)  # outside the body: air
    assert -1000.0 <= vol.array.min() and vol.array.max() <= 1000.0  # the CT window of the model


def test_generation_memory_is_bounded_by_the_batch_not_the_volume(tmp_path, ckpt):
    """The network only ever sees `batch` slices at a time (its activations are what scales), every
    slice is sampled once per step, and the result does not depend on the batch size."""
    from seg2med.inference.generate import generate_volume, load_model

    lv = seg2med.make_phantom(seed=1, spacing=5.0, slices=7, size=24)
    lm = load_model(ckpt)
    seen: list[int] = []
    hook = lm.network.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(int(args[0].shape[0])), with_kwargs=True)
    try:
        small = generate_volume(lv.volume, lv.scheme, lm, steps=2, seed=0, batch=3, sampler="ddim")
    finally:
        hook.remove()
    assert max(seen) == 3 and sum(seen) == 7 * 2  # 7 slices in batches of 3, 3, 1; 2 DDIM steps each
    big = generate_volume(lv.volume, lv.scheme, lm, steps=2, seed=0, batch=7, sampler="ddim")
    np.testing.assert_allclose(small.samples[0].array, big.samples[0].array, atol=1e-2)  # same slices, any batch


def test_generate_non_ras_anisotropic_input_written_on_its_grid(tmp_path, ckpt, capsys, monkeypatch):
    # LPS-like orientation, permuted axes, anisotropic spacing and an oblique-free shift
    aff = np.array([[0.0, -3.5, 0.0, 40.0], [-2.0, 0.0, 0.0, 70.0], [0.0, 0.0, 6.0, -12.0], [0, 0, 0, 1.0]])
    labels = _phantom_file(tmp_path, aff, "lps.nii.gz")
    out = tmp_path / "syn.nii.gz"
    res = run_cli(["generate", "--labels", labels, "--out", out, "--model", ckpt, "--steps", "2", "--samples", "2",
                   "--batch", "3", "--seed", "1"], capsys, monkeypatch)
    assert res.code == 0, res.err
    src, img = nib.load(str(labels)), nib.load(str(out))
    assert img.shape == src.shape
    assert np.array_equal(img.affine, src.affine)
    assert img.header.get_zooms() == pytest.approx(src.header.get_zooms())
    std = nib.load(str(tmp_path / "syn_std.nii.gz"))
    assert std.shape == src.shape and np.asarray(std.dataobj).max() > 0
    assert (tmp_path / "syn_sample1.nii.gz").is_file()
    meta = json.loads((tmp_path / "syn.json").read_text())
    assert meta["sampler"] == "ddim" and meta["steps"] == 2 and meta["seed"] == 1 and meta["samples"] == 2
    assert meta["seconds"] > 0 and "seg2med_version" in meta
    assert meta["model"] == str(ckpt.resolve())  # where the weights came from, whatever the working directory


def test_slicing_axis_defaults_to_the_models_and_another_axis_is_a_warning(tmp_path, caplog):
    from seg2med.errors import ConfigError
    from seg2med.inference.generate import generate_volume, load_model

    lv = seg2med.make_phantom(seed=1, spacing=5.0, slices=5, size=24)
    axial = load_model(make_checkpoint(tmp_path / "axial"))  # no "axes" recorded: axial, as prepare's default
    cfg_path = make_checkpoint(tmp_path / "coronal") / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["data"]["axes"] = ["coronal"]
    cfg_path.write_text(json.dumps(cfg))
    coronal = load_model(tmp_path / "coronal")
    with caplog.at_level("WARNING", logger="seg2med.inference.generate"):
        a = generate_volume(lv.volume, lv.scheme, axial, steps=1, sampler="ddim")
        c = generate_volume(lv.volume, lv.scheme, coronal, steps=1, sampler="ddim")
    assert (a.metadata["axis"], c.metadata["axis"]) == ("axial", "coronal")
    assert "trained on" not in caplog.text
    with caplog.at_level("WARNING", logger="seg2med.inference.generate"):
        s = generate_volume(lv.volume, lv.scheme, axial, steps=1, sampler="ddim", axis="Sagittal")
    assert s.metadata["axis"] == "sagittal" and s.samples[0].shape == lv.volume.shape
    assert "was trained on axial slices only: sagittal slices are outside its training data" in caplog.text
    with pytest.raises(ConfigError, match="unknown slicing axis 'oblique'"):
        generate_volume(lv.volume, lv.scheme, axial, steps=1, axis="oblique")


def test_rflow_2_5d_model_samples_with_rflow_by_default_and_refuses_ddim(tmp_path, capsys, monkeypatch):
    # a rectified-flow model with +-1 neighbouring prior slices (4 input channels): the default sampler
    # follows the model's training scheduler; DDIM/DDPM steps would be meaningless for it
    run = make_checkpoint(tmp_path / "rflow", neighbours=1, scheduler=SchedulerConfig(kind="rflow"))
    labels = _phantom_file(tmp_path)
    a = seg2med.generate(labels, model=run, steps=3, seed=1, batch=2)
    b = seg2med.generate(labels, model=run, steps=3, seed=1, batch=3)
    src = load_volume(labels, kind="labels")
    assert a.metadata["sampler"] == "rflow"
    assert a.samples[0].shape == src.shape and np.array_equal(a.samples[0].affine, src.affine)
    assert np.array_equal(a.samples[0].array, b.samples[0].array)  # the batch split does not change the result
    out = tmp_path / "s.nii.gz"
    for sampler in ("ddim", "ddpm"):
        res = run_cli(["generate", "--labels", labels, "--out", out, "--model", run, "--steps", "2", "--sampler", sampler],
                      capsys, monkeypatch)
        assert res.code != 0 and "Traceback" not in res.err
        assert f"sampler '{sampler}' needs a DDPM-trained model" in " ".join(res.err.split())
        assert not out.exists()


def test_generate_refuses_unknown_sequence_scheme_and_bad_checkpoints(tmp_path, ckpt, capsys, monkeypatch):
    labels = _phantom_file(tmp_path)
    out = tmp_path / "s.nii.gz"

    def fails(args, *needles):
        res = run_cli(["generate", "--labels", labels, "--out", out, "--steps", "2", *args], capsys, monkeypatch)
        assert res.code != 0 and "Traceback" not in res.err
        for n in needles:
            assert n in " ".join(res.err.split()), (n, res.err)
        assert not out.exists() and not (tmp_path / "s.json").exists()

    fails(["--model", ckpt, "--sequence", "vibe-in"], "trained for sequence 'ct'", "vibe-in")
    fails(["--model", ckpt, "--scheme", "nonsense"], "unknown label scheme 'nonsense'")
    fails(["--model", ckpt, "--sampler", "rflow"], "sampler 'rflow' needs a model trained with the rflow scheduler")
    fails(["--model", ckpt, "--sampler", "euler"], "unknown sampler 'euler'")
    fails(["--model", ckpt, "--precision", "fp16"], "precision fp16 needs a CUDA device")
    fails(["--model", ckpt, "--precision", "fp8"], "unknown precision 'fp8'")
    fails(["--model", tmp_path / "nowhere"], "nowhere", "no such checkpoint")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    fails(["--model", empty], "empty_run", "not a seg2med checkpoint")
    broken = make_checkpoint(tmp_path / "broken")
    (broken / "ema.safetensors").write_bytes(b"garbage")
    fails(["--model", broken], "ema.safetensors", "corrupt")
    bad_cfg = make_checkpoint(tmp_path / "badcfg")
    (bad_cfg / "config.json").write_text("{not json")
    fails(["--model", bad_cfg], "config.json", "not valid JSON")


def test_mr_checkpoint_uses_its_intensity_window(tmp_path):
    run = make_checkpoint(tmp_path / "mr", modality="mr", sequence={"name": "vibe-in", "field": 1.5, "tr": 6.5, "te": None, "flip": 10.0})
    labels = _phantom_file(tmp_path)
    res = seg2med.generate(labels, model=run, steps=2)
    arr = res.samples[0].array
    inside = load_volume(labels, kind="labels").array != 0
    assert arr[~inside].max() == pytest.approx(10.0)
    assert 10.0 <= arr[inside].min() and arr[inside].max() <= 500.0


def test_float32_noise_in_the_voxel_size_does_not_change_the_volume():
    """8 mm stored as float32 7.99999976 put resampling positions on the other side of nearest-neighbour ties:
    246 HU differences in 40 % of the voxels. Voxel sizes are rounded to 0.1 um before slicing."""
    import seg2med
    from seg2med.io import Volume

    lv = seg2med.make_phantom(seed=0, spacing=8.0, slices=6, size=32)
    outs = []
    for sp in (8.0, float(np.float32(7.99999976))):
        vol = Volume(lv.volume.array.astype(np.int16), np.diag([sp, sp, 8.0, 1.0]))
        outs.append(seg2med.generate(vol, model="ct-demo-tiny", steps=2, seed=0, device="cpu").samples[0].array)
    assert np.abs(outs[0] - outs[1]).max() < 1e-3

"""Baselines (unet, pix2pix, cyclegan, prior) and the auxiliary segmenter: training, run folders, generation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

import seg2med
from seg2med.data import PrepareConfig, prepare_dataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.errors import ConfigError, InputError
from seg2med.inference.generate import load_model
from seg2med.io import load_volume, save_volume
from seg2med.io.checkpoints import load_weights, read_checkpoint_config
from seg2med.models.baselines import BaselineConfig, build_network
from seg2med.training import BaselineTrainConfig, train_baseline, train_segmenter
from seg2med.inference.segment import load_segmenter, segment_volume
from seg2med.training.segmenter import SegmenterConfig, default_train_config

GEN = {"channels": [8, 16, 32]}  # AttentionUnet, strides 2, 2
DISC = {"channels": 8}
STEPS = 30


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (conftest.one_thread)."""


def _prepare(root: Path, n: int, labels: bool) -> Path:
    cfg = PrepareConfig(modality="ct", spacing=8.0, size=32, split=(0.6, 0.4, 0.0), sequence={"name": "ct"}, scheme="total")
    prepare_dataset(phantom_subjects(n, gain=0.8, offset_hu=100.0, labels=labels), root, cfg)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 phantom subjects, 32x32 axial slices; image = 0.8 * prior + 100 HU + noise (so the prior map is not the identity)."""
    return _prepare(tmp_path_factory.mktemp("baselines") / "ds", 3, labels=True)


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lv = seg2med.make_phantom(seed=7, spacing=8.0, slices=4, size=32)
    return save_volume(lv.volume, tmp_path_factory.mktemp("labels") / "ph.nii.gz")


def _cfg(**kw) -> BaselineTrainConfig:
    base = {"steps": STEPS, "batch": 4, "lr": 2e-3, "ckpt_every": 0, "val_every": STEPS, "log_every": 1, "seed": 1,
            "val_slices": 2}
    return BaselineTrainConfig(**{**base, **kw})


def _model(method: str, **kw) -> BaselineConfig:
    return BaselineConfig.create(method, "tiny", generator=GEN, discriminator=None if method == "unet" else DISC, **kw)


@pytest.fixture(scope="module")
def runs(dataset: Path) -> dict[str, tuple[Path, dict]]:
    out = {}
    for method in ("unet", "pix2pix", "cyclegan"):
        run = dataset.parent / method
        out[method] = (run, train_baseline(dataset, run, method, _model(method), _cfg(), progress=False))
    return out


@pytest.mark.parametrize("method", ["unet", "pix2pix", "cyclegan"])
def test_baseline_trains_and_writes_run_folder(runs, method: str) -> None:
    run, summary = runs[method]
    losses = summary["losses"]
    assert len(losses) == STEPS and summary["step"] == STEPS
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    cfg = read_checkpoint_config(run)
    assert cfg["method"] == method
    nets = {"unet": {"generator"}, "pix2pix": {"generator", "discriminator"},
            "cyclegan": {"generator", "generator_inverse", "discriminator_image", "discriminator_prior"}}[method]
    assert set(cfg["model"]["networks"]) == nets
    assert cfg["model"]["networks"]["generator"]["class"] == "AttentionUnet"
    assert cfg["model"]["networks"]["generator"]["args"]["channels"] == [8, 16, 32]
    assert cfg["weights"]["model"] == "model.safetensors" and cfg["weights"]["ema"] == "ema.safetensors"
    for name, spec in cfg["model"]["networks"].items():  # every network rebuilds from config.json and loads strictly
        file = cfg["weights"]["model" if name == "generator" else name]
        build_network(spec).load_state_dict(load_weights(run / file), strict=True)
    data = cfg["data"]
    assert data["modality"] == "ct" and data["sequence"] == {"name": "ct"} and data["size"] == 32
    assert data["image_normalization"]["low"] == -1000.0 and data["train"]["slices"] == 12
    tr = cfg["training"]
    assert tr["step"] == STEPS and tr["config"]["lambda_l1"] == 100.0 and tr["val_loss"] > 0
    assert tr["config"]["beta1"] == (0.9 if method == "unet" else 0.5)
    assert (run / "val" / f"step_{STEPS:06d}.png").stat().st_size > 1000
    assert (run / "log.csv").read_text().count("\n") == STEPS + 1


@pytest.mark.parametrize("method", ["unet", "pix2pix", "cyclegan"])
def test_baseline_generates_on_the_input_grid(runs, labels_file: Path, tmp_path: Path, capsys, monkeypatch, method: str) -> None:
    run, _ = runs[method]
    out = tmp_path / f"{method}.nii.gz"
    res = run_cli(["generate", "--labels", labels_file, "--out", out, "--model", run, "--batch", "3", "--device", "cpu"],
                  capsys, monkeypatch)
    assert res.code == 0, res.err
    src, img = load_volume(labels_file, kind="labels"), load_volume(out)
    assert img.shape == src.shape and np.array_equal(img.affine, src.affine)
    arr = img.array
    assert np.isfinite(arr).all() and arr[src.array == 0].max() == pytest.approx(-1000.0)
    assert -1000.0 <= arr.min() and arr.max() <= 1000.0 and arr[src.array != 0].std() > 0
    meta = json.loads((tmp_path / f"{method}.json").read_text())
    assert meta["method"] == method and meta["steps"] is None and meta["sampler"] is None


def test_unet_same_seed_same_weights_and_exact_resume(dataset: Path, tmp_path: Path) -> None:
    a = train_baseline(dataset, tmp_path / "A", "unet", _model("unet"), _cfg(steps=4, ckpt_every=2, val_every=0),
                       progress=False)
    b = train_baseline(dataset, tmp_path / "B", "unet", _model("unet"), _cfg(steps=4, ckpt_every=2, val_every=0),
                       progress=False)
    train_baseline(dataset, tmp_path / "C", "unet", _model("unet"), _cfg(steps=2, val_every=0), progress=False)
    c = train_baseline(dataset, tmp_path / "C", "unet", _model("unet"), _cfg(steps=4, val_every=0), resume=True,
                       progress=False)
    assert a["losses"] == b["losses"] and c["resumed_from"] == 2 and c["losses"] == a["losses"][2:]
    for other in ("B", "C"):
        for name in ("model.safetensors", "ema.safetensors"):
            wa, wo = load_weights(tmp_path / "A" / name), load_weights(tmp_path / other / name)
            assert wa.keys() == wo.keys() and all(torch.equal(wa[k], wo[k]) for k in wa), (other, name)
    d = train_baseline(dataset, tmp_path / "D", "unet", _model("unet"), _cfg(steps=4, seed=2, val_every=0), progress=False)
    assert d["losses"] != a["losses"]
    with pytest.raises(ConfigError, match="training settings differ"):
        train_baseline(dataset, tmp_path / "C", "unet", _model("unet"), _cfg(steps=6, lr=1e-4), resume=True, progress=False)
    with pytest.raises(ConfigError, match="method 'unet', not 'pix2pix'"):
        train_baseline(dataset, tmp_path / "C", "pix2pix", _model("pix2pix"), _cfg(steps=6), resume=True, progress=False)
    with pytest.raises(ConfigError, match="method 'unet', not 'ddpm'"):
        seg2med.training.train(dataset, tmp_path / "C", resume=True, progress=False)


def test_prior_method_is_the_documented_affine_map(dataset: Path, labels_file: Path, tmp_path: Path, capsys,
                                                    monkeypatch) -> None:
    run = tmp_path / "prior"
    res = run_cli(["train", "--method", "prior", "--data", dataset, "--out", run], capsys, monkeypatch)
    assert res.code == 0, res.err
    cfg = read_checkpoint_config(run)
    assert cfg["method"] == "prior" and cfg["weights"] == {} and cfg["data"]["sequence"] == {"name": "ct"}
    a, b = cfg["model"]["scale"], cfg["model"]["offset"]
    # image = 0.8 * prior + 100 HU + noise, both in the CT window [-1000, 1000] -> image01 ~ 0.8 prior01 + 0.15
    assert a == pytest.approx(0.8, abs=0.05) and b == pytest.approx(0.15, abs=0.05)
    assert (run / "val" / "step_000000.png").is_file()
    gen = seg2med.generate(labels_file, model=run, device="cpu")
    assert gen.metadata["method"] == "prior"
    src = load_volume(labels_file, kind="labels")
    out, prior = gen.samples[0].array, gen.prior.array
    assert out.shape == src.shape and np.array_equal(gen.samples[0].affine, src.affine)
    body = np.argwhere(src.array != 0)
    for v in map(tuple, body[:: max(1, len(body) // 50)]):
        p01 = np.clip((prior[v] + 1000.0) / 2000.0, 0.0, 1.0)
        expected = np.clip(a * p01 + b, 0.0, 1.0) * 2000.0 - 1000.0
        assert out[v] == pytest.approx(expected, abs=1e-2), v
    res = run_cli(["train", "--method", "prior", "--data", dataset, "--out", run], capsys, monkeypatch)
    assert res.code != 0 and "--overwrite" in " ".join(res.err.split())
    res = run_cli(["generate", "--labels", labels_file, "--out", tmp_path / "tri.nii.gz", "--model", run, "--tri-planar"],
                  capsys, monkeypatch)  # tri-planar sampling is a diffusion sampler
    assert res.code != 0 and "--tri-planar needs a diffusion model" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "tri.nii.gz").exists()


def test_cli_train_method_unet_and_mixing_refused(dataset: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    yaml_cfg = tmp_path / "unet.yaml"
    yaml_cfg.write_text("method: unet\nmodel:\n  preset: tiny\n  generator:\n    channels: [8, 16, 32]\n"
                        "training:\n  log_every: 1\n")
    run = tmp_path / "run"
    res = run_cli(["train", "--config", yaml_cfg, "--data", dataset, "--out", run, "--steps", "2", "--batch", "2",
                   "--val-every", "2", "--device", "cpu"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert read_checkpoint_config(run)["method"] == "unet"
    res = run_cli(["train", "--data", dataset, "--out", run, "--steps", "3", "--resume", "--device", "cpu"], capsys, monkeypatch)
    assert res.code == 0, res.err  # the run's method, networks and settings
    assert read_checkpoint_config(run)["training"]["step"] == 3
    for args, needle in ((["--method", "ddpm", "--resume"], "method 'unet', not 'ddpm'"),
                         (["--method", "pix2pix", "--resume"], "method 'unet', not 'pix2pix'"),
                         (["--method", "unet", "--scheduler", "rflow", "--overwrite"], "only apply to --method ddpm"),
                         (["--method", "gan"], "unknown method 'gan'")):
        res = run_cli(["train", "--data", dataset, "--out", run, "--steps", "4", *args], capsys, monkeypatch)
        assert res.code != 0 and "Traceback" not in res.err and needle in " ".join(res.err.split()), (args, res.err)
    assert read_checkpoint_config(run)["training"]["step"] == 3


# --------------------------------------------------------------------------- segmenter
@pytest.fixture(scope="module")
def segmenter_run(dataset: Path) -> tuple[Path, dict]:
    run = dataset.parent / "seg"
    cfg = default_train_config(steps=STEPS, batch=4, lr=3e-3, ckpt_every=0, val_every=STEPS, log_every=1, seed=0)
    return run, train_segmenter(dataset, run, SegmenterConfig(channels=(8, 16, 32)), cfg, progress=False)


def test_segmenter_trains_and_segments_on_the_input_grid(segmenter_run, dataset: Path) -> None:
    run, summary = segmenter_run
    losses = summary["losses"]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    cfg = read_checkpoint_config(run)
    assert cfg["method"] == "segmenter" and cfg["model"]["network"]["class"] == "UNet"
    classes = cfg["model"]["classes"]
    assert classes == summary["classes"] and classes[0] == 0 and classes == sorted(classes) and len(classes) > 5
    assert cfg["model"]["network"]["args"]["out_channels"] == len(classes)
    assert cfg["model"]["class_names"]["0"] == "background" and cfg["weights"] == {"model": "model.safetensors"}
    seg = load_segmenter(run)
    lv = seg2med.make_phantom(seed=5, spacing=6.0, slices=5, size=40)
    ct = seg2med.simulate_prior(lv, "ct").volume
    out = segment_volume(ct, seg, batch=3)
    assert out.shape == ct.shape and np.array_equal(out.affine, ct.affine)
    assert np.issubdtype(out.array.dtype, np.integer) and set(np.unique(out.array)) <= set(classes)
    assert (out.array[lv.volume.array == 0] == 0).mean() > 0.95 and (out.array[lv.volume.array != 0] != 0).mean() > 0.5
    feats = seg.features(np.random.default_rng(0).random((3, 30, 36)).astype(np.float32))
    assert feats.shape == (3, 32) and np.isfinite(feats).all()
    with pytest.raises(InputError, match="segmenter run"):
        load_model(run)


def test_segmenter_needs_labels(tmp_path: Path, capsys, monkeypatch) -> None:
    ds = _prepare(tmp_path / "nolabels", 2, labels=False)
    with pytest.raises(InputError, match="stores no labels"):
        train_segmenter(ds, tmp_path / "seg", train_cfg=default_train_config(steps=1), progress=False)
    res = run_cli(["train-segmenter", "--data", ds, "--out", tmp_path / "seg2", "--steps", "1"], capsys, monkeypatch)
    assert res.code != 0 and "Traceback" not in res.err and "stores no labels" in " ".join(res.err.split())
    assert not (tmp_path / "seg2").exists()


def test_baselines_sample_a_wide_field_of_view_on_a_grown_canvas(runs, tmp_path: Path) -> None:
    # 50 px at the runs' 8 mm: wider than their 32 px slices; the canvas grows to the generator's down-sampling
    # multiple (4 for channels (8, 16, 32)) instead of cropping the body
    lv = seg2med.make_phantom(seed=7, spacing=8.0, slices=2, size=50)
    run, _ = runs["unet"]
    res = seg2med.generate(lv, model=run, device="cpu", batch=2)
    assert res.metadata["slice_size"] == [52, 52]
    vol, body = res.samples[0].array, lv.volume.array != 0
    assert vol.shape == lv.volume.shape and np.isfinite(vol).all()
    edge = body & (np.abs(np.arange(50) - 24.5) > 17)[:, None, None]  # body beyond the central 32 px
    assert edge.any() and np.mean(vol[edge] <= -999.0) < 0.5

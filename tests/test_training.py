"""Training: the loss falls, checkpoints reload exactly, kill-and-resume is exact, torchrun DDP, clean CLI errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from seg2med.data import PrepareConfig, prepare_dataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.errors import ConfigError, OutputExistsError
from seg2med.io.checkpoints import load_weights, read_checkpoint_config
from seg2med.models import ModelConfig, SchedulerConfig, build_model
from seg2med.training import TrainConfig, model_config_from_run, resolve_configs, train

TINY = {"channels": (8, 16, 16, 16), "norm_num_groups": 8, "num_head_channels": 8}
REPO = Path(__file__).resolve().parents[1]


def _tiny() -> ModelConfig:
    return ModelConfig.from_preset("tiny", **TINY)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 phantom subjects (32x32 axial slices, 6 each): CT prior + noise as the 'image'; 2 train, 1 val."""
    out = tmp_path_factory.mktemp("train") / "ds"
    prepare_dataset(phantom_subjects(3), out, PrepareConfig(modality="ct", spacing=8.0, size=32, split=(0.6, 0.4, 0.0)))
    return out


@pytest.fixture(scope="module")
def trained(dataset: Path) -> tuple[Path, dict]:
    out = dataset.parent / "run"
    cfg = TrainConfig(steps=40, batch=4, lr=1e-3, ckpt_every=20, val_every=40, log_every=1, val_steps=10, seed=3)
    return out, train(dataset, out, _tiny(), SchedulerConfig(), cfg, progress=False)


def _log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_loss_falls_and_run_folder(trained: tuple[Path, dict]) -> None:
    run, summary = trained
    losses = summary["losses"]
    assert len(losses) == 40 and summary["step"] == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    cfg = read_checkpoint_config(run)
    assert cfg["method"] == "ddpm" and cfg["weights"] == {"model": "model.safetensors", "ema": "ema.safetensors"}
    assert ModelConfig.from_dict(cfg["model"]) == _tiny() and SchedulerConfig.from_dict(cfg["scheduler"]) == SchedulerConfig()
    data = cfg["data"]
    assert data["modality"] == "ct" and data["size"] == 32 and data["spacing"] == 8.0 and data["axes"] == ["axial"]
    assert data["train"] == {"subjects": ["s0", "s2"], "slices": 12} and data["val"] == {"subjects": ["s1"], "slices": 6}
    assert data["image_normalization"]["low"] == -1000.0 and data["image_normalization"]["high"] == 1000.0
    tr = cfg["training"]
    assert tr["step"] == 40 and tr["config"]["steps"] == 40 and tr["device"] == "cpu" and tr["precision"] == "fp32"
    assert tr["seconds"] > 0 and len(tr["last_losses"]) == 10 and tr["val_loss"] > 0
    rows = _log(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 41)) and rows[-1]["val_loss"] and not rows[0]["val_loss"]
    assert (run / "val" / "step_000040.png").stat().st_size > 1000
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"step_000020", "step_000040"}
    assert json.loads((run / "state" / "progress.json").read_text())["step"] == 40
    assert [p.name for p in (run / "state").glob("step_*")] == ["step_000040"]


def test_saved_weights_reload_identically(trained: tuple[Path, dict]) -> None:
    from seg2med.inference.generate import load_model

    run, _ = trained
    model_cfg, _ = model_config_from_run(read_checkpoint_config(run))
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    outs = []
    for folder in (run, run / "checkpoints" / "step_000040"):
        net = build_model(model_cfg)
        net.load_state_dict(load_weights(folder / "model.safetensors"), strict=True)
        net.to(memory_format=torch.channels_last)  # as load_model runs it (same kernels -> bit-identical)
        with torch.no_grad():
            outs.append(net.eval()(x, timesteps=t))
    loaded = load_model(run, ema=False).network
    ref = load_weights(run / "model.safetensors")
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    with torch.no_grad():
        outs.append(loaded(x, timesteps=t))
        ema = load_model(run, ema=True).network(x, timesteps=t)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert not torch.equal(outs[0], ema)


def test_bf16_autocast_trains_on_cpu(dataset: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    """The bf16 autocast path (what `--precision auto` picks on a bf16 GPU) runs on CPU too: the loss
    falls, the weights stay fp32, the run says bf16, and the numbers differ from the fp32 run of the
    same seed (so autocast really was on). fp16 needs CUDA and is refused with a clear error."""
    base = dict(steps=40, batch=4, lr=1e-3, ckpt_every=20, val_every=40, log_every=1, val_steps=10, seed=3)
    run = tmp_path / "bf16"
    summary = train(dataset, run, _tiny(), SchedulerConfig(), TrainConfig(**base, precision="bf16"), progress=False)
    losses = summary["losses"]
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    assert losses != trained[1]["losses"]
    assert read_checkpoint_config(run)["training"]["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in load_weights(run / "model.safetensors").values())
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(dataset, tmp_path / "fp16", _tiny(), SchedulerConfig(), TrainConfig(**base, precision="fp16"), progress=False)
    assert not (tmp_path / "fp16").exists()


def test_resume_is_exact(dataset: Path, tmp_path: Path) -> None:
    def cfg(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch=4, lr=1e-3, ckpt_every=2, val_every=2, log_every=1, val_steps=5,
                           augment_flips=True, intensity_jitter=0.1)

    sched = SchedulerConfig(prediction_type="v_prediction")
    a = train(dataset, tmp_path / "A", _tiny(), sched, cfg(6), progress=False)
    train(dataset, tmp_path / "B", _tiny(), sched, cfg(3), progress=False)
    b = train(dataset, tmp_path / "B", _tiny(), sched, cfg(6), resume=True, progress=False)
    assert b["resumed_from"] == 3 and b["step"] == 6 and b["losses"] == a["losses"][3:]
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_weights(tmp_path / "A" / name), load_weights(tmp_path / "B" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert json.loads((tmp_path / "B" / "state" / "progress.json").read_text())["step"] == 6
    assert read_checkpoint_config(tmp_path / "B")["training"]["step"] == 6
    assert [r["loss"] for r in _log(tmp_path / "A")] == [r["loss"] for r in _log(tmp_path / "B")]
    with pytest.raises(ConfigError, match="training settings differ"):
        train(dataset, tmp_path / "B", _tiny(), sched, TrainConfig(steps=8, batch=4, lr=1e-4), resume=True, progress=False)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(dataset, tmp_path / "C", _tiny(), sched, cfg(6), resume=True, progress=False)
    with pytest.raises(OutputExistsError):
        train(dataset, tmp_path / "A", _tiny(), sched, cfg(6), progress=False)


def test_torchrun_two_processes(dataset: Path, tmp_path: Path) -> None:
    yaml_cfg = tmp_path / "train.yaml"
    yaml_cfg.write_text("model:\n  preset: tiny\n  channels: [8, 16, 16, 16]\n  norm_num_groups: 8\n  num_head_channels: 8\n"
                        "training:\n  log_every: 1\n  val_steps: 5\n")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seg2med", "train",
           "--data", str(dataset), "--out", str(out), "--config", str(yaml_cfg), "--steps", "4", "--batch", "4",
           "--ckpt-every", "0", "--val-every", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [".seg2med-output.json", "checkpoints/step_000004/config.json", "checkpoints/step_000004/ema.safetensors",
                     "checkpoints/step_000004/model.safetensors", "config.json", "ema.safetensors", "log.csv",
                     "model.safetensors", "state/progress.json", "state/step_000004/optimizer.json",
                     "state/step_000004/optimizer.safetensors", "val/step_000004.png"]
    assert [int(r["step"]) for r in _log(out)] == [1, 2, 3, 4]  # one writer
    cfg = read_checkpoint_config(out)
    assert cfg["training"]["world_size"] == 2 and cfg["training"]["step"] == 4 and cfg["model"]["channels"] == [8, 16, 16, 16]


def _clean_error(res, *needles: str) -> None:
    assert res.code != 0
    assert "Traceback" not in res.err + res.out
    text = " ".join(res.err.split())
    for n in needles:
        assert n in text, (n, res.err)


def test_cli_bad_inputs(trained: tuple[Path, dict], tmp_path: Path, capsys, monkeypatch) -> None:
    run, _ = trained
    dataset = run.parent / "ds"
    out = tmp_path / "run"
    res = run_cli(["train", "--data", tmp_path / "nope", "--out", out, "--preset", "tiny"], capsys, monkeypatch)
    _clean_error(res, "nope", "dataset folder not found")
    assert not out.exists()
    raw = tmp_path / "niftis"  # a folder of images, not a prepared dataset
    raw.mkdir()
    res = run_cli(["train", "--data", raw, "--out", out, "--preset", "tiny"], capsys, monkeypatch)
    _clean_error(res, "niftis", "not a prepared slice dataset", "seg2med prepare")
    assert not out.exists()
    before = (run / "config.json").read_text()
    res = run_cli(["train", "--data", dataset, "--out", run, "--steps", "2"], capsys, monkeypatch)
    _clean_error(res, "training run", "--resume", "--overwrite")
    assert (run / "config.json").read_text() == before
    res = run_cli(["train", "--data", dataset, "--out", out, "--resume"], capsys, monkeypatch)
    _clean_error(res, "no checkpoint to resume")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  stpes: 3\n")
    res = run_cli(["train", "--data", dataset, "--out", out, "--config", bad], capsys, monkeypatch)
    _clean_error(res, f"{bad}: training config: unknown keys", "stpes")  # the error names the file
    for text, needle in [("model: [8, 16\n", "not valid YAML (line 2, column 1: "),
                         ("a: 1\n  b: 2\n", "not valid YAML (line 2, column 4: mapping values are not allowed here)"),
                         ("method: unet\nmodel:\n  chanels: 3\n", "model config of unet: unknown keys ['chanels']"),
                         ("training:\n  lr: -1\n", "training: lr must be a finite number > 0, got -1")]:
        bad.write_text(text)
        res = run_cli(["train", "--data", dataset, "--out", out, "--config", bad], capsys, monkeypatch)
        _clean_error(res, f"{bad}: {needle}")
    res = run_cli(["train", "--data", dataset, "--out", out, "--prediction", "x0"], capsys, monkeypatch)
    _clean_error(res, "--prediction", "x0")
    assert not out.exists()


def test_resolve_configs_precedence(trained: tuple[Path, dict]) -> None:
    blocks = {"model": {"preset": "tiny"}, "scheduler": {"kind": "rflow"}, "training": {"batch": 2, "lr": 1e-3}}
    m, s, t = resolve_configs(None, blocks, model={"neighbours": 1}, training={"lr": 5e-4})
    assert m.channels == (16, 32, 64, 64) and m.neighbours == 1 and s.kind == "rflow" and (t.batch, t.lr) == (2, 5e-4)
    m, s, t = resolve_configs(base=read_checkpoint_config(trained[0]), training={"steps": 80})  # resume: the run's settings
    assert m == _tiny() and t.steps == 80 and t.lr == 1e-3 and t.seed == 3
    with pytest.raises(ConfigError, match="unknown blocks"):
        resolve_configs(blocks={"optimizer": {}})


def test_a_2d_run_starts_a_2_5d_one_that_computes_exactly_what_the_2d_one_computed(trained: tuple[Path, dict]) -> None:
    """--init-from with more --neighbours inflates the input convolution: the new neighbour channels start at zero,
    so before any training the 2.5D network's output is the 2D one's, whatever the neighbouring priors."""
    import hashlib

    from seg2med.training.warmstart import init_from_run

    run, _ = trained
    net2 = build_model(_tiny()).eval()
    net2.load_state_dict(load_weights(run / "ema.safetensors"))
    cfg25 = ModelConfig.from_preset("tiny", **TINY, neighbours=1)
    net25 = build_model(cfg25).eval()
    record = init_from_run(net25, run, cfg25, SchedulerConfig())
    assert record["neighbours"] == [0, 1] and len(record["inflated"]) == 1
    assert record["sha256"] == hashlib.sha256((run / "ema.safetensors").read_bytes()).hexdigest()
    g = torch.Generator().manual_seed(0)
    x, below, centre, above = (torch.randn((2, 1, 32, 32), generator=g) for _ in range(4))
    t = torch.tensor([10, 700])
    with torch.no_grad():
        out2 = net2(torch.cat([x, centre], 1), timesteps=t)
        out25 = net25(torch.cat([x, below, centre, above], 1), timesteps=t)
    assert float(out2.abs().mean()) > 1e-3
    torch.testing.assert_close(out25, out2, atol=1e-5, rtol=1e-5)


def test_init_from_trains_from_the_source_weights_records_them_and_refuses_other_networks(
        dataset: Path, trained: tuple[Path, dict], tmp_path: Path, capsys, monkeypatch) -> None:
    from seg2med.training.warmstart import check_compatible

    run, _ = trained
    out = tmp_path / "warm"
    cfg = TrainConfig(steps=2, batch=4, lr=1e-3, ckpt_every=0, val_every=0, log_every=1, seed=3, init_from=str(run))
    summary = train(dataset, out, ModelConfig.from_preset("tiny", **TINY, neighbours=1), SchedulerConfig(), cfg,
                    progress=False)
    scratch = train(dataset, tmp_path / "scratch", ModelConfig.from_preset("tiny", **TINY, neighbours=1),
                    SchedulerConfig(), TrainConfig(**{**cfg.to_dict(), "init_from": ""}), progress=False)
    assert summary["losses"][0] < 0.5 * scratch["losses"][0]  # the first step already has the trained network
    stored = read_checkpoint_config(out)
    assert stored["training"]["init_from"]["run"] == str(run.resolve())
    assert stored["training"]["config"]["init_from"] == str(run)
    # the CLI: another network, a baseline method, a run with more neighbours: one-line errors, no run folder
    res = run_cli(["train", "--data", dataset, "--out", tmp_path / "bad", "--preset", "tiny", "--init-from", run],
                  capsys, monkeypatch)
    _clean_error(res, "--init-from", "its model has channels")
    res = run_cli(["train", "--data", dataset, "--out", tmp_path / "bad", "--method", "unet", "--init-from", run],
                  capsys, monkeypatch)
    _clean_error(res, "--init-from", "method unet")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="as many or fewer"):
        check_compatible(out, read_checkpoint_config(out), _tiny(), SchedulerConfig())

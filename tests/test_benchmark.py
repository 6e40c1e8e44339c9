"""`seg2med benchmark`: every method on one time budget -> test-split volumes -> report; and the time budget itself."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_cli

from seg2med.data import PrepareConfig, prepare_dataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.io.checkpoints import read_checkpoint_config
from seg2med.training import train_method


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """4 phantom subjects (2 train, 1 val, 1 test), 32 x 32 axial slices, with labels."""
    subjects = phantom_subjects(4, gain=0.8, offset_hu=100.0, labels=True)
    root = tmp_path_factory.mktemp("bench") / "ds"
    cfg = PrepareConfig(modality="ct", spacing=8.0, size=32, split=(0.5, 0.25, 0.25), sequence={"name": "ct"}, scheme="total")
    prepare_dataset(subjects, root, cfg)
    return root


@pytest.mark.parametrize("method", ["ddpm", "unet"])
def test_time_budget_stops_training_and_checkpoints_the_last_step(dataset, tmp_path, method):
    out = tmp_path / method
    res = train_method(method, dataset, out, preset="tiny", progress=False,
                       training={"steps": 500, "batch": 2, "max_minutes": 1e-9, "ckpt_every": 0, "val_every": 0})
    assert res["step"] == 1  # the budget is spent after the first step
    cfg = read_checkpoint_config(out)
    assert cfg["training"]["step"] == 1 and cfg["training"]["config"]["max_minutes"] == 1e-9
    assert (out / "model.safetensors").is_file()


def test_benchmark_trains_every_method_generates_the_test_split_and_reports(dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    res = run_cli(["benchmark", "--data", dataset, "--out", out, "--budget", "5", "--max-steps", "2", "--batch", "2",
                   "--sample-steps", "2", "--segmenter-budget", "5"], capsys, monkeypatch)
    assert res.code == 0, res.err
    result = json.loads((out / "benchmark.json").read_text())
    assert set(result["training"]) == {"ddpm", "unet", "pix2pix", "cyclegan", "prior", "segmenter"}
    for m in ("ddpm", "unet", "pix2pix", "cyclegan", "segmenter"):
        assert result["training"][m]["steps"] == 2  # the step cap, well inside the budget
    (subject,) = result["subjects"]
    ref = nib.load(str(out / "test" / "reference" / f"{subject}.nii.gz"))
    for m in ("ddpm", "unet", "pix2pix", "cyclegan", "prior"):
        gen = nib.load(str(out / "test" / m / f"{subject}.nii.gz"))
        assert gen.shape == ref.shape and np.allclose(gen.affine, ref.affine)
        assert json.loads((out / "test" / m / f"{subject}.json").read_text())["method"] == m
    table = (out / "benchmark.md").read_text()
    for m in ("ddpm", "unet", "pix2pix", "cyclegan", "prior"):
        assert f"| {m} | " in table
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["reference_method"] == "ddpm" and summary["subjects"] == 1
    for m in ("unet", "pix2pix", "cyclegan", "prior"):
        assert summary["methods"][m]["ssim"]["p_vs_ddpm"] == pytest.approx(1.0)  # one subject: no evidence either way
        assert "frechet_seg" in summary["methods"][m]
    assert (out / "report" / "dice.csv").is_file() and (out / "report" / "figures" / "dice_heatmap.png").is_file()
    assert "Only 1 test subject" in (out / "report" / "report.html").read_text()
    # a second run into the same folder is refused without --overwrite
    res = run_cli(["benchmark", "--data", dataset, "--out", out, "--max-steps", "1"], capsys, monkeypatch)
    assert res.code != 0 and "--overwrite" in res.err and "Traceback" not in res.err


def test_benchmark_rejects_unknown_methods(dataset, tmp_path, capsys, monkeypatch):
    res = run_cli(["benchmark", "--data", dataset, "--out", tmp_path / "b", "--methods", "ddpm,gan"], capsys, monkeypatch)
    assert res.code != 0 and "gan" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "b").exists()


def test_benchmark_refuses_an_empty_split_before_training(dataset, tmp_path):
    """A split without subjects fails at once with a one-line error, not after the whole training budget."""
    from seg2med.errors import InputError
    from seg2med.evaluation.benchmark import BenchmarkConfig, benchmark

    with pytest.raises(InputError, match="no subject in the 'holdout' split"):
        benchmark(dataset, tmp_path / "b", BenchmarkConfig(methods=("prior",), split="holdout"))
    assert not (tmp_path / "b").exists()


def test_evaluate_split_scores_the_model_against_the_prior_on_the_held_out_subject(dataset, tmp_path):
    """The model-card evaluation walks the test split like the benchmark (`SplitPlan.generate`): one row per
    subject on its original grid, pooled = voxel-weighted mean, and the fitted prior map (image ~ 0.8 x
    prior + 100 HU here) is much closer to the real image than the unmapped prior."""
    from seg2med.inference import load_model
    from seg2med.inference.split import plan_split
    from seg2med.evaluation.heldout import evaluate_split

    train_method("prior", dataset, tmp_path / "prior", progress=False)
    lm = load_model(tmp_path / "prior")
    res = evaluate_split(lm, dataset, "test")
    (row,) = res["subjects"]
    assert row["subject"] == "s3" and row["slices"] == 6 and row["voxels"] > 0
    assert res["pooled"]["model_ssim"] == pytest.approx(row["model_ssim"])
    assert row["model_mae_hu"] < 0.5 * row["prior_mae_hu"] and row["model_ssim"] > row["prior_ssim"]
    assert 0 < row["model_ssim"] <= 1 and row["model_psnr"] > row["prior_psnr"]
    (case,) = list(plan_split(dataset, "test").generate({"prior": lm}))
    gen, ref = case.results["prior"].samples[0], case.subject.image
    assert gen.shape == ref.shape and np.array_equal(gen.affine, ref.affine)

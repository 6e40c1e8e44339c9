"""Residual parameterisation (``model.residual``): the diffusion generates (image - prior) / 2, so a network that
predicts no change gives back the prior, where an image-space model gives a flat image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seg2med
from seg2med.data import PrepareConfig, prepare_dataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.errors import ConfigError
from seg2med.inference import load_model
from seg2med.io.checkpoints import read_checkpoint_config
from seg2med.models.config import ModelConfig
from seg2med.training import train_method


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("residual") / "ds"
    prepare_dataset(phantom_subjects(3, labels=True), out, PrepareConfig(modality="ct", spacing=8.0, size=32,
                                                                         split=(0.6, 0.4, 0.0), sequence={"name": "ct"},
                                                                         scheme="total"))
    return out


@settings(max_examples=25, deadline=None)
@given(k=st.integers(0, 2), seed=st.integers(0, 2**31 - 1))
def test_residual_sample_space_is_invertible_and_stays_in_the_clip_range(k, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = ModelConfig.from_preset("tiny", neighbours=k, residual=True)
    cond = torch.rand((2, 1 + 2 * k, 8, 8), generator=g) * 2 - 1
    image = torch.rand((2, 1, 8, 8), generator=g) * 2 - 1
    x = cfg.to_sample(image, cond)
    assert float(x.abs().max()) <= 1.0  # the schedulers clip samples to [-1, 1]
    torch.testing.assert_close(cfg.from_sample(x, cond), image)
    torch.testing.assert_close(cfg.to_sample(cond[:, k : k + 1], cond), cfg.prior_start(cond))
    assert float(cfg.prior_start(cond).abs().max()) == 0.0
    plain = ModelConfig.from_preset("tiny", neighbours=k)
    assert plain.to_sample(image, cond) is image and plain.from_sample(image, cond) is image
    torch.testing.assert_close(plain.prior_start(cond), cond[:, k : k + 1])


def test_residual_must_be_a_boolean():
    with pytest.raises(ConfigError, match="model: residual must be true or false"):
        ModelConfig.from_preset("tiny", residual="yes")


def _zeroed(run: Path):
    """The run's model with every weight zero: the network predicts 0 (the 'sample' target) at every step."""
    model = load_model(run, device="cpu")
    with torch.no_grad():
        for p in model.network.parameters():
            p.zero_()
    return model


@pytest.mark.parametrize("residual", [True, False])
def test_a_residual_model_that_predicts_no_change_returns_the_prior(dataset, tmp_path, residual):
    run = tmp_path / "run"
    train_method("ddpm", dataset, run, preset="tiny", model={"residual": residual},
                 scheduler={"prediction_type": "sample"},
                 training={"steps": 2, "batch": 2, "seed": 0, "ckpt_every": 0, "val_every": 0}, progress=False)
    assert read_checkpoint_config(run)["model"]["residual"] is residual
    labels = seg2med.make_phantom(seed=3, spacing=8.0, slices=4, size=32)
    res = seg2med.generate(labels, "ct", model=_zeroed(run), steps=4, sampler="ddim", seed=0, device="cpu")
    body = labels.volume.array > 0
    out, prior = res.samples[0].array[body], res.prior.array[body]
    mae = float(np.abs(out - prior).mean())
    if residual:  # the prior itself, up to the slice resampling round trip (8 mm slices of an 8 mm grid)
        assert mae < 5.0, mae
    else:  # x0 = 0 is 0 HU everywhere inside the body
        assert mae > 100.0 and abs(float(np.median(out))) < 1.0, mae
    # a prior-anchored start of a residual model starts from the prior too
    if residual:
        anchored = seg2med.generate(labels, "ct", model=_zeroed(run), steps=4, sampler="ddim", seed=0, device="cpu",
                                    strength=0.5)
        assert float(np.abs(anchored.samples[0].array[body] - prior).mean()) < 5.0


def test_a_trained_residual_run_resumes_as_residual(dataset, tmp_path):
    run = tmp_path / "run"
    training = {"steps": 2, "batch": 2, "seed": 0, "ckpt_every": 1, "val_every": 0}
    train_method("ddpm", dataset, run, preset="tiny", model={"residual": True}, training=training, progress=False)
    base = read_checkpoint_config(run)
    with pytest.raises(ConfigError, match="residual"):
        train_method("ddpm", dataset, run, preset="tiny", model={"residual": False}, training={**training, "steps": 3},
                     base=base, resume=True, progress=False)
    summary = train_method("ddpm", dataset, run, training={**training, "steps": 3}, base=base, resume=True, progress=False)
    assert summary["step"] == 3 and read_checkpoint_config(run)["model"]["residual"] is True

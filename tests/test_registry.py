"""The method registry: one entry per method drives the CLI, training, inference and evaluation.

A new method added as ONE registry entry (its recipe and loader live in this test module) is trained
by ``train_method``, loaded by ``load_model`` and generates through ``seg2med.generate`` — no other
file knows it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from seg2med.models import registry


def test_every_entry_resolves_its_recipe_and_loader_and_the_generators_are_the_entries_with_a_loader():
    for entry in registry.REGISTRY.values():
        assert callable(entry.part("recipe"))
        if entry.generates_images:
            assert callable(entry.part("loader"))
    assert registry.generators() == ("ddpm", "unet", "pix2pix", "cyclegan", "prior")
    assert registry.BASELINE_METHODS == ("unet", "pix2pix", "cyclegan")
    assert registry.REGISTRY["ddpm"].takes_scheduler and not registry.REGISTRY["unet"].takes_scheduler
    with pytest.raises(Exception, match="unknown method 'segmenter'"):
        registry.get_method("segmenter")  # not an image generator: not trainable by train --method


def test_cli_help_and_benchmark_list_the_registry():
    from typer.testing import CliRunner

    from seg2med.cli import app
    from seg2med.evaluation.benchmark import ALL_METHODS

    assert ALL_METHODS == registry.GENERATORS
    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert " | ".join(registry.GENERATORS) in out


# --------------------------------------------------------------------------- a method added in one place
def _halfway_recipe(method: str, preset=None, blocks=None, model=None, scheduler=None, training=None, base=None):
    """A one-pass method: the image is half-way between the prior and mid-grey (a deliberately simple map)."""
    from seg2med.io.checkpoints import write_checkpoint_config
    from seg2med.training.config import TrainConfig
    from seg2med.training.loop import Recipe

    def fit(ctx) -> dict[str, Any]:
        write_checkpoint_config(ctx.out, {"method": method, "model": {"kind": "affine", "scale": 0.5, "offset": 0.25},
                                          "data": ctx.data, "training": {"step": 0}, "weights": {}})
        return {"out": str(ctx.out), "step": 0}

    return Recipe(method=method, cfg=TrainConfig(), one_pass=fit)


def _halfway_loader(path, cfg, method, ema, device):
    from seg2med.inference.generate import LoadedModel
    from seg2med.models.baselines import PriorMap

    return LoadedModel(PriorMap.from_dict(cfg["model"]).eval(), cfg, None, None, path, None, method)


@pytest.fixture()
def halfway(monkeypatch):
    entry = registry.Method("halfway", registry.KIND_ONE_SHOT, "test method", f"{__name__}:_halfway_recipe",
                            f"{__name__}:_halfway_loader")
    monkeypatch.setitem(registry.REGISTRY, "halfway", entry)
    return entry


def test_a_method_added_as_one_registry_entry_trains_loads_and_generates(halfway, tmp_path):
    import seg2med
    from seg2med.data import PrepareConfig, prepare_dataset
    from seg2med.data.synthetic import phantom_subjects
    from seg2med.inference import load_model
    from seg2med.training import train_method

    ds = tmp_path / "ds"
    prepare_dataset(phantom_subjects(2, labels=True), ds, PrepareConfig(modality="ct", spacing=8.0, size=32,
                                                                        split=(0.5, 0.5, 0.0), sequence={"name": "ct"},
                                                                        scheme="total"))
    res = train_method("halfway", ds, tmp_path / "run", progress=False)
    assert res["method"] == "halfway"
    lm = load_model(tmp_path / "run")
    assert lm.method == "halfway" and not lm.is_diffusion and lm.size_multiple == 1
    labels = seg2med.make_phantom(seed=1, spacing=8.0, slices=6, size=32)
    out = seg2med.generate(labels, "ct", model=lm, device="cpu").samples[0].array
    body = labels.volume.array != 0
    lo, hi = (lm.spec.image_window()[k] for k in ("low", "high"))
    out01 = (out[body] - lo) / (hi - lo)
    assert out01.min() >= 0.25 - 1e-5 and out01.max() <= 0.75 + 1e-5  # 0.5 * prior01 + 0.25, prior01 in [0, 1]
    assert np.ptp(out01) > 0.1  # anatomy shows through

"""The shipped brain models on slices they never trained on: `brain-demo` (T1, T1ce, T2, FLAIR from a tumour mask) and
`brain-seg-demo` (the ResNet-18 U-Net that closes the loop), on TCGA-DU-7294 z 100-115 — the block that
scripts/build_demo_datasets.py --only brain keeps out of both trainings (benchmarks/brain_heldout.py gives the card's
numbers)."""

from __future__ import annotations

import numpy as np
import pytest

import seg2med
from seg2med.anatomy.brain import BRAIN_SCHEME
from seg2med.api import BRAIN_CONTRASTS
from seg2med.evaluation.brain import contrast_similarity, evaluate_brain
from seg2med.inference import list_models, load_model, resolve_model
from seg2med.labels import get_scheme

HELD_OUT = np.s_[:, :, 100:116]


@pytest.fixture(scope="module")
def held_out(tcga7294):
    return tcga7294["labels"].crop(HELD_OUT), {n: v.crop(HELD_OUT) for n, v in tcga7294["raw"].items()}


@pytest.fixture(scope="module")
def generated(held_out, one_thread):
    labels, _ = held_out
    return seg2med.generate(seg2med.build_anatomy(labels, scheme=BRAIN_SCHEME), model="brain-demo", seed=0)  # defaults


def test_brain_demo_is_shipped_small_and_describes_its_four_contrasts():
    assert "brain-demo" in list_models()
    folder = resolve_model("brain-demo")
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 25e6
    lm = load_model("brain-demo")
    assert lm.config["weights"]["dtype"] == "float16" and lm.model_cfg.image_channels == 4
    assert [c["name"] for c in lm.data["contrasts"]] == list(BRAIN_CONTRASTS)
    assert lm.data["scheme"] == BRAIN_SCHEME and lm.data["spacing"] == 1.5
    assert "tcga7294_z100-115" not in lm.data["train"]["subjects"] + lm.data["val"]["subjects"]
    assert lm.config["shipped"]["training_command"].startswith("seg2med train")


def test_brain_demo_beats_its_priors_on_every_contrast_of_held_out_slices(held_out, generated):
    """Inside the brain, each image in its own percentile window: the model's SSIM must beat the prior alone (the
    physics, a baseline the model must beat) on T1, T1ce, T2 and FLAIR, on the mask's exact grid."""
    labels, real = held_out
    res = generated
    brain = np.asarray(labels.array) != 0
    assert tuple(res.contrasts) == tuple(BRAIN_CONTRASTS)
    for n in BRAIN_CONTRASTS:
        out = res.channels[n][0]
        assert out.shape == labels.shape and np.array_equal(out.affine, labels.affine)
        s_model = contrast_similarity(out, real[n], brain)["ssim"]
        s_prior = contrast_similarity(res.channel_priors[n], real[n], brain)["ssim"]  # the prior it was given
        assert s_model > s_prior + 0.02, (n, s_model, s_prior)


def test_brain_segmenter_finds_the_tumour_in_real_and_synthetic_held_out_slices(held_out, generated):
    """The closed loop: the shipped segmenter's whole-tumour Dice on the real four contrasts of slices it never saw,
    and on the four contrasts brain-demo made from their mask — the synthetic ones must carry the tumour well enough
    to be found (Med-DDPM reports 0.62 synthetic vs 0.65 real)."""
    from seg2med.inference.segment import load_segmenter

    labels, real = held_out
    seg = load_segmenter("brain-seg-demo")
    order = list(seg.spec.contrast_names)
    assert order == list(BRAIN_CONTRASTS)
    synthetic = {n: v[0] for n, v in generated.channels.items()}
    ev = evaluate_brain(synthetic, labels, get_scheme(BRAIN_SCHEME), seg, real=real, contrasts=order)
    wt = ev.regions["whole_tumor"]
    assert wt["real"] > 0.7, wt
    assert wt["synthetic"] > 0.5, wt

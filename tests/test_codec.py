"""DataSpec (a checkpoint's data block, typed), SliceCodec (volume <-> model slices), neighbour stacking and
the one slice-generator callable of a loaded model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import seg2med
from seg2med.data.codec import SliceCodec, neighbour_indices, stack_neighbours
from seg2med.data.normalize import DEFAULT_CT_WINDOW, DEFAULT_MR_PERCENTILES, denormalize, to_signed, to_unit
from seg2med.data.spec import DataSpec
from seg2med.errors import InputError
from seg2med.inference.generate import Guidance, generate_volume, list_models, load_model, resolve_model, sample_seed
from seg2med.io.checkpoints import write_checkpoint_config
from seg2med.physics import sequence_from_config, simulate_prior

# --------------------------------------------------------------------------- DataSpec


def test_data_spec_defaults_apply_once_to_an_empty_block():
    spec = DataSpec.from_dict({})
    assert spec.modality == "ct" and spec.ct_window == DEFAULT_CT_WINDOW == (0.0, 2000.0)
    assert spec.mr_percentiles == DEFAULT_MR_PERCENTILES == (10.0, 90.0)
    assert spec.axes == ("axial",) and spec.spacing == 1.0 and spec.size == 256 and spec.neighbours == 0
    assert spec.sequence is None and spec.scheme is None and spec.image_normalization is None
    assert spec.to_dict() == {}  # the defaults are not written back
    assert not spec.states("modality")


@pytest.mark.parametrize("name", list_models())
def test_a_shipped_checkpoints_data_block_round_trips_byte_for_byte(name):
    data = json.loads((resolve_model(name) / "config.json").read_text())["data"]
    spec = DataSpec.from_dict(data, source=name)
    assert json.dumps(spec.to_dict()) == json.dumps(data)  # same keys, order and values
    assert spec.size == 128 and spec.axes == ("axial",)
    assert spec.spacing == (1.5 if spec.contrasts else 3.0)  # brain-demo: 1.5 mm, the torso models 3 mm


def test_unknown_keys_and_a_partial_block_round_trip():
    d = {"size": [64, 96], "modality": "mr", "extra_thing": {"a": [1, 2]}, "ct_window": [40, 400]}
    spec = DataSpec.from_dict(d)
    assert spec.size == (64, 96) and spec.ct_window == (40, 400) and spec.extra == {"extra_thing": {"a": [1, 2]}}
    assert json.dumps(spec.to_dict()) == json.dumps(d)
    assert spec.spacing == 1.0 and spec.states("size") and not spec.states("spacing")


def test_a_spec_built_in_code_writes_every_field_in_checkpoint_order():
    keys = list(DataSpec(modality="mr", axes=("axial", "coronal")).to_dict())
    assert keys == ["path", "modality", "sequence", "scheme", "spacing", "size", "axes", "ct_window", "mr_percentiles",
                    "neighbours", "image_normalization", "train", "val"]
    assert DataSpec(axes=("coronal",)).to_dict()["axes"] == ["coronal"]


@pytest.mark.parametrize(("key", "value"), [
    ("ct_window", "wide"), ("ct_window", [0, 1, 2]), ("spacing", True), ("spacing", "3"), ("size", [1, 2, 3]),
    ("size", 12.5), ("modality", "pet"), ("axes", "axial"), ("axes", ["oblique"]), ("axes", []),
    ("neighbours", -1), ("sequence", "ct"), ("image_normalization", [0, 1]), ("mr_percentiles", None),
])
def test_a_wrong_type_is_an_input_error_naming_the_file(tmp_path, key, value):
    where = tmp_path / "run" / "config.json"
    with pytest.raises(InputError, match=rf"{where}: data\.{key} must be"):
        DataSpec.from_dict({key: value}, source=where)
    with pytest.raises(InputError, match="must be a mapping"):
        DataSpec.from_dict(["not", "a", "block"], source=where)


def test_spec_normalize_and_image_window():
    ct = np.array([[[-2000.0, 0.0, 500.0]]], dtype=np.float32)
    body = np.array([[[True, True, False]]])
    norm, params = DataSpec().normalize(ct, body)
    np.testing.assert_allclose(norm, [[[0.0, 0.5, 0.75]]])
    assert norm.dtype == np.float32 and params["low"] == -1000.0 and params["modality"] == "ct"
    assert DataSpec().normalize(ct, body, blank_outside=True)[0][0, 0, 2] == 0.0
    assert DataSpec(ct_window=(40.0, 400.0)).image_window() == {"method": "window", "low": -160.0, "high": 240.0}
    ref = {"method": "window", "low": 10.0, "high": 500.0}
    assert DataSpec(modality="mr", image_normalization=ref).image_window() == ref
    with pytest.raises(InputError, match="run: MR checkpoint lacks data.image_normalization"):
        DataSpec(modality="mr", source="run").image_window()


# --------------------------------------------------------------------------- SliceCodec
def _odd_grid(shape=(14, 11, 9)):
    """A smooth volume and a label map on a permuted, flipped, anisotropic (LPS-like) grid."""
    aff = np.array([[0.0, -2.0, 0.0, 30.0], [0.0, 0.0, 3.0, -5.0], [-1.5, 0.0, 0.0, 12.0], [0.0, 0.0, 0.0, 1.0]])
    z, y, x = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    smooth = (0.2 + 0.3 * z + 0.2 * y + 0.2 * x * x).astype(np.float32)
    labels = (1 + (z > 0.5) + 2 * (y > 0.3)).astype(np.int16)
    return aff, smooth, labels


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_codec_round_trip_on_a_non_canonical_grid(axis):
    aff, smooth, labels = _odd_grid()
    body = np.ones(smooth.shape, bool)
    codec = SliceCodec.plan(aff, smooth.shape, axis, spacing=0.5, size=64)
    assert not codec.reorientation.is_identity and codec.geometry.crop == ((0, 0), (0, 0))
    sliced = codec.encode({"labels": labels, "image": smooth}, body)
    assert list(sliced) == ["labels", "mask", "image"]  # integer slices first, then the floats
    assert sliced["image"].shape == (codec.geometry.n_slices, 64, 64) and sliced["image"].dtype == np.float32
    assert np.array_equal(codec.decode(sliced["labels"], order=0), labels)  # nearest: exact
    assert np.array_equal(codec.decode(sliced["mask"], order=0), body.astype(np.uint8))
    np.testing.assert_allclose(codec.decode(sliced["image"]), smooth, atol=0.02)  # linear: close


def test_codec_zeroes_floats_outside_the_body_and_grows_a_wide_plane():
    aff, smooth, labels = _odd_grid()
    body = labels > 1
    codec = SliceCodec.plan(aff, smooth.shape, "axial", 1.0, 8)
    sliced = codec.encode({"prior": smooth + 5.0}, body)  # out-of-range values are clipped to [0, 1]
    assert sliced["prior"].max() == 1.0 and np.all(sliced["prior"][sliced["mask"] == 0] == 0.0)
    assert codec.cut_fraction(body) > 0 and not codec.grown
    grown = SliceCodec.plan(aff, smooth.shape, "axial", 1.0, 8, grow_multiple=4)
    assert grown.grown and grown.nominal_size == (8, 8) and grown.geometry.size == (24, 28)  # 22 x 27 px planes
    assert grown.geometry.crop == ((0, 0), (0, 0)) and grown.cut_fraction(body) == 0.0


def test_stack_neighbours_repeats_the_edge_slices():
    slices = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    stacked = stack_neighbours(slices, 1)
    assert stacked.shape == (4, 3, 2, 3)
    assert stacked[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert np.array_equal(stack_neighbours(slices, 0), slices[:, None])
    assert neighbour_indices(0, 3, 2).tolist() == [0, 0, 0, 1, 2]
    assert neighbour_indices(np.arange(2), 2, 1).tolist() == [[0, 0, 1], [0, 1, 1]]


# --------------------------------------------------------------------------- slice generators
@pytest.fixture(scope="module")
def phantom(one_thread):
    return seg2med.make_phantom(seed=3, spacing=6.0, slices=4, size=48)


def _by_hand(lm, lv, steps, sampler, seed):
    """What generate does, spelled out with the model's slice generator (one batch, sample 0)."""
    spec = lm.spec
    body = lv.volume.array != 0
    prior = simulate_prior(lv.volume.array, lv.scheme, sequence_from_config(lm.sequence_config))
    guidance = Guidance.of_model(lm)  # the model's config.json sampling defaults (anchor, field-of-view margin)
    margin = guidance.margin_px(lm)
    codec = spec.codec(lv.volume.affine, lv.volume.shape, "axial", grow_multiple=lm.size_multiple, margin=margin)
    sliced = codec.encode({"prior": spec.normalize(prior, body)[0]}, body)
    sliced["prior"] = codec.geometry.extend_edges(sliced["prior"], margin)
    cond = torch.from_numpy(to_signed(stack_neighbours(sliced["prior"], lm.neighbours)))
    gen = torch.Generator().manual_seed(sample_seed(seed, 0))
    ticks = []
    x = lm.slice_generator(steps, sampler, anchor=guidance.anchor(lm))(cond, gen, gen, ticks.append)
    slices = to_unit(x[:, 0].numpy()).clip(0.0, 1.0)
    slices[sliced["mask"] == 0] = 0.0
    img = np.asarray(denormalize(codec.decode(slices), spec.image_window()), dtype=np.float32)
    img[~body] = spec.image_window()["low"]
    return img, ticks


def test_the_slice_generator_of_a_diffusion_model_gives_what_generate_gives(phantom):
    lm = load_model("ct-demo-tiny")
    res = generate_volume(phantom.volume, phantom.scheme, lm, steps=2, sampler="ddim", seed=4, batch=64)
    img, ticks = _by_hand(lm, phantom, 2, "ddim", 4)
    assert np.array_equal(img, res.samples[0].array)
    assert ticks == [1, 2]  # one tick per diffusion step
    g = lm.slice_generator(2, None)
    assert g.stochastic and g.units == 2


def test_the_slice_generator_of_a_one_shot_model_gives_what_generate_gives(phantom, tmp_path):
    data = json.loads((resolve_model("ct-demo-tiny") / "config.json").read_text())["data"]
    write_checkpoint_config(tmp_path, {"method": "prior", "data": data,
                                       "model": {"kind": "affine", "scale": 0.9, "offset": 0.05, "neighbours": 1}})
    lm = load_model(tmp_path)
    assert not lm.is_diffusion and lm.neighbours == 1
    res = generate_volume(phantom.volume, phantom.scheme, lm, seed=4, samples=2, batch=64)
    img, ticks = _by_hand(lm, phantom, 50, None, 4)
    assert np.array_equal(img, res.samples[0].array) and np.array_equal(img, res.samples[1].array)
    assert ticks == [1]  # one forward pass
    g = lm.slice_generator()
    assert not g.stochastic and g.units == 1

"""The embedded demo models: present, small, loadable, and better than the prior alone on held-out slices."""

from __future__ import annotations

import numpy as np
import pytest

import seg2med
from seg2med.data.normalize import normalize_volume
from seg2med.inference import list_models, load_model, resolve_model
from seg2med.inference.generate import generate_volume
from seg2med.io import Volume, load_volume
from seg2med.labels import get_scheme
from seg2med.metrics import ssim

HELD_OUT = np.s_[:, :, 58:72]  # subject A slices the CT model never trained on (scripts/build_demo_datasets.py)


@pytest.mark.parametrize("name", ["ct-demo", "mr-demo", "ct-demo-tiny", "mr-demo-tiny", "ct-demo-25d-tiny"])
def test_shipped_model_is_packaged_small_and_self_describing(name):
    assert name in list_models()
    folder = resolve_model(name)
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 25e6
    lm = load_model(name)
    assert lm.config["weights"]["dtype"] == "float16"
    assert lm.data["sequence"]["name"] == ("ct" if name.startswith("ct-") else "vibe-in")
    assert lm.model_cfg.preset == ("tiny" if name.endswith("-tiny") else "small")  # ct-demo / mr-demo: the issue's `small`
    assert lm.data["spacing"] == 3.0 and lm.data["size"] == 128
    assert (folder.parent / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize(("name", "steps"), [("ct-demo", 10), ("ct-demo-tiny", 20)])
def test_ct_demo_beats_the_prior_on_held_out_slices_of_subject_a(ts_dir, name, steps):
    ct = load_volume(ts_dir / "example_ct.nii.gz")
    lv = seg2med.build_anatomy(ts_dir / "example_seg_fast_force_split.nii.gz", scheme="total", image=ct, modality="ct")
    labels, real = lv.volume.crop(HELD_OUT), ct.crop(HELD_OUT).array
    body = labels.array != 0
    lm = load_model(name)
    res = generate_volume(labels, lv.scheme, lm, steps=steps, seed=0, batch=8)
    gen = res.samples[0]
    assert gen.shape == labels.shape and np.array_equal(gen.affine, labels.affine)
    to01 = lambda a: np.clip((np.asarray(a, np.float64) + 1000.0) / 2000.0, 0, 1)  # noqa: E731  CT window 0 / 2000
    prior01 = np.asarray(normalize_volume(res.prior.array, "ct", body)[0], np.float64)
    s_model = ssim(to01(gen.array), to01(real), data_range=1.0, mask=body)
    s_prior = ssim(prior01, to01(real), data_range=1.0, mask=body)
    assert s_model > s_prior, (s_model, s_prior)


def test_mr_demo_generates_on_the_input_grid(ts_dir):
    lv = seg2med.build_anatomy(ts_dir / "example_seg_mr.nii.gz", scheme="total_mr")
    res = seg2med.generate(lv, "vibe-in", model="mr-demo", steps=5, seed=0, batch=20)
    vol = res.samples[0]
    assert vol.shape == lv.volume.shape and np.array_equal(vol.affine, lv.volume.affine)  # LPS input
    inside = lv.volume.array != 0
    assert vol.array[inside].std() > 0


def test_fused_attention_network_computes_monais_explicit_attention_with_shipped_weights():
    # build_model runs attention through scaled_dot_product_attention; with the shipped ct-demo
    # weights it must be the same function as MONAI's default softmax(QK^T)V blocks
    import torch
    from monai.networks.nets import DiffusionModelUNet

    lm = load_model("ct-demo")
    c = lm.model_cfg
    explicit = DiffusionModelUNet(
        spatial_dims=2, in_channels=c.image_channels + c.condition_channels, out_channels=c.image_channels,
        channels=c.channels, attention_levels=c.attention_levels, num_res_blocks=c.num_res_blocks,
        num_head_channels=c.num_head_channels, norm_num_groups=c.norm_num_groups, use_flash_attention=False,
    ).eval()
    explicit.load_state_dict(lm.network.state_dict())
    fused_blocks = [m for m in lm.network.modules() if getattr(m, "use_flash_attention", False)]
    assert fused_blocks, "no attention block uses the fused kernel"
    x = torch.randn(2, c.image_channels + c.condition_channels, 128, 128, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 50])
    with torch.inference_mode():
        a, b = lm.network(x.contiguous(memory_format=torch.channels_last), t), explicit(x, t)
        assert float((a - b).abs().max()) < 1e-4
        # and attention does matter here: without its output projection the network's output moves
        for blk in fused_blocks:
            torch.nn.init.zeros_(blk.out_proj.weight)
            torch.nn.init.zeros_(blk.out_proj.bias)
        c0 = lm.network(x.contiguous(memory_format=torch.channels_last), t)
    assert float((c0 - b).abs().max()) > 1e-2


def test_bf16_generation_stays_within_a_few_hu_of_fp32(ts_dir):
    # --precision bf16 (autocast around the network only): the same volume to within rounding
    ct = load_volume(ts_dir / "example_ct.nii.gz")
    lv = seg2med.build_anatomy(ts_dir / "example_seg_fast_force_split.nii.gz", scheme="total", image=ct, modality="ct")
    labels = lv.volume.crop(np.s_[:, :, 60:66])
    body = labels.array != 0
    lm = load_model("ct-demo-tiny")
    fp32 = generate_volume(labels, lv.scheme, lm, steps=5, seed=0, batch=8).samples[0].array
    res = generate_volume(labels, lv.scheme, lm, steps=5, seed=0, batch=8, precision="bf16")
    bf16 = res.samples[0].array
    again = generate_volume(labels, lv.scheme, lm, steps=5, seed=0, batch=8, precision="bf16").samples[0].array
    assert res.metadata["precision"] == "bf16" and bf16.dtype == np.float32
    assert np.array_equal(bf16, again)  # still bit-identical for the same seed
    assert not np.array_equal(bf16, fp32)  # autocast did run in bf16
    diff = np.abs(bf16 - fp32)[body]
    assert diff.mean() < 5.0 and np.percentile(diff, 99) < 50.0, (diff.mean(), np.percentile(diff, 99))
    to01 = lambda a: np.clip((np.asarray(a, np.float64) + 1000.0) / 2000.0, 0, 1)  # noqa: E731
    assert ssim(to01(bf16), to01(fp32), data_range=1.0, mask=body) > 0.995


def test_a_field_of_view_wider_than_the_model_slices_is_sampled_whole_not_cropped(ts_dir, caplog):
    """Subject A's label map stretched to 4.5 mm voxels (549 x 455 mm) is wider than ct-demo's 128 px x 3 mm
    (384 mm): generation grows the canvas to hold the plane (183 x 152 px at 3 mm) plus the model's 15 mm (5 px)
    field-of-view margin each side, rounded up to a multiple of 8 (200 x 168 px) instead of cropping, so the body
    outside the central 384 mm is synthetic tissue, not air (a crop filled it with the window's -1000 HU)."""
    seg = load_volume(ts_dir / "example_seg.nii.gz", kind="labels")
    affine = seg.affine.copy()
    affine[:3, :3] *= 1.5
    z0 = 15
    labels = Volume(seg.array[:, :, z0 : z0 + 2], affine)
    lm = load_model("ct-demo-tiny")
    with caplog.at_level("INFO", logger="seg2med.inference.generate"):
        res = generate_volume(labels, get_scheme("total"), lm, steps=2, seed=0, batch=2)
    assert res.metadata["fov_margin_mm"] == 15.0
    assert res.metadata["slice_size"] == [200, 168]
    assert "sampled on 200 x 168 px" in caplog.text
    vol = res.samples[0].array
    assert vol.shape == labels.shape
    body = labels.array != 0
    half = 384.0 / 4.5 / 2  # voxels each side of the centre inside the training field of view
    cx = (labels.shape[0] - 1) / 2
    outer = body & (np.abs(np.arange(labels.shape[0]) - cx) > half + 1)[:, None, None]
    assert outer.sum() > 100  # the stretched body does reach beyond 384 mm
    assert np.mean(vol[outer] <= -999.0) < 0.05  # synthetic tissue there, not the crop's air
    assert np.median(vol[outer]) > -200.0  # fat / muscle / skin, HU well above air


def test_ct_from_mr_labels_reads_them_by_their_own_table(ts_dir):
    # the paper's cross-modality case: a CT from subject C's MR label map (total_mr numbering); ct-demo's
    # own scheme is 'total', but the file's label table decides which id is which class
    res = seg2med.generate(ts_dir / "example_seg_mr.nii.gz", model="ct-demo-tiny", steps=2, batch=20)
    # read as total_mr, then crosswalked to the model's total (vertebrae kept as an extra class)
    assert res.metadata["scheme"] == "total+seg2med" and res.metadata["crosswalk"]["source"] == "total_mr"
    raw = load_volume(ts_dir / "example_seg_mr.nii.gz", kind="labels").array
    assert np.median(res.prior.array[raw == 19]) > 150  # vertebrae are bone in the prior (total id 19 is the duodenum)

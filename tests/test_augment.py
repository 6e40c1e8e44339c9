"""Robustness augmentation (seg2med.data.augment, wired into training): the prior re-simulated from the stored labels
(tissue spread, bias, noise, blur, class ablation) and the joint geometry (zoom, rotation, shift, views inside the
body). Deterministic given the generator, exact on resume, off by default, bad values refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from seg2med.data import (
    PrepareConfig,
    PriorResimulation,
    PriorSource,
    RandomGeometry,
    prepare_dataset,
)
from seg2med.data.augment import (
    BODY_ID,
    TISSUE_IDS,
    GeometryParams,
    ablate_classes,
    affine_theta,
    interior,
)
from seg2med.data.dataset import SliceDataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.errors import ConfigError
from seg2med.io.checkpoints import read_checkpoint_config
from seg2med.labels import canonical_scheme
from seg2med.physics import get_sequence, prior_lut, simulate_prior
from seg2med.training.config import (
    AUGMENT_FIELDS,
    TrainConfig,
    augment_preset,
    check_trajectory_unchanged,
)
from seg2med.training.data import augment, augment_step, batch_transforms, collate

TINY = {"channels": [8, 16, 16, 16], "norm_num_groups": 8, "num_head_channels": 8}
AUGMENTED = {"augment_flips": True, "prior_spread": 1.0, "prior_bias": 0.05, "prior_noise": 20.0, "prior_blur": 1.5,
             "class_drop": 0.3, "tissue_drop": 0.3, "zoom_range": [0.75, 1.5], "rotate_deg": 10.0, "shift": 0.1,
             "p_inside": 0.3}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One torch thread (conftest.one_thread): tiny models gain nothing from more."""


def _prepare(out: Path, modality: str = "ct", labels: bool = True, spacing: float = 8.0, size: int = 32) -> Path:
    subjects = phantom_subjects(3, labels=labels)
    seq = get_sequence("ct" if modality == "ct" else "vibe-in")
    if modality == "mr":  # the MR prior of the phantom as prior and image (per-subject percentile windows)
        for s in subjects:
            s.prior = s.prior.like(simulate_prior(s.labels.array, canonical_scheme("total"), seq))
            s.image = s.prior
    prepare_dataset(subjects, out, PrepareConfig(modality=modality, spacing=spacing, size=size, split=(0.6, 0.4, 0.0),
                                                 sequence=seq.to_config(), scheme="total"))
    return out


@pytest.fixture(scope="module")
def ct_dataset(tmp_path_factory) -> Path:
    return _prepare(tmp_path_factory.mktemp("aug") / "ct")


@pytest.fixture(scope="module")
def mr_dataset(tmp_path_factory) -> Path:
    return _prepare(tmp_path_factory.mktemp("aug") / "mr", "mr")


def _batch(root: Path, neighbours: int = 1, split: str | None = None) -> dict[str, torch.Tensor]:
    ds = SliceDataset(root, split=split, neighbours=neighbours)
    return collate([ds[i] for i in range(len(ds))])


def _resim(root: Path, **amplitudes) -> PriorResimulation:
    from seg2med.data.dataset import load_dataset_manifest

    return PriorResimulation(PriorSource.from_manifest(load_dataset_manifest(root), str(root)), **amplitudes)


def _interior(stacks: np.ndarray) -> np.ndarray:
    return np.stack([[interior(lab) for lab in stack] for stack in stacks])


# --------------------------------------------------------------------------- the batch carries what is needed
def test_items_and_batches_carry_labels_neighbours_and_subject(ct_dataset):
    ds = SliceDataset(ct_dataset, split="val", neighbours=1)
    item = ds[0]
    assert item["neighbour_labels"].shape == (3, 32, 32) and item["neighbour_labels"].dtype == torch.int64
    assert torch.equal(item["neighbour_labels"][1:2], item["labels"])
    subjects = [r["id"] for r in ds.manifest["subjects"]]
    assert subjects[item["subject_index"]] == item["subject"]
    b = collate([ds[i] for i in range(3)])
    assert b["labels"].shape == (3, 1, 32, 32) and b["neighbour_labels"].shape == (3, 3, 32, 32)
    assert b["subject_index"].tolist() == [item["subject_index"]] * 3
    assert "neighbour_labels" not in SliceDataset(ct_dataset, split="val")[0]  # k = 0: the labels are the stack


# --------------------------------------------------------------------------- prior re-simulation
@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_zero_amplitudes_reproduce_the_stored_prior(modality, ct_dataset, mr_dataset, tmp_path):
    root = ct_dataset if modality == "ct" else mr_dataset
    b = _batch(root)
    out = _resim(root)(b, torch.Generator().manual_seed(0))
    # same spacing as the phantom: the stored prior was not interpolated, every pixel matches (neighbours too)
    np.testing.assert_allclose(out["prior"].numpy(), b["prior"].numpy(), atol=1e-6, rtol=0)
    assert torch.equal(out["labels"], b["labels"]) and torch.equal(out["neighbour_labels"], b["neighbour_labels"])
    # resampled (8 -> 6 mm): the stored prior is linear, the labels nearest -> equal inside organs, away from edges
    other = _prepare(tmp_path / "resampled", modality, spacing=6.0, size=48)
    b = _batch(other)
    out = _resim(other)(b, torch.Generator().manual_seed(0))
    diff = np.abs(out["prior"].numpy() - b["prior"].numpy())
    inner = _interior(b["neighbour_labels"].numpy())
    assert inner.mean() > 0.05 and float(np.median(diff[inner])) == 0.0 and np.quantile(diff[inner], 0.98) < 1e-5
    assert diff.max() > 0.05  # at the edges they do differ (so the comparison above is not vacuous)


def test_amplitudes_change_the_prior_and_stay_in_range(ct_dataset):
    b = _batch(ct_dataset)
    out = _resim(ct_dataset, tissue_spread=1.0, bias_field=0.05, noise=20.0, blur=1.5)(b, torch.Generator().manual_seed(0))
    p, stored = out["prior"].numpy(), b["prior"].numpy()
    assert p.shape == stored.shape and p.dtype == np.float32 and p.min() >= 0.0 and p.max() <= 1.0
    assert np.abs(p - stored).mean() > 1e-3
    assert np.all(p[b["neighbour_labels"].numpy() == 0] == 0.0)  # background stays air, as the dataset stores it
    # the channels of one slice share the draw but not the noise
    assert not np.array_equal(p[:, 0] - stored[:, 0], p[:, 1] - stored[:, 1])


def test_class_ablation_turns_the_dropped_classes_into_body(ct_dataset):
    from seg2med.data.dataset import load_dataset_manifest

    b = _batch(ct_dataset)
    src = PriorSource.from_manifest(load_dataset_manifest(ct_dataset), "ds")
    low, high = src.window(0)
    body = (float(prior_lut(src.scheme, src.sequence)[BODY_ID]) - low) / (high - low)
    lab = b["neighbour_labels"].numpy()
    organs = (lab != 0) & (lab != BODY_ID) & ~np.isin(lab, TISSUE_IDS)
    tissues = np.isin(lab, TISSUE_IDS)
    assert organs.any() and tissues.any()
    out = _resim(ct_dataset, class_drop=1.0)(b, torch.Generator().manual_seed(0))
    new = out["neighbour_labels"].numpy()
    assert np.all(new[organs] == BODY_ID) and np.array_equal(new[~organs], lab[~organs])
    np.testing.assert_allclose(out["prior"].numpy()[organs], body, atol=1e-6)
    assert torch.equal(out["labels"], out["neighbour_labels"][:, 1:2])
    out = _resim(ct_dataset, tissue_drop=1.0)(b, torch.Generator().manual_seed(0))
    new = out["neighbour_labels"].numpy()
    assert np.all(new[tissues] == BODY_ID) and np.array_equal(new[~tissues], lab[~tissues])
    np.testing.assert_allclose(out["prior"].numpy()[tissues], body, atol=1e-6)
    # p = 0.5: each slice drops its own subset, the same in all of its channels
    rs = _resim(ct_dataset, class_drop=0.5)
    draws = rs.sample(b, torch.Generator().manual_seed(0))
    assert len({d.dropped for d in draws}) > 1 and all(d.dropped for d in draws)
    out = rs.apply(b, draws)
    for i, d in enumerate(draws):
        for c in range(3):
            np.testing.assert_array_equal(out["neighbour_labels"][i, c].numpy(), ablate_classes(lab[i, c], d.dropped))


def test_contrast_phase_augmentation_simulates_each_slice_in_its_drawn_phase(ct_dataset, mr_dataset):
    from seg2med.data.dataset import load_dataset_manifest
    from seg2med.physics import get_sequence

    b = _batch(ct_dataset)
    src = PriorSource.from_manifest(load_dataset_manifest(ct_dataset), "ds")
    low, high = src.window(0)
    lab = b["neighbour_labels"].numpy()
    out = _resim(ct_dataset, phases=["arterial"])(b, torch.Generator().manual_seed(0))
    lut = prior_lut(src.scheme, get_sequence("ct", contrast_phase="arterial"))
    want = np.where(lab != 0, np.clip((lut[lab] - low) / (high - low), 0.0, 1.0), 0.0)
    np.testing.assert_allclose(out["prior"].numpy(), want, atol=1e-6)  # the phantom's own spacing: exact
    enhanced = np.abs(want - b["prior"].numpy()) > 0.01  # vessels, kidneys, liver, spleen ... brighter than native
    assert enhanced.mean() > 0.01 and np.all(out["prior"].numpy()[enhanced] > b["prior"].numpy()[enhanced])
    draws = _resim(ct_dataset, phases=["native", "arterial", "portal_venous"]).sample(b, torch.Generator().manual_seed(0))
    assert len({d.phase for d in draws}) > 1
    with pytest.raises(ConfigError, match="contrast phases apply to CT priors, not to the 'vibe-in' sequence"):
        _resim(mr_dataset, phases=["arterial"])
    with pytest.raises(ConfigError, match="unknown contrast phase 'venous'"):
        TrainConfig(prior_phases=["venous"])
    assert TrainConfig(prior_phases=["arterial"]).augments_prior and augment_preset("robust", "ct")["prior_phases"]
    assert "prior_phases" not in augment_preset("robust", "mr")


def test_resimulation_is_deterministic_given_the_generator(ct_dataset):
    b = _batch(ct_dataset)
    rs = _resim(ct_dataset, tissue_spread=1.0, bias_field=0.05, noise=20.0, blur=1.5, class_drop=0.3, tissue_drop=0.3)
    a1 = rs(b, torch.Generator().manual_seed(7))
    a2 = _resim(ct_dataset, tissue_spread=1.0, bias_field=0.05, noise=20.0, blur=1.5, class_drop=0.3,
                tissue_drop=0.3)(b, torch.Generator().manual_seed(7))
    a3 = rs(b, torch.Generator().manual_seed(8))
    assert all(torch.equal(a1[k], a2[k]) for k in a1) and not torch.equal(a1["prior"], a3["prior"])


def test_a_dataset_prepared_with_another_tissue_table_is_warned_about(ct_dataset, caplog):
    b = _batch(ct_dataset)
    b["prior"] = (b["prior"] * 0.9).clamp(0, 1)
    rs = _resim(ct_dataset)
    assert rs.stored_mismatch(b) > 0.01
    with caplog.at_level("WARNING", logger="seg2med.data.augment"):
        rs(b, torch.Generator().manual_seed(0))
        rs(b, torch.Generator().manual_seed(0))
    assert sum("another --tissues table" in r.message for r in caplog.records) == 1  # once


# --------------------------------------------------------------------------- geometry
def _edge_batch(n: int = 6, size: int = 40) -> dict[str, torch.Tensor]:
    """A body disc with a vertical organ edge: image and prior = indicator of the organ (label 5), body elsewhere."""
    yy, xx = np.mgrid[:size, :size] + 0.5 - size / 2
    body = (xx**2 + yy**2) < (0.45 * size) ** 2
    labels = np.where(body, np.where(xx > 2.0, 5, BODY_ID), 0)
    lab = torch.from_numpy(np.repeat(labels[None, None], n, 0).astype(np.int64))
    organ = (lab == 5).float()
    return {"image": organ.clone(), "prior": organ.repeat(1, 3, 1, 1), "mask": (lab != 0).float(), "labels": lab,
            "neighbour_labels": lab.repeat(1, 3, 1, 1), "subject_index": torch.zeros(n, dtype=torch.int64)}


def test_geometry_keeps_image_prior_mask_and_labels_aligned():
    b = _edge_batch()
    geo = RandomGeometry((0.75, 1.5), rotate_deg=10.0, shift=0.1)
    params = geo.sample(b, torch.Generator().manual_seed(3))
    out = geo.apply(b, params)
    assert not torch.equal(out["labels"], b["labels"])
    lab = out["labels"][:, 0].numpy()
    edge = np.stack([~interior(x) & (x != 0) for x in lab])[:, None]  # next to a label edge or the body outline
    for key in ("image", "prior"):
        agree = (out[key].numpy() > 0.5) == (out["labels"].numpy() == 5)
        assert np.all(agree | edge) and agree.mean() > 0.97, key  # they disagree only right at an edge
    assert torch.equal(out["mask"], (out["labels"] != 0).float())  # nearest, like the labels
    assert torch.all(out["image"][out["mask"] == 0] == 0) and torch.all(out["prior"][out["mask"].expand(-1, 3, -1, -1) == 0] == 0)
    assert torch.equal(out["neighbour_labels"][:, 1:2], out["labels"])


def test_an_integer_shift_moves_every_key_by_the_same_pixels():
    b = _edge_batch(n=1)
    geo = RandomGeometry()
    theta = affine_theta(1.0, 0.0, (3.0, -2.0), (40, 40))[None]  # input pixel = output pixel + (3, -2)
    out = geo.apply(b, GeometryParams(theta, torch.tensor([False])))
    want = torch.zeros_like(b["labels"])
    want[..., 2:, :37] = b["labels"][..., :-2, 3:]
    assert torch.equal(out["labels"], want)
    np.testing.assert_allclose(out["image"].numpy(), (want == 5).float().numpy(), atol=1e-5)


def test_p_inside_gives_views_entirely_inside_the_body(ct_dataset):
    b = _batch(ct_dataset, neighbours=0)
    geo = RandomGeometry((0.75, 1.5), rotate_deg=10.0, p_inside=1.0)
    params = geo.sample(b, torch.Generator().manual_seed(0))
    out = geo.apply(b, params)
    inside = params.inside
    assert inside.float().mean() > 0.5  # the phantom's body is large enough for most slices
    assert torch.all(out["mask"][inside] == 1.0) and torch.all(out["labels"][inside] != 0)
    assert torch.all(out["image"][inside].flatten(1).amax(1) > 0)
    none = RandomGeometry(p_inside=0.0).sample(b, torch.Generator().manual_seed(0))
    assert not none.inside.any()


def test_geometry_is_deterministic_given_the_generator(ct_dataset):
    b = _batch(ct_dataset)
    geo = RandomGeometry((0.75, 1.5), rotate_deg=10.0, shift=0.1, p_inside=0.3)
    a1, a2 = geo(b, torch.Generator().manual_seed(1)), geo(b, torch.Generator().manual_seed(1))
    a3 = geo(b, torch.Generator().manual_seed(2))
    assert all(torch.equal(a1[k], a2[k]) for k in a1) and not torch.equal(a1["image"], a3["image"])


# --------------------------------------------------------------------------- wiring into training
def test_off_by_default_reads_nothing_and_draws_as_before(ct_dataset):
    cfg = TrainConfig()
    assert not cfg.augments_prior and not cfg.augments_geometry
    assert batch_transforms(cfg, None, "ddpm") == ()  # no dataset needed, nothing read
    b = _batch(ct_dataset, neighbours=0)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    out = augment_step(b, g1, TrainConfig(augment_flips=True, intensity_jitter=0.1), {"path": None}, "ddpm")
    ref = augment(b, g2, True, 0.1)
    assert all(torch.equal(out[k], ref[k]) for k in ref) and torch.equal(g1.get_state(), g2.get_state())


def test_augment_step_is_deterministic_and_flips_the_labels_too(ct_dataset):
    b = _batch(ct_dataset)
    cfg = TrainConfig(**AUGMENTED)
    data = {"path": str(ct_dataset)}
    a1 = augment_step(b, torch.Generator().manual_seed(5), cfg, data, "ddpm")
    a2 = augment_step(b, torch.Generator().manual_seed(5), cfg, data, "ddpm")
    assert all(torch.equal(a1[k], a2[k]) for k in a1)
    assert not torch.equal(a1["prior"], b["prior"]) and not torch.equal(a1["image"], b["image"])
    assert torch.equal(a1["mask"], (a1["labels"] != 0).float())  # flips and warps kept mask and labels together
    assert torch.all(a1["image"][a1["mask"] == 0] == 0)


def test_resume_with_augmentation_is_exact(ct_dataset, tmp_path):
    from seg2med.training import train_method

    training = {"steps": 4, "batch": 4, "lr": 1e-3, "seed": 5, "ckpt_every": 2, "val_every": 0, "log_every": 1,
                **AUGMENTED}
    kw = {"preset": "tiny", "model": {**TINY, "neighbours": 1}, "progress": False}
    full = train_method("ddpm", ct_dataset, tmp_path / "full", training=training, **kw)
    train_method("ddpm", ct_dataset, tmp_path / "part", training={**training, "steps": 2}, **kw)
    part = train_method("ddpm", ct_dataset, tmp_path / "part", training={"steps": 4}, resume=True, progress=False,
                        base=read_checkpoint_config(tmp_path / "part"))
    assert part["resumed_from"] == 2 and part["final_loss"] == full["final_loss"] and part["losses"] == full["losses"][2:]
    stored = read_checkpoint_config(tmp_path / "full")["training"]["config"]
    assert {k: stored[k] for k in AUGMENTED} == AUGMENTED
    plain = train_method("ddpm", ct_dataset, tmp_path / "plain", training={**training, **augment_preset("none", "ct")},
                         **kw)
    assert plain["losses"] != full["losses"]
    with pytest.raises(ConfigError, match=r"training settings differ .*class_drop: 0.3 -> 0.0"):
        train_method("ddpm", ct_dataset, tmp_path / "part", training={"steps": 6, "class_drop": 0.0}, resume=True,
                     progress=False, base=read_checkpoint_config(tmp_path / "part"))


@pytest.mark.parametrize("method", ["unet", "pix2pix", "cyclegan"])
def test_the_baselines_share_the_augmentation(method, ct_dataset, tmp_path):
    from seg2med.training import train_method

    geometry = {k: AUGMENTED[k] for k in ("zoom_range", "rotate_deg", "shift", "p_inside")}
    options = geometry if method == "cyclegan" else AUGMENTED  # unpaired: no prior re-simulation
    training = {"steps": 2, "batch": 2, "lr": 1e-3, "seed": 5, "ckpt_every": 0, "val_every": 0, **options}
    res = train_method(method, ct_dataset, tmp_path / method, preset="tiny", training=training, progress=False)
    assert res["step"] == 2 and np.all(np.isfinite(res["losses"]))
    assert read_checkpoint_config(tmp_path / method)["training"]["config"]["rotate_deg"] == 10.0


def test_old_runs_resume_as_trained_without_augmentation():
    cfg = TrainConfig(class_drop=0.3)
    with pytest.raises(ConfigError, match="class_drop: 0.0 -> 0.3"):  # config.json from before the options existed
        check_trajectory_unchanged({"training": {"config": {"batch": 8}}}, cfg, ("batch", *AUGMENT_FIELDS))
    check_trajectory_unchanged({"training": {"config": {"batch": 8}}}, TrainConfig(), ("batch", *AUGMENT_FIELDS))


# --------------------------------------------------------------------------- refused
@pytest.mark.parametrize(("options", "message"), [
    ({"prior_spread": -1}, "training: prior_spread must be a finite number >= 0"),
    ({"prior_spread": 5}, "training: prior_spread must be <= 3"),
    ({"prior_bias": 2}, "training: prior_bias must be <= 1"),
    ({"prior_blur": 50}, "training: prior_blur must be <= 20"),
    ({"prior_noise": 5000}, r"training: prior_noise must be in \[0, 1000\]"),
    ({"class_drop": 1.5}, r"training: class_drop must be in \[0, 1\]"),
    ({"tissue_drop": "x"}, "training: tissue_drop must be a finite number"),
    ({"p_inside": -0.1}, "training: p_inside must be a finite number >= 0"),
    ({"rotate_deg": 200}, r"training: rotate_deg must be in \[0, 180\]"),
    ({"shift": 0.8}, r"training: shift must be in \[0, 0.5\]"),
    ({"zoom_range": [2.0, 1.0]}, "training: zoom_range must satisfy 0.25 <= min <= max <= 4"),
    ({"zoom_range": 1.5}, r"training: zoom_range must be two numbers \[min, max\]"),
    ({"zoom_range": [0.1, 1.0]}, "training: zoom_range must satisfy"),
])
def test_bad_values_are_refused_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message) as exc:
        TrainConfig.from_dict(options)
    assert "\n" not in str(exc.value)


def test_augmentation_that_does_not_apply_is_refused(ct_dataset, mr_dataset, tmp_path):
    bare = _prepare(tmp_path / "bare", labels=False)
    with pytest.raises(ConfigError, match=f"{bare.resolve()}: prior augmentation re-simulates the prior from the stored "
                                          "label maps, but the dataset was prepared without labels"):
        batch_transforms(TrainConfig(class_drop=0.3), bare, "ddpm")
    assert batch_transforms(TrainConfig(rotate_deg=10.0), bare, "ddpm")  # geometry alone needs no labels
    with pytest.raises(ConfigError, match="cyclegan trains on unpaired batches"):
        batch_transforms(TrainConfig(prior_spread=0.5), ct_dataset, "cyclegan")
    with pytest.raises(ConfigError, match="the prior method fits in one pass"):
        batch_transforms(TrainConfig(rotate_deg=5.0), ct_dataset, "prior")
    with pytest.raises(ConfigError, match="training: prior_noise must be <= 1"):  # MR noise is a fraction of the range
        batch_transforms(TrainConfig(prior_noise=20.0), mr_dataset, "ddpm")
    with pytest.raises(ConfigError, match="unknown augmentation preset 'strong'"):
        augment_preset("strong", "ct")


# --------------------------------------------------------------------------- the command line
def test_cli_augment_robust_stores_the_preset_under_the_yaml(ct_dataset, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("training:\n  class_drop: 0.1\n")
    out = tmp_path / "run"
    res = run_cli(["train", "--data", ct_dataset, "--out", out, "--preset", "tiny", "--steps", "2", "--batch", "2",
                   "--val-every", "0", "--device", "cpu", "--augment", "robust", "--config", cfg], capsys, monkeypatch)
    assert res.code == 0, res.err
    stored = json.loads((out / "config.json").read_text())["training"]["config"]
    want = {**augment_preset("robust", "ct"), "class_drop": 0.1}
    assert {k: stored[k] for k in want} == want and stored["prior_noise"] == 20.0


def test_cli_refuses_prior_augmentation_without_labels_before_the_run_folder(tmp_path, capsys, monkeypatch):
    bare = _prepare(tmp_path / "bare", labels=False)
    out = tmp_path / "run"
    res = run_cli(["train", "--data", bare, "--out", out, "--preset", "tiny", "--steps", "2", "--device", "cpu",
                   "--augment", "robust"], capsys, monkeypatch)
    assert res.code != 0 and "prepared without labels" in res.err and str(bare.resolve()) in res.err
    assert "Traceback" not in res.err and not out.exists()


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_dataset(ts_dir, tmp_path_factory) -> Path:
    import seg2med

    out = tmp_path_factory.mktemp("aug-real") / "ct"
    seg2med.prepare_dataset(ts_dir / "example_ct_sm.nii.gz", ts_dir / "example_seg.nii.gz", out, sequence="ct",
                            tissue_masks=ts_dir / "example_seg_tissue_types", spacing=3.0, size=128, split=(1.0, 0.0, 0.0))
    return out


def test_real_ct_resimulation_ablation_and_inside_views(real_dataset):
    b = _batch(real_dataset)
    b = {k: v[::3] for k, v in b.items()}  # every third of the 30 slices
    lab = b["neighbour_labels"].numpy()
    out = _resim(real_dataset)(b, torch.Generator().manual_seed(0))
    diff = np.abs(out["prior"].numpy() - b["prior"].numpy())
    inner = _interior(lab)
    assert inner.mean() > 0.2 and np.quantile(diff[inner], 0.99) < 1e-5  # the stored prior, inside organs
    organs = (lab != 0) & (lab != BODY_ID) & ~np.isin(lab, TISSUE_IDS)
    assert np.isin(lab, TISSUE_IDS).any() and organs.any()
    out = _resim(real_dataset, class_drop=1.0, tissue_drop=1.0)(b, torch.Generator().manual_seed(0))
    assert set(np.unique(out["neighbour_labels"].numpy())) == {0, BODY_ID}
    assert len(np.unique(out["prior"].numpy()[lab != 0])) == 1  # a body-only prior: one value inside
    geo = RandomGeometry((0.75, 1.5), rotate_deg=10.0, shift=0.1, p_inside=1.0)
    params = geo.sample(b, torch.Generator().manual_seed(0))
    warped = geo.apply(b, params)
    inside = params.inside
    assert inside.float().mean() >= 0.8 and torch.all(warped["mask"][inside] == 1.0)
    cfg = TrainConfig(**augment_preset("robust", "ct"))
    a = augment_step(b, torch.Generator().manual_seed(1), cfg, {"path": str(real_dataset)}, "ddpm")
    assert a["prior"].shape == b["prior"].shape and 0 <= float(a["prior"].min()) and float(a["prior"].max()) <= 1
    assert torch.equal(a["mask"], (a["labels"] != 0).float())

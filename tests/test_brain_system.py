"""The four-contrast brain path on the shared BraTS data: tumour + brain label maps, a multi-contrast slice dataset
(one image and one prior channel per contrast), a diffusion model with four image channels, and generation of T1,
T1ce, T2 and FLAIR on the mask's grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import run_cli
from seg2med.anatomy.brain import BRAIN_SCHEME
from seg2med.io import load_volume, save_volume

from seg2med.api import BRAIN_CONTRASTS as CONTRASTS  # noqa: E402  (the brain system's four contrasts)
NAMES = tuple(CONTRASTS)
TCGA_FILES = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"}


@pytest.fixture(scope="module")
def brain_subjects(data_dir, tcga7294, tmp_path_factory):
    """Two shared subjects as label maps in brats_medddpm + their four real contrasts, cut to a few slices through
    the tumour: Med-DDPM's BraTS 2021 case (its own brain class) and TCGA-DU-7294 (BraTS-Toolkit fusion in the
    BraTS 2021 convention over the brain of its skull-stripped images)."""
    from seg2med.api import ContrastSubject

    d = tmp_path_factory.mktemp("brain")
    mdd = data_dir / "med-ddpm" / "brats2021"
    seg = load_volume(mdd / "seg" / "BraTS2021_01306_seg.nii.gz", kind="labels")
    a = {"labels": save_volume(seg.crop(np.s_[:, :, 70:78]), d / "a_labels.nii.gz")}
    a_images = {n: save_volume(load_volume(mdd / n / f"BraTS2021_01306_{n}.nii.gz").crop(np.s_[:, :, 70:78]), d / f"a_{n}.nii.gz")
                for n in NAMES}
    raw, tumour, labels = tcga7294["raw"], tcga7294["tumour"], tcga7294["labels"]
    b = {"labels": save_volume(labels.crop(np.s_[:, :, 108:116]), d / "b_labels.nii.gz")}
    b_images = {n: save_volume(v.crop(np.s_[:, :, 108:116]), d / f"b_{n}.nii.gz") for n, v in raw.items()}
    subjects = [ContrastSubject("A", a_images, a["labels"], split="train"),
                ContrastSubject("B", b_images, b["labels"], split="val")]
    return subjects, labels, tumour


def test_a_brats_fusion_over_the_skull_stripped_brain_is_one_label_map(brain_subjects):
    _, labels, tumour = brain_subjects
    arr, t = np.asarray(labels.array), np.asarray(tumour.array)
    assert np.array_equal(arr == 1, t == 1) and np.array_equal(arr == 2, t == 2)  # NCR / oedema keep their voxels
    assert not (arr == 3).any()  # this fusion has no enhancing tumour
    brain = arr == 4
    assert 1.0e6 < brain.sum() < 1.3e6 and not (brain & (t > 0)).any()  # 1.24 M non-zero voxels minus the tumour


@pytest.fixture(scope="module")
def brain_dataset(brain_subjects, tmp_path_factory):
    from seg2med.api import prepare_contrasts

    subjects, _, _ = brain_subjects
    out = tmp_path_factory.mktemp("ds") / "brain"
    prepare_contrasts(subjects, out, CONTRASTS, scheme=BRAIN_SCHEME, spacing=4.0, size=64, mr_percentiles=(0.5, 99.5))
    return out


def test_the_dataset_holds_one_channel_per_contrast_each_in_its_own_window(brain_dataset, brain_subjects):
    from seg2med.data import SliceDataset
    from seg2med.data.prepare import get_subject, load_manifest, read_subject_slices, restore_volume

    m = load_manifest(brain_dataset)
    assert [c["name"] for c in m["config"]["contrasts"]] == list(NAMES)
    assert m["config"]["contrasts"][1]["sequence"]["gd_dose"] == 1.0
    rec = get_subject(m, "B")
    assert len(rec["normalization"]["image"]) == 4 and len(rec["normalization"]["prior"]) == 4
    highs = [p["high"] for p in rec["normalization"]["image"]]
    assert len(set(highs)) == 4  # raw TCGA intensities: each contrast its own window
    ds = SliceDataset(brain_dataset, split="val", neighbours=1)
    item = ds[len(ds) // 2]
    assert ds.channels == 4 and item["image"].shape == (4, 64, 64) and item["prior"].shape == (12, 64, 64)
    i = item["index"]
    priors = read_subject_slices(brain_dataset, rec, "axial", key="prior")  # [n, 4, 64, 64]
    for c in range(4):  # contrast-major: the centre prior of contrast c at channel 3c + 1
        assert np.array_equal(item["prior"][3 * c + 1].numpy(), priors[i, c])
    # every prior channel keeps every tissue above the background's 0 and the tissues apart (the signal window
    # [0, p99.5]; a percentile window put the darkest tissue, brain in T2 / FLAIR, onto the background)
    assert m["config"]["prior_window"] == "signal" and rec["normalization"]["prior"][0]["method"] == "signal"
    lab_slices = read_subject_slices(brain_dataset, rec, "axial", key="labels")
    for c in range(4):
        values = {int(k): float(np.median(priors[:, c][lab_slices == k])) for k in (1, 2, 4)}
        assert min(values.values()) > 0.05 and len({round(v, 3) for v in values.values()}) == 3
    # every contrast comes back on its grid in its own units: the medians of oedema and brain within 5 % of the real
    # image's (measured <= 3.5 %; the small necrotic core, partial-volumed by the 4 mm slices, is off by up to 10 %)
    images = read_subject_slices(brain_dataset, rec, "axial", key="image")
    lab = np.asarray(load_volume(brain_subjects[0][1].labels).array)
    for c, name in enumerate(NAMES):
        back = restore_volume(images, rec, "axial", channel=c)
        real = np.asarray(load_volume(brain_subjects[0][1].images[name]).array, dtype=np.float32)
        assert back.shape == real.shape
        for i in (2, 4):
            assert float(np.median(back[lab == i])) == pytest.approx(float(np.median(real[lab == i])), rel=0.05)
        assert np.corrcoef(back[lab > 0], real[lab > 0])[0, 1] > 0.7  # 4 mm slices on the 1 mm grid (T2: 0.75)


def _resim_batch(brain_dataset, **amplitudes):
    """The val slices of the brain dataset (TCGA, +-1 neighbour) and their re-simulation under ``amplitudes``."""
    import torch

    from seg2med.data import PriorResimulation, PriorSource, SliceDataset
    from seg2med.data.dataset import load_dataset_manifest
    from seg2med.training.data import collate

    ds = SliceDataset(brain_dataset, split="val", neighbours=1)
    batch = collate([ds[i] for i in range(len(ds))])
    resim = PriorResimulation(PriorSource.from_manifest(load_dataset_manifest(brain_dataset), str(brain_dataset)),
                              **amplitudes)
    return batch, resim(batch, torch.Generator().manual_seed(0)), resim


def test_the_prior_of_every_contrast_is_re_simulated_from_the_stored_brain_labels(brain_dataset):
    """Prior re-simulation on four contrasts: nothing drawn gives back each contrast's stored prior (its own sequence
    and window; equal inside the tissues, the stored one was resampled linearly), and a draw changes every contrast,
    stays in [0, 1] and keeps the background 0."""
    from seg2med.data.augment import interior

    batch, out, resim = _resim_batch(brain_dataset)
    assert resim.source.contrasts == NAMES and [s.name for s in resim.source.sequences] == ["mprage", "t1ce", "space", "flair"]
    stored, again = batch["prior"].numpy(), out["prior"].numpy()
    assert again.shape == stored.shape == (len(stored), 12, 64, 64)
    stacks = batch["neighbour_labels"].numpy()
    inner = np.stack([[interior(lab) for lab in st] for st in stacks])  # [B, 3, H, W]
    for c in range(4):
        diff = np.abs(again[:, 3 * c : 3 * c + 3] - stored[:, 3 * c : 3 * c + 3])[inner]
        assert inner.mean() > 0.1 and float(np.median(diff)) == 0.0 and np.quantile(diff, 0.95) < 1e-4, NAMES[c]
    assert resim.stored_mismatch(batch) == 0.0
    _, drawn, _ = _resim_batch(brain_dataset, tissue_spread=0.5, bias_field=0.3, noise=0.02, blur=1.5)
    p = drawn["prior"].numpy()
    assert p.min() >= 0.0 and p.max() <= 1.0 and np.all(p[np.tile(stacks == 0, (1, 4, 1, 1))] == 0.0)
    for c in range(4):
        assert np.abs(p[:, 3 * c + 1] - stored[:, 3 * c + 1]).mean() > 0.01, NAMES[c]


def test_the_contrasts_share_the_tissue_draw(brain_dataset):
    """One draw per slice for all four priors: a tissue's relaxation times change alike in every contrast, so in the
    brain (almost no gadolinium) T1 and T1ce change by the same factor; the noise of each contrast is its own."""
    batch, out, _ = _resim_batch(brain_dataset, tissue_spread=0.5)
    stored, p = batch["prior"].numpy(), out["prior"].numpy()
    brain = batch["labels"].numpy()[:, 0] == 4
    ratio = {c: p[:, 3 * c + 1] / np.maximum(stored[:, 3 * c + 1], 1e-6) for c in range(4)}
    changed = 0
    for i in range(len(p)):
        ok = brain[i] & (p[i, 1] < 0.99) & (p[i, 4] < 0.99) & (stored[i, 1] > 0.05)  # unclipped by the window
        if ok.sum() < 50:
            continue
        r1, r1ce = float(np.median(ratio[0][i][ok])), float(np.median(ratio[1][i][ok]))
        assert r1 == pytest.approx(r1ce, abs=0.03)  # measured within 0.01 (gadolinium 0.005 mM in brain)
        changed += abs(r1 - 1.0) > 0.05
    assert changed >= 1  # the draw did change the brain's T1 (so the equality is not vacuous)
    _, noisy, _ = _resim_batch(brain_dataset, noise=0.02)
    n = noisy["prior"].numpy() - _resim_batch(brain_dataset)[1]["prior"].numpy()  # the noise alone (same labels)
    assert np.abs(n[:, 1][brain]).mean() > 1e-3  # there is noise
    assert abs(np.corrcoef(n[:, 1][brain], n[:, 4][brain])[0, 1]) < 0.2  # T1 and T1ce noise independent


def test_the_robust_preset_trains_the_four_contrast_model_keeping_the_tumour_classes(brain_dataset, tmp_path):
    """`--augment robust` on a brain dataset: the prior re-simulated for every contrast plus the geometry, and no class
    drop (the tumour compartments are the classes; the preset's brain values); the run records what it used."""
    from seg2med.io.checkpoints import read_checkpoint_config
    from seg2med.training.config import augment_preset
    from seg2med.training.methods import train_method

    assert augment_preset("robust", "mr", BRAIN_SCHEME)["class_drop"] == 0.0 < augment_preset("robust", "mr")["class_drop"]
    train_method("ddpm", brain_dataset, tmp_path / "r", preset="tiny", augment="robust",
                 training={"steps": 2, "batch": 2, "val_every": 0, "device": "cpu"}, progress=False)
    cfg = read_checkpoint_config(tmp_path / "r")["training"]["config"]
    assert cfg["prior_spread"] == 0.5 and cfg["prior_noise"] == 0.02 and cfg["class_drop"] == 0.0
    assert cfg["zoom_range"] == [0.75, 1.5] and cfg["augment_flips"] is True


@pytest.fixture(scope="module")
def brain_run(brain_dataset, tmp_path_factory):
    """A tiny four-channel diffusion model, 3 steps: what the generation path needs (not a quality test)."""
    from seg2med.training.methods import train_method

    out = tmp_path_factory.mktemp("run") / "brain-tiny"
    train_method("ddpm", brain_dataset, out, preset="tiny", scheduler={"prediction_type": "v_prediction"},
                 training={"steps": 3, "batch": 2, "val_every": 0, "device": "cpu"}, progress=False)
    return out


def test_the_model_has_four_image_channels_and_records_the_contrasts(brain_run):
    cfg = json.loads((brain_run / "config.json").read_text())
    assert cfg["model"]["image_channels"] == 4
    assert [c["name"] for c in cfg["data"]["contrasts"]] == list(NAMES)
    assert [w["low"] < w["high"] for w in cfg["data"]["image_normalization"]["channels"]] == [True] * 4


def test_generate_writes_the_four_contrasts_on_the_mask_grid(brain_run, brain_subjects, tmp_path, capsys, monkeypatch):
    subjects, _, _ = brain_subjects
    labels = subjects[1].labels
    out = tmp_path / "synth"
    res = run_cli(["generate", "--model", brain_run, "--labels", labels, "--scheme", BRAIN_SCHEME, "--out", out,
                   "--steps", "2", "--seed", "3"], capsys, monkeypatch)
    assert res.code == 0, res.err
    ref = nib.load(labels)
    side = json.loads((out / "generated.json").read_text())
    assert [c["name"] for c in side["contrasts"]] == list(NAMES) and set(side["qc_contrasts"]) == set(NAMES)
    lab = np.asarray(ref.dataobj)
    arrays = {}
    for n in NAMES:
        img = nib.load(out / f"{n}.nii.gz")
        assert img.shape == ref.shape and np.array_equal(img.affine, ref.affine)
        arrays[n] = np.asarray(img.dataobj)
        assert np.isfinite(arrays[n]).all()
        window = side["image_normalization"][NAMES.index(n)]
        # background outside the body (the labels' closed hull, a little more than the labelled voxels)
        assert np.isclose(arrays[n][lab == 0], window["low"]).mean() > 0.9
    assert len({float(np.median(a[lab == 4])) for a in arrays.values()}) == 4  # four different images
    assert set(side["files"]) == {f"{n}.nii.gz" for n in NAMES}
    # the same seed gives the same four volumes; a NIfTI name gives S_<contrast>.nii.gz beside S.json
    res = run_cli(["generate", "--model", brain_run, "--labels", labels, "--scheme", BRAIN_SCHEME, "--out",
                   tmp_path / "s.nii.gz", "--steps", "2", "--seed", "3"], capsys, monkeypatch)
    assert res.code == 0, res.err
    for n in NAMES:
        assert np.array_equal(np.asarray(nib.load(tmp_path / f"s_{n}.nii.gz").dataobj), arrays[n])
    assert (tmp_path / "s.json").is_file()


def test_multi_contrast_models_refuse_what_they_cannot_do_on_one_line(brain_run, brain_subjects, brain_dataset,
                                                                      tmp_path, capsys, monkeypatch):
    labels = brain_subjects[0][1].labels
    res = run_cli(["generate", "--model", brain_run, "--labels", labels, "--scheme", BRAIN_SCHEME, "--out",
                   tmp_path / "x", "--tri-planar"], capsys, monkeypatch)
    assert res.code == 2 and "--tri-planar" in res.err and "t1, t1ce, t2, flair" in res.err
    assert not (tmp_path / "x").exists()
    res = run_cli(["train", "--data", brain_dataset, "--out", tmp_path / "u", "--method", "unet", "--steps", "1"],
                  capsys, monkeypatch)
    assert res.code == 2 and "4 contrasts" in res.err and not (tmp_path / "u").exists()
    (tmp_path / "phases.yaml").write_text("training:\n  prior_phases: [arterial]\n")
    res = run_cli(["train", "--data", brain_dataset, "--out", tmp_path / "r", "--preset", "tiny", "--steps", "1",
                   "--augment", "robust", "--config", tmp_path / "phases.yaml"], capsys, monkeypatch)
    assert res.code == 2 and "contrast phases" in res.err and not (tmp_path / "r").exists()


def test_a_resnet_unet_segmenter_takes_the_four_contrasts_and_segments_on_the_input_grid(brain_dataset, brain_subjects,
                                                                                        tmp_path, capsys, monkeypatch):
    """`train-segmenter --backbone resnet10` on the four-contrast dataset: a MONAI FlexibleUNet (random init, nothing
    downloaded) with four input channels; it segments four real volumes back on their grid (3 steps: plumbing only)."""
    from seg2med.inference.segment import load_segmenter, segment_volume, volume_features

    run = tmp_path / "seg"
    res = run_cli(["train-segmenter", "--data", brain_dataset, "--out", run, "--steps", "3", "--batch", "4",
                   "--backbone", "resnet10", "--device", "cpu"], capsys, monkeypatch)
    assert res.code == 0, res.err
    cfg = json.loads((run / "config.json").read_text())
    net = cfg["model"]["network"]
    assert net["class"] == "FlexibleUNet" and net["args"]["in_channels"] == 4 and net["args"]["pretrained"] is False
    assert cfg["model"]["classes"][:5] == [0, 1, 2, 3, 4]  # + seg2med's body class where the hull filled gaps
    seg = load_segmenter(run)
    subject = brain_subjects[0][1]
    vols = [load_volume(subject.images[n]) for n in NAMES]
    body = np.asarray(load_volume(subject.labels).array) > 0
    out = segment_volume(vols, seg, body=body)
    assert out.shape == vols[0].shape and np.array_equal(out.affine, vols[0].affine)
    assert set(np.unique(out.array)) <= set(cfg["model"]["classes"])
    assert (out.array[~body] != 0).mean() < 0.02  # labels only in the body (up to the 4 mm slices' edge)
    feats = volume_features(vols, seg, body=body)
    assert feats.shape[1] == 512 and np.isfinite(feats).all()  # resnet10's deepest stage, pooled
    from seg2med.errors import InputError

    with pytest.raises(InputError, match="takes 4 image"):
        segment_volume(vols[:1], seg, body=body)
    res = run_cli(["train-segmenter", "--data", brain_dataset, "--out", tmp_path / "bad", "--steps", "1",
                   "--backbone", "vgg16"], capsys, monkeypatch)
    assert res.code == 2 and "resnet10" in res.err and "Traceback" not in res.err


def test_lesion_regenerates_the_four_contrasts_of_the_edited_mask(brain_run, brain_subjects, tmp_path, capsys,
                                                                  monkeypatch):
    """`lesion --model`: the edited mask and the four contrasts generated from it, side by side, on the mask's grid."""
    labels = brain_subjects[0][1].labels
    out, images = tmp_path / "edited.nii.gz", tmp_path / "images"
    res = run_cli(["lesion", "--labels", labels, "--out", out, "--insert", "--radius", "6", "--edema", "3", "--seed",
                   "1", "--model", brain_run, "--images-out", images, "--steps", "2"], capsys, monkeypatch)
    assert res.code == 0, res.err
    edited = nib.load(out)
    for n in NAMES:
        img = nib.load(images / f"{n}.nii.gz")
        assert img.shape == edited.shape and np.array_equal(img.affine, edited.affine)
    side = json.loads((images / "generated.json").read_text())
    assert side["scheme"].startswith("brats_medddpm")
    res = run_cli(["lesion", "--labels", labels, "--out", tmp_path / "e2.nii.gz", "--scale", "2", "--model", brain_run],
                  capsys, monkeypatch)
    assert res.code == 2 and "--images-out" in res.err and not (tmp_path / "e2.nii.gz").exists()


def test_evaluate_brain_scores_the_segmenter_on_synthetic_and_real_contrasts(brain_run, brain_dataset, brain_subjects,
                                                                             tmp_path, capsys, monkeypatch):
    """`evaluate --brain`: Dice per BraTS region of the segmenter on the generated contrasts vs the input mask, beside
    its Dice on the real contrasts, and SSIM / PSNR per contrast inside the brain. The real images scored as the
    'synthetic' ones must get exactly the real Dice and SSIM 1 (consistency)."""
    from seg2med.metrics import dice_per_region

    seg = tmp_path / "seg"
    assert run_cli(["train-segmenter", "--data", brain_dataset, "--out", seg, "--steps", "2", "--batch", "4",
                    "--device", "cpu"], capsys, monkeypatch).code == 0
    subject = brain_subjects[0][1]
    real = tmp_path / "real"
    real.mkdir()
    for n in NAMES:
        save_volume(load_volume(subject.images[n]), real / f"{n}.nii.gz")
    synth = tmp_path / "synth"
    assert run_cli(["generate", "--model", brain_run, "--labels", subject.labels, "--scheme", BRAIN_SCHEME, "--out",
                    synth, "--steps", "2"], capsys, monkeypatch).code == 0
    for pred, name in ((synth, "rep"), (real, "self")):
        res = run_cli(["evaluate", "--brain", "--pred", pred, "--labels", subject.labels, "--ref", real, "--segmenter",
                       seg, "--out", tmp_path / name], capsys, monkeypatch)
        assert res.code == 0, res.err
    rep = json.loads((tmp_path / "rep" / "summary.json").read_text())
    own = json.loads((tmp_path / "self" / "summary.json").read_text())
    assert set(rep["regions"]) == {"whole_tumor", "tumor_core", "enhancing_tumor"} and set(rep["contrasts"]) == set(NAMES)
    for r, v in own["regions"].items():
        assert v["synthetic"] == v["real"]  # None (JSON null) where the region is in neither map
        assert v["real"] == rep["regions"][r]["real"]
    assert all(v["ssim"] == pytest.approx(1.0) and v["psnr"] is None for v in own["contrasts"].values())  # inf
    assert all(-1.0 <= v["ssim"] < 0.999 for v in rep["contrasts"].values())
    assert (tmp_path / "rep" / "regions.csv").read_text().startswith("region,dice_synthetic,dice_real")
    assert "Dice" in res.out and "SSIM" in res.out
    # the regions are unions of compartments
    a = np.array([[0, 1, 2], [3, 4, 0]])
    d = dice_per_region(a, a, {"wt": [1, 2, 3], "et": [3], "none": [7]})
    assert d["wt"] == 1.0 and d["et"] == 1.0 and np.isnan(d["none"])
    assert dice_per_region(np.array([[1, 0]]), np.array([[2, 0]]), {"wt": [1, 2], "c": [1]}) == {"wt": 1.0, "c": 0.0}


def test_the_demo_brain_case_writes_a_phantom_mask_its_four_contrasts_and_a_preview(brain_run, tmp_path, monkeypatch):
    """`demo --brain` with a brain model (here the 3-step test run in place of the shipped brain-demo): a brain phantom
    with a seeded random tumour, its four contrasts on the phantom's grid and one preview."""
    import seg2med.inference as inference
    from seg2med import api
    from seg2med.anatomy.lesion import brain_phantom

    monkeypatch.setattr(api, "BRAIN_DEMO", str(brain_run))
    monkeypatch.setattr(inference, "list_models", lambda: (str(brain_run),))  # the body models are not "shipped"
    out = tmp_path / "demo"
    names = api.run_demo(out, steps=2, seed=4, brain=True, device="cpu")
    mask = nib.load(names["brain_labels"])
    assert np.array_equal(np.asarray(mask.dataobj), np.asarray(brain_phantom(seed=4).array))
    for n in NAMES:
        img = nib.load(out / f"brain_{n}.nii.gz")
        assert img.shape == mask.shape and np.array_equal(img.affine, mask.affine)
    assert names["brain_preview"].is_file() and (out / "brain.json").is_file()
    assert "ct_synthetic" not in names and (out / "ct_prior.nii.gz").is_file()


def test_prepare_reads_a_brats_layout_folder_and_tells_each_masks_convention(brain_subjects, tmp_path, capsys,
                                                                            monkeypatch):
    """`prepare --brats DIR`: one folder per case (BraTS 2021 names, BraTS-Toolkit's _t1c / _fla); the Med-DDPM mask
    (3 and 4) and the BraTS-Toolkit fusion (1, 2: the 2017-2021 convention) are each read in their own scheme."""
    from seg2med.data.prepare import load_manifest

    subjects = brain_subjects[0]
    root = tmp_path / "brats"
    for s, case, names in ((subjects[0], "BraTS2021_01306", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}),
                           (subjects[1], "TCGA-DU-7294", TCGA_FILES)):
        d = root / case
        d.mkdir(parents=True)
        for n, f in names.items():
            save_volume(load_volume(s.images[n]), d / f"{case}_{f}.nii.gz")
        lab = load_volume(s.labels, kind="labels")
        arr = np.asarray(lab.array)
        if case.startswith("TCGA"):  # the original fusion: tumour only, BraTS 2017-2021 ids
            arr = np.where(arr == 4, 0, arr)
        save_volume(lab.like(arr.astype(np.uint8)), d / f"{case}_seg.nii.gz")
    out = tmp_path / "ds"
    res = run_cli(["prepare", "--brats", root, "--out", out, "--spacing", "4", "--size", "64"], capsys, monkeypatch)
    assert res.code == 0, res.err
    m = load_manifest(out)
    assert {r["id"]: r["extra"]["scheme"] for r in m["subjects"]} == {"BraTS2021_01306": "brats_medddpm",
                                                                      "TCGA-DU-7294": "brats2021"}
    assert [c["name"] for c in m["config"]["contrasts"]] == list(NAMES) and m["config"]["scheme"] == BRAIN_SCHEME
    (root / "TCGA-DU-7294" / "TCGA-DU-7294_fla.nii.gz").unlink()
    res = run_cli(["prepare", "--brats", root, "--out", tmp_path / "ds2"], capsys, monkeypatch)
    assert res.code == 2 and "TCGA-DU-7294: no flair file" in res.err and not (tmp_path / "ds2").exists()
    res = run_cli(["prepare", "--brats", root, "--images", root, "--out", tmp_path / "ds3"], capsys, monkeypatch)
    assert res.code == 2 and "do not apply" in res.err

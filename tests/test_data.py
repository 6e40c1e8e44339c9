"""Tests of seg2med.data: normalisation, invertible geometry, dataset folder, SliceDataset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from seg2med.data import (
    AXES,
    CTWindow,
    CTWindowd,
    PercentileWindow,
    PercentileWindowd,
    PrepareConfig,
    Reorientation,
    SliceDataset,
    SliceGeometry,
    SubjectInput,
    denormalize,
    from_slices,
    get_subject,
    load_manifest,
    normalize_volume,
    prepare_dataset,
    read_shard,
    read_subject_slices,
    restore_labels,
    restore_volume,
    split_subjects,
    to_slices,
)
from seg2med.errors import ConfigError, GridMismatchError, InputError, OutputExistsError
from seg2med.io import Volume, load_volume


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ct(ts_dir: Path) -> Volume:
    return load_volume(ts_dir / "example_ct_sm.nii.gz")


@pytest.fixture(scope="module")
def ct_labels(ts_dir: Path) -> Volume:
    return load_volume(ts_dir / "example_seg.nii.gz", kind="labels")


@pytest.fixture(scope="module")
def mr(ts_dir: Path) -> Volume:
    return load_volume(ts_dir / "example_mr_sm.nii.gz")


def _flip_xy(vol: Volume) -> Volume:
    """Same physical image stored LPS-like (array axes 0 and 1 reversed)."""
    n = vol.shape
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = n[0] - 1, n[1] - 1
    return Volume(np.ascontiguousarray(vol.array[::-1, ::-1]), vol.affine @ flip, None, None)


def _subject(sid: str, image: Volume, labels: Volume) -> SubjectInput:
    prior = image.like(ndimage.gaussian_filter(image.array, 1.0).astype(np.float32))
    return SubjectInput(sid, image, prior, image.array > -500, labels)


@pytest.fixture(scope="module")
def subjects(ct: Volume, ct_labels: Volume) -> list[SubjectInput]:
    """Four CT subjects fabricated from subject A (crops; one stored flipped), each <= 64 x 64 voxels in-plane."""
    crops = {
        "A": (slice(30, 94), slice(20, 80), slice(0, 30)),
        "B": (slice(30, 94), slice(20, 80), slice(0, 30)),
        "C": (slice(40, 100), slice(25, 85), slice(5, 25)),
        "D": (slice(20, 80), slice(30, 90), slice(10, 30)),
    }
    out = []
    for sid, sl in crops.items():
        img, lab = ct.crop(sl), ct_labels.crop(sl)
        if sid == "B":
            img, lab = _flip_xy(img), _flip_xy(lab)
        out.append(_subject(sid, img, lab))
    return out


CFG = dict(modality="ct", spacing=1.0, size=192, axes=("axial", "coronal"), shard_size=16, split_seed=3, compress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, subjects: list[SubjectInput]) -> tuple[Path, dict, list[int]]:
    out = tmp_path_factory.mktemp("ds") / "slices"
    calls: list[int] = []
    manifest = prepare_dataset(subjects, out, PrepareConfig(**CFG), progress=calls.append)
    return out, manifest, calls


def _body_error(restored: np.ndarray, original: Volume, lo: float = -1000, hi: float = 1000) -> np.ndarray:
    body = original.array > -500
    return np.abs(restored - np.clip(original.array, lo, hi))[body]


# --------------------------------------------------------------------------- normalisation
def test_ct_window_forward_inverse() -> None:
    hu = np.array([-3000, -1000, -500, 0, 40.5, 999, 1000, 2500], dtype=np.float32)
    win = CTWindow()
    norm = win(hu)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm, [0, 0, 0.25, 0.5, 0.52025, 0.9995, 1, 1], atol=1e-6)
    inside = (hu >= -1000) & (hu <= 1000)
    np.testing.assert_allclose(win.inverse(norm)[inside], hu[inside], atol=1e-3)
    np.testing.assert_array_equal(win.inverse(norm)[~inside], [-1000, 1000])
    assert win.params == {"method": "ct_window", "low": -1000.0, "high": 1000.0, "level": 0.0, "width": 2000.0}
    soft = CTWindow(40, 400)
    assert (soft.low, soft.high) == (-160, 240)
    t = torch.tensor([-160.0, 40.0, 240.0])
    assert torch.allclose(soft(t), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ConfigError):
        CTWindow(0, 0)


def test_mr_percentile_window(mr: Volume) -> None:
    body = mr.array > 50
    arr = mr.array
    p10, p90 = np.percentile(arr[body], [10, 90])
    tr = PercentileWindow()
    norm = tr(arr, mask=body)
    assert tr.params["low"] == pytest.approx(p10) and tr.params["high"] == pytest.approx(p90)
    assert tr.params["percentiles"] == [10.0, 90.0] and tr.params["masked"] is True
    assert norm.min() == 0.0 and norm.max() == 1.0
    inside = (arr >= p10) & (arr <= p90)
    np.testing.assert_allclose(tr.inverse(norm)[inside], arr[inside], atol=1e-3)
    # from the JSON-recorded params alone
    params = json.loads(json.dumps(tr.params))
    np.testing.assert_allclose(denormalize(norm, params)[inside], arr[inside], atol=1e-3)
    # p1-p99 option: wider window, exact values recorded
    wide = PercentileWindow(1, 99)
    wide(arr, mask=body)
    p1, p99 = np.percentile(arr[body], [1, 99])
    assert (wide.params["low"], wide.params["high"]) == pytest.approx((p1, p99))
    assert p1 < p10 and p99 > p90
    # without a mask the background pulls the low end down
    unmasked = PercentileWindow()
    unmasked(arr)
    assert unmasked.params["masked"] is False and unmasked.params["low"] < p10
    with pytest.raises(ConfigError):
        PercentileWindow(90, 10)
    with pytest.raises(InputError):
        PercentileWindow()(arr, mask=np.zeros_like(body))


def test_normalize_volume_by_modality(ct: Volume, mr: Volume) -> None:
    n_ct, p_ct = normalize_volume(ct.array, "ct")
    assert p_ct["low"] == -1000 and p_ct["high"] == 1000 and p_ct["modality"] == "ct"
    n_mr, p_mr = normalize_volume(mr.array, "MR", mask=mr.array > 50, mr_percentiles=(1, 99))
    assert p_mr["method"] == "percentile" and p_mr["percentiles"] == [1.0, 99.0]
    assert 0 <= n_mr.min() and n_mr.max() <= 1
    with pytest.raises(ConfigError):
        normalize_volume(ct.array, "pet")


def test_dictionary_wrappers(mr: Volume) -> None:
    d = {"image": mr.array, "prior": mr.array * 2, "body": mr.array > 50}
    out = PercentileWindowd(keys=("image", "prior"), mask_key="body")(d)
    assert out["prior_norm"]["low"] == pytest.approx(2 * out["image_norm"]["low"])
    back = PercentileWindowd(keys=("image", "prior")).inverse(out)
    inside = (mr.array >= out["image_norm"]["low"]) & (mr.array <= out["image_norm"]["high"])
    np.testing.assert_allclose(back["image"][inside], mr.array[inside], atol=1e-3)
    ct = CTWindowd(keys="image")({"image": np.array([-1000.0, 0.0, 1000.0])})
    np.testing.assert_allclose(ct["image"], [0, 0.5, 1])
    assert ct["image_norm"]["width"] == 2000


# --------------------------------------------------------------------------- geometry
def test_reorientation_exact_lps(mr: Volume) -> None:
    reo = Reorientation.from_affine(mr.affine, mr.shape)
    assert reo.to_dict()["axcodes"] == "LPS" and not reo.is_identity
    canon = reo.apply(mr.array)
    ref = nib.as_closest_canonical(nib.Nifti1Image(mr.array, mr.affine))
    np.testing.assert_array_equal(canon, np.asarray(ref.dataobj))
    np.testing.assert_allclose(reo.canonical_affine, ref.affine)
    assert "".join(nib.aff2axcodes(reo.canonical_affine)) == "RAS"
    back = Reorientation.from_dict(json.loads(json.dumps(reo.to_dict()))).undo(canon)
    assert np.array_equal(back, mr.array)


@pytest.mark.parametrize("spacing,size", [(1.0, 384), (3.0, 256)])
@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_geometry_round_trip_ct(ct: Volume, spacing: float, size: int, axis: str) -> None:
    reo = Reorientation.from_affine(ct.affine, ct.shape)
    planned = SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, axis, spacing, size)
    geo = SliceGeometry.from_dict(json.loads(json.dumps(planned.to_dict())))
    assert geo == planned
    slices = to_slices(ct.array, reo, geo)
    assert slices.shape == (ct.shape[AXES[axis]], size, size)
    assert geo.crop == ((0, 0), (0, 0))
    back = from_slices(slices, reo, geo)
    assert back.shape == ct.shape and np.array_equal(reo.original_affine, ct.affine)
    err = _body_error(back, ct, -np.inf, np.inf)
    assert err.mean() < 15 and np.percentile(err, 99) < 50
    if spacing == 3.0:  # same as the input: near-exact
        assert err.max() < 1e-3
    # labels: nearest neighbour, exact
    lab = (ct.array > 100).astype(np.uint8)
    assert np.array_equal(from_slices(to_slices(lab, reo, geo, order=0), reo, geo, order=0), lab)


def test_geometry_crop_and_pad(ct: Volume) -> None:
    reo = Reorientation.from_affine(ct.affine, ct.shape)
    geo = SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, "axial", 1.0, (256, 320))
    assert geo.resampled_shape == (366, 303)
    assert geo.crop == ((55, 55), (0, 0)) and geo.pad == ((0, 0), (8, 9))
    slices = to_slices(ct.array, reo, geo)
    assert slices.shape == (30, 256, 320) and np.all(slices[:, :, :8] == 0)
    back = from_slices(slices, reo, geo, fill=-2000)
    # x voxels kept by the crop come back exactly; the cropped-away ones are the fill value
    keep = slice(19, 103)  # 366 mm -> crop 55 mm each side of 3 mm voxels
    np.testing.assert_allclose(back[keep], ct.array[keep], atol=1e-3)
    assert np.all(back[:18] == -2000) and np.all(back[104:] == -2000)


def test_cut_fraction_is_the_share_of_the_body_a_round_trip_loses(ct: Volume) -> None:
    reo = Reorientation.from_affine(ct.affine, ct.shape)
    body = reo.apply(ct.array > -500)
    for size, spacing in [(64, 3.0), (96, 2.0), (200, 2.5)]:
        geo = SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, "axial", spacing, size)
        back = from_slices(to_slices(body.astype(np.uint8), reo, geo, order=0), reo, geo, order=0)
        lost = float((body & (back == 0)).sum() / body.sum())
        assert geo.cut_fraction(body) == pytest.approx(lost, abs=0.01)
        assert (geo.cut_fraction(body) > 0.05) == (size * spacing < 250)
    assert geo.cut_fraction(np.zeros_like(body)) == 0.0


def test_prepare_warns_when_the_slices_cut_the_body(tmp_path: Path, subjects: list[SubjectInput], caplog) -> None:
    with caplog.at_level("WARNING", logger="seg2med.data.prepare"):
        prepare_dataset(subjects[:1], tmp_path / "narrow", PrepareConfig(**{**CFG, "size": 64, "axes": ("axial",)}))
    assert "of the body lies outside the 64 x 64 px slices at 1 mm and is cut away" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="seg2med.data.prepare"):
        prepare_dataset(subjects[:1], tmp_path / "wide", PrepareConfig(**{**CFG, "axes": ("axial",)}))
    assert "cut away" not in caplog.text


def test_geometry_mr_lps_coronal(mr: Volume) -> None:
    reo = Reorientation.from_affine(mr.affine, mr.shape)
    geo = SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, "coronal", 3.0, 128)
    back = from_slices(to_slices(mr.array, reo, geo), reo, geo)
    np.testing.assert_allclose(back, mr.array, atol=1e-3)
    with pytest.raises(ConfigError):
        SliceGeometry.plan(reo.canonical_shape, reo.canonical_spacing, "oblique")
    with pytest.raises(InputError):
        geo.undo(np.zeros((3, 128, 128)))


# --------------------------------------------------------------------------- splits
def test_split_subjects() -> None:
    ids = [f"s{i:02d}" for i in range(20)]
    sp = split_subjects(ids, (0.7, 0.15, 0.15), seed=1)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    assert sorted(sum(sp.values(), [])) == ids
    assert split_subjects(ids, seed=1) == sp
    assert len({json.dumps(split_subjects(ids, seed=s)) for s in range(5)}) > 1
    assert [len(v) for v in split_subjects(["a"]).values()] == [1, 0, 0]
    assert len(split_subjects(["a", "b"], (0.5, 0.25, 0.25))["train"]) >= 1
    with pytest.raises(ConfigError):
        split_subjects(ids, (0.5, 0.5, 0.5))


# --------------------------------------------------------------------------- prepare_dataset
def test_prepare_manifest(dataset: tuple[Path, dict, list[int]], subjects: list[SubjectInput]) -> None:
    out, manifest, calls = dataset
    assert calls == [1, 1, 1, 1]
    assert load_manifest(out) == json.loads(json.dumps(manifest))
    assert manifest["format_version"] == 1 and manifest["config"]["axes"] == ["axial", "coronal"]
    assert manifest["config"]["ct_window"] == [0.0, 2000.0] and manifest["config"]["split"] == [0.7, 0.15, 0.15]
    ids = [s.subject_id for s in subjects]
    split_ids = sum(manifest["splits"].values(), [])
    assert sorted(split_ids) == ids and len(set(split_ids)) == len(ids)
    assert manifest["splits"] == split_subjects(ids, (0.7, 0.15, 0.15), seed=3)
    assert len(manifest["splits"]["train"]) >= 1
    for s in subjects:
        rec = get_subject(manifest, s.subject_id)
        assert rec["split"] in manifest["splits"] and s.subject_id in manifest["splits"][rec["split"]]
        assert rec["original"]["shape"] == list(s.image.shape)
        np.testing.assert_array_equal(rec["original"]["affine"], s.image.affine)
        assert rec["normalization"]["image"]["low"] == -1000 and "prior" in rec["normalization"]
        assert set(rec["orientation"]) >= {"transform", "original_shape", "canonical_affine"}
        for axis in ("axial", "coronal"):
            n = rec["geometry"][axis]["n_slices"]
            assert n == rec["orientation"]["canonical_shape"][AXES[axis]]
            entries = rec["shards"][axis]
            assert entries[0]["start"] == 0 and entries[-1]["stop"] == n
            for e in entries:
                shard = read_shard(out / e["file"])
                k = e["stop"] - e["start"]
                assert 0 < k <= 16
                assert shard["image"].shape == shard["prior"].shape == (k, 192, 192)
                assert shard["image"].dtype == np.float32 and shard["mask"].dtype == np.uint8
                assert shard["image"].min() >= 0 and shard["image"].max() <= 1
                np.testing.assert_array_equal(shard["index"], np.arange(e["start"], e["stop"]))
                assert np.all(shard["image"][shard["mask"] == 0] == 0)
    assert manifest["n_slices"]["axial"] == 30 + 30 + 20 + 20
    assert get_subject(manifest, "B")["orientation"]["axcodes"] == "LPS"


@pytest.mark.parametrize("sid", ["A", "B", "C"])
@pytest.mark.parametrize("axis", ["axial", "coronal"])
def test_restore_volume_from_shards(
    dataset: tuple[Path, dict, list[int]], subjects: list[SubjectInput], sid: str, axis: str
) -> None:
    out, manifest, _ = dataset
    rec, subj = get_subject(manifest, sid), next(s for s in subjects if s.subject_id == sid)
    slices = read_subject_slices(out, rec, axis)
    hu = restore_volume(torch.from_numpy(slices)[:, None], rec, axis, modality="ct")
    assert hu.shape == subj.image.shape and hu.dtype == np.float32
    err = _body_error(hu, subj.image)
    assert err.mean() < 15 and np.percentile(err, 99) < 50
    assert np.all(hu[~subj.body] == -1000)  # background = bottom of the window
    labels = restore_labels(read_subject_slices(out, rec, axis, "labels"), rec, axis)
    np.testing.assert_array_equal(labels, subj.labels.array)
    assert np.array_equal(restore_labels(read_subject_slices(out, rec, axis, "mask"), rec, axis), subj.body)
    with pytest.raises(ConfigError):
        restore_volume(slices, rec, axis, modality="mr")


def test_prepare_refuses_existing_output(dataset: tuple[Path, dict, list[int]], subjects: list[SubjectInput]) -> None:
    out, _, _ = dataset
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(OutputExistsError):
        prepare_dataset(subjects[:1], out, PrepareConfig(**CFG))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["slices"]


def test_prepare_overwrite_and_safetensors(tmp_path: Path, subjects: list[SubjectInput]) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    cfg = PrepareConfig(modality="ct", spacing=3.0, size=64, shard_format="safetensors", split_seed=1)
    with pytest.raises(OutputExistsError, match="seg2med did not write"):  # a user's folder is never replaced
        prepare_dataset(subjects[:3], out, cfg, overwrite=True)
    assert (out / "stale.txt").read_text() == "old"
    (out / "stale.txt").unlink()
    prepare_dataset(subjects[:4], out, cfg)
    m = prepare_dataset(subjects[:3], out, cfg, overwrite=True)  # its own dataset is replaced as a whole
    assert not any(s["id"] == subjects[3].subject_id for s in load_manifest(out)["subjects"])
    assert not list(out.rglob(f"{subjects[3].subject_id}_*"))  # the dropped subject's shards went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    rec = m["subjects"][0]
    f = rec["shards"]["axial"][0]["file"]
    assert f.endswith(".safetensors") and read_shard(out / f)["image"].shape == (30, 64, 64)
    hu = restore_volume(read_subject_slices(out, rec, "axial"), rec, "axial")
    assert _body_error(hu, subjects[0].image).max() < 1e-2  # spacing = input spacing: near-exact


def test_prepare_rejects_bad_inputs(tmp_path: Path, subjects: list[SubjectInput], ct: Volume) -> None:
    out = tmp_path / "ds"
    good = subjects[0]
    aff = good.prior.affine.copy()
    aff[0, 3] += 3.0
    shifted = Volume(good.prior.array, aff, None)
    bad_grid = SubjectInput("X", good.image, shifted, good.body)
    with pytest.raises(GridMismatchError):
        prepare_dataset([*subjects, bad_grid], out, PrepareConfig())
    with pytest.raises(GridMismatchError):
        prepare_dataset([SubjectInput("X", good.image, good.prior, good.body[:-1])], out, PrepareConfig())
    nan = good.image.array.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError):
        prepare_dataset([SubjectInput("X", good.image.like(nan), good.prior, good.body)], out, PrepareConfig())
    with pytest.raises(InputError):
        prepare_dataset([subjects[0], subjects[0]], out, PrepareConfig())
    with pytest.raises(ConfigError):
        prepare_dataset(subjects, out, PrepareConfig(axes=("oblique",)))
    assert list(tmp_path.iterdir()) == []


def test_prepare_mr(tmp_path: Path, mr: Volume) -> None:
    body = mr.array > 50
    prior = mr.like(ndimage.gaussian_filter(mr.array, 1.0))
    cfg = PrepareConfig(modality="mr", spacing=3.0, size=128, axes=("axial",), mr_percentiles=(1, 99))
    m = prepare_dataset([SubjectInput("C", mr, prior, body)], tmp_path / "mr", cfg)
    rec = m["subjects"][0]
    p = rec["normalization"]["image"]
    assert p["method"] == "percentile" and p["percentiles"] == [1.0, 99.0]
    assert (p["low"], p["high"]) == pytest.approx(tuple(np.percentile(mr.array[body], [1, 99])))
    assert rec["normalization"]["prior"]["high"] != p["high"]  # the prior has its own window
    restored = restore_volume(read_subject_slices(tmp_path / "mr", rec, "axial"), rec, "axial", "mr")
    np.testing.assert_allclose(restored[body], np.clip(mr.array, p["low"], p["high"])[body], atol=1e-2)


# --------------------------------------------------------------------------- SliceDataset
def test_slice_dataset(dataset: tuple[Path, dict, list[int]]) -> None:
    out, manifest, _ = dataset
    train = manifest["splits"]["train"]
    ds = SliceDataset(out, split="train", axes=["axial"], neighbours=1)
    expected = sum(get_subject(manifest, s)["geometry"]["axial"]["n_slices"] for s in train)
    assert len(ds) == expected and ds.subjects == train
    item = ds[0]
    assert item["image"].shape == (1, 192, 192) and item["image"].dtype == torch.float32
    assert item["prior"].shape == (3, 192, 192) and item["mask"].shape == (1, 192, 192)
    assert item["labels"].shape == (1, 192, 192) and item["labels"].dtype == torch.int64
    assert (item["subject"], item["axis"], item["index"]) == (train[0], "axial", 0)
    rec = get_subject(manifest, train[0])
    prior = read_subject_slices(out, rec, "axial", "prior")
    image = read_subject_slices(out, rec, "axial", "image")
    n = len(prior)
    # first slice: edge replicated; a middle slice crossing a shard boundary (16); the last slice
    for idx, chans in ((0, [0, 0, 1]), (16, [15, 16, 17]), (n - 1, [n - 2, n - 1, n - 1])):
        it = ds[idx]
        assert it["index"] == idx
        np.testing.assert_array_equal(it["prior"].numpy(), prior[chans])
        np.testing.assert_array_equal(it["image"][0].numpy(), image[idx])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["prior"].shape == (4, 3, 192, 192) and len(batch["subject"]) == 4
    both = SliceDataset(out, split=None, neighbours=0)
    assert len(both) == sum(manifest["n_slices"].values()) and both[0]["prior"].shape == (1, 192, 192)
    with pytest.raises(ConfigError):
        SliceDataset(out, split="holdout")
    with pytest.raises(ConfigError):
        SliceDataset(out, axes=["sagittal"])


def test_phantom_subjects_are_an_exact_affine_map_of_the_ct_prior_without_noise():
    from seg2med.data.synthetic import phantom_subjects

    (s,) = phantom_subjects(1, gain=0.8, offset_hu=100.0, noise_hu=0.0, labels=True)
    prior = np.asarray(s.prior.array, np.float64)
    assert s.subject_id == "s0" and s.labels is not None and np.array_equal(s.body, s.labels.array != 0)
    np.testing.assert_allclose(s.image.array, 0.8 * prior + 100.0, rtol=0, atol=1e-3)
    assert np.array_equal(s.image.affine, s.labels.affine) and prior[~s.body].max() == prior[~s.body].min()  # air outside
    noisy, again = phantom_subjects(2)[1], phantom_subjects(2)[1]
    assert noisy.subject_id == "s1" and np.array_equal(noisy.image.array, again.image.array)  # seeded noise

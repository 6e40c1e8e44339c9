"""Canonical label volume, body contours and the procedural phantom (seg2med.anatomy)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from seg2med.anatomy import (
    ORGAN_OVER_ORGAN,
    ORGAN_OVER_TISSUE,
    TISSUE_OVER_TISSUE,
    axial_axis,
    body_mask_from_ct,
    body_mask_from_labels,
    body_mask_from_mr,
    build_label_volume,
    labels_from_masks,
    make_phantom,
    priority_order,
)
from seg2med.errors import ConfigError, GridMismatchError, InputError
from seg2med.io.nifti import Volume, embedded_label_table, load_volume, save_volume
from seg2med.io.segmentations import load_body_mask, load_mask_folder, load_segmentation
from seg2med.labels import canonical_scheme, get_scheme

TOTAL = get_scheme("total")
CANON = canonical_scheme("total")
TISSUES = ("subcutaneous_fat", "torso_fat", "skeletal_muscle")


@pytest.fixture(scope="module")
def seg(ts_dir: Path) -> Volume:
    return load_segmentation(ts_dir / "example_seg.nii.gz")


@pytest.fixture(scope="module")
def tissue_masks(ts_dir: Path) -> dict[str, Volume]:
    return load_segmentation(ts_dir / "example_seg_tissue_types")


@pytest.fixture(scope="module")
def canonical(seg, tissue_masks):
    return build_label_volume(seg, TOTAL, tissue_masks)


# --------------------------------------------------------------------------- io helper
def test_load_mask_folder_reads_boolean_masks_on_one_grid(ts_dir, tissue_masks, tmp_path):
    assert sorted(tissue_masks) == sorted(TISSUES)
    assert all(v.array.dtype == bool for v in tissue_masks.values())
    ref = next(iter(tissue_masks.values()))
    save_volume(ref, tmp_path / "a.nii.gz")
    shifted = Volume(ref.array, ref.affine.copy())
    shifted.affine[0, 3] += 3.0
    save_volume(shifted, tmp_path / "b.nii.gz")
    with pytest.raises(GridMismatchError):
        load_mask_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        load_mask_folder(tmp_path / "empty")
    with pytest.raises(InputError):
        load_segmentation(tmp_path / "missing.nii.gz")


# --------------------------------------------------------------------------- canonical volume
def test_canonical_volume_keeps_grid_organs_and_counts_tissue_losses(seg, tissue_masks, canonical):
    vol, report = canonical
    lab, out = seg.array, vol.array
    assert vol.shape == seg.shape and np.array_equal(vol.affine, seg.affine)
    assert vol.header is seg.header
    assert np.issubdtype(out.dtype, np.integer)
    organ = lab > 0
    np.testing.assert_array_equal(out[organ], lab[organ])  # organs always win

    for name in TISSUES:
        m = tissue_masks[name].array
        # independent count: tissue voxels claimed by an organ, per winning organ
        winners = np.bincount(lab[m & organ], minlength=TOTAL.ids[-1] + 1)
        expected = {TOTAL.name_of(i): int(c) for i, c in enumerate(winners) if c}
        got = {o.winner: o.voxels for o in report.overlaps if o.rule == ORGAN_OVER_TISSUE and o.loser == name}
        assert got == expected
        assert report.lost(ORGAN_OVER_TISSUE, loser=name) == int((m & organ).sum())
        # the tissue type holds exactly its voxels where no organ is
        assert np.array_equal(out == CANON.id_of(name), m & ~organ)
    assert report.lost(ORGAN_OVER_TISSUE, loser="skeletal_muscle") > 10000  # autochthon/psoas are in the mask
    assert report.lost(TISSUE_OVER_TISSUE) == 0  # TotalSegmentator's tissue masks are disjoint

    body_id = CANON.id_of("body")
    assert report.body_filled == int((out == body_id).sum()) > 0
    assert report.contour_source == "labels"
    assert report.labelled_outside_body == 0
    assert report.class_voxels["liver"] == int((lab == TOTAL.id_of("liver")).sum())
    d = json.loads(json.dumps(report.to_dict()))
    assert d["shape"] == list(seg.shape) and d["overlaps"][0].keys() == {"rule", "winner", "loser", "voxels"}


def test_multilabel_and_folder_inputs_give_identical_volumes(seg, tissue_masks, canonical, tmp_path):
    organ_dir, tissue_file = tmp_path / "organs", tmp_path / "tissue_types.nii.gz"
    organ_dir.mkdir()
    for i in np.unique(seg.array)[1:]:
        save_volume(seg.like(seg.array == i), organ_dir / f"{TOTAL.name_of(i)}.nii.gz")
    ttypes = get_scheme("tissue_types")
    tl = np.zeros(seg.shape, np.uint8)
    for name, m in tissue_masks.items():
        tl[m.array] = ttypes.id_of(name)
    save_volume(seg.like(tl), tissue_file)

    organs = load_segmentation(organ_dir)
    assert isinstance(organs, dict) and len(organs) == len(np.unique(seg.array)) - 1
    vol_f, rep_f = build_label_volume(organs, TOTAL, load_segmentation(tissue_file))
    vol_m, rep_m = canonical
    np.testing.assert_array_equal(vol_f.array, vol_m.array)
    assert np.allclose(vol_f.affine, vol_m.affine)
    assert rep_f.lost(ORGAN_OVER_ORGAN) == 0  # masks cut from one label map never overlap
    assert rep_f.lost(ORGAN_OVER_TISSUE) == rep_m.lost(ORGAN_OVER_TISSUE)


def test_overlapping_masks_follow_the_priority_rules():
    shape = (20, 20, 10)
    liver = np.zeros(shape, bool)
    liver[2:15, 2:15] = True
    aorta = np.zeros(shape, bool)
    aorta[10:18, 10:18] = True
    gall = np.zeros(shape, bool)
    gall[4:7, 4:7, 2:5] = True
    labels, rep = labels_from_masks({"liver": liver, "aorta": aorta, "gallbladder": gall}, TOTAL)
    assert (labels[aorta] == TOTAL.id_of("aorta")).all()  # vessel over solid organ
    assert (labels[gall] == TOTAL.id_of("gallbladder")).all()  # same tier: lower id wins
    assert rep.lost(ORGAN_OVER_ORGAN, "aorta", "liver") == int((liver & aorta).sum()) == 250
    assert rep.lost(ORGAN_OVER_ORGAN, "gallbladder", "liver") == 27
    order = priority_order(TOTAL)
    assert order.index("aorta") < order.index("spinal_cord") < order.index("adrenal_gland_right") \
        < order.index("kidney_cyst_left") < order.index("liver") < order.index("colon") \
        < order.index("lung_lower_lobe_left") < order.index("vertebrae_L1") < order.index("autochthon_left")

    labels, rep = labels_from_masks({"liver": liver, "tumour": gall}, TOTAL)
    assert rep.unknown_classes == {"tumour": 27} and int((labels > 0).sum()) == int(liver.sum())
    with pytest.raises(ConfigError, match="tumour"):
        labels_from_masks({"liver": liver, "tumour": gall}, TOTAL, strict=True)

    tissues = {"torso_fat": liver, "skeletal_muscle": aorta}
    seg = Volume(np.where(gall, TOTAL.id_of("gallbladder"), 0).astype(np.int32), np.eye(4))
    vol, rep = build_label_volume(seg, TOTAL, {k: seg.like(v) for k, v in tissues.items()})
    assert rep.lost(TISSUE_OVER_TISSUE, "skeletal_muscle", "torso_fat") == 250
    assert rep.lost(ORGAN_OVER_TISSUE, "gallbladder", "torso_fat") == 27


def test_unknown_ids_are_reported_or_raise(seg, caplog):
    arr = seg.array.copy()
    arr[0, 0, :5] = 150
    arr[1, 1, :3] = 250
    bad = Volume(arr, seg.affine, seg.header, Path("bad_seg.nii.gz"))
    with caplog.at_level(logging.WARNING, logger="seg2med"):
        vol, rep = build_label_volume(bad, TOTAL)
    assert rep.unknown_ids == {150: 5, 250: 3}
    assert "150" in caplog.text and "250" in caplog.text
    assert not np.isin(vol.array, [150, 250]).any()
    assert rep.to_dict()["unknown_ids"] == {"150": 5, "250": 3}
    with pytest.raises(ConfigError, match=r"bad_seg\.nii\.gz.*150 \(5 voxels\).*250 \(3 voxels\)"):
        build_label_volume(bad, TOTAL, strict=True)


def test_many_unknown_ids_are_summarised_on_one_line(seg):
    # a FreeSurfer/SynthSeg map read as 'total' has ~150 unknown ids: name the largest, count the rest
    arr = seg.array.copy()
    flat = arr.reshape(-1)
    for k, i in enumerate(range(1000, 1020)):
        flat[k * 50 : k * 50 + 1 + k] = i  # id 1000+k gets k+1 voxels
    bad = Volume(arr, seg.affine, seg.header, Path("fs_seg.nii.gz"))
    with pytest.raises(ConfigError) as err:
        build_label_volume(bad, TOTAL, strict=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "id 1019 (20 voxels)" in msg and "id 1012 (13 voxels)" in msg  # the 8 largest
    assert "id 1011 " not in msg and "id 1000 " not in msg
    assert msg.endswith("and 12 more ids (78 voxels)")  # 1 + 2 + ... + 12


def test_a_map_of_another_scheme_names_that_scheme(seg, tissue_masks, caplog):
    # TotalSegmentator's tissue_types folder given as the organ label map: say which scheme it is
    with caplog.at_level(logging.WARNING, logger="seg2med"), pytest.raises(InputError) as err:
        build_label_volume(tissue_masks, TOTAL)
    assert "no voxel of any class of label scheme 'total'" in str(err.value)
    assert "they are classes of scheme 'tissue_types': pass --scheme tissue_types or give them as --tissue-masks" in str(err.value)
    assert "classes not in label scheme 'total'" in caplog.text  # plural of 'class'
    # an organ map (ids 5 liver, 52 aorta) read as tissue_types (ids 1..3): its ids fit 'total'
    organs = np.zeros(seg.shape, np.int16)
    organs[10:20, 10:20, 10:12] = 5
    organs[12:14, 12:14, 10:12] = 52
    with pytest.raises(InputError, match=r"organs\.nii\.gz: no voxel of any class of label scheme 'tissue_types' "
                                         r"\(its ids fit scheme 'total': pass --scheme total\)"):
        build_label_volume(Volume(organs, seg.affine, None, Path("organs.nii.gz")), "tissue_types")
    # ids no built-in scheme holds: no hint
    with pytest.raises(InputError, match=r"scheme 'total'$"):
        build_label_volume(Volume(np.where(organs > 0, 999, 0).astype(np.int16), seg.affine, None, Path("x.nii.gz")), TOTAL)


def test_empty_label_map_and_grid_mismatch_raise(seg, tissue_masks):
    empty = Volume(np.zeros(seg.shape, np.int32), seg.affine, None, Path("empty_seg.nii.gz"))
    with pytest.raises(InputError, match="empty_seg"):
        build_label_volume(empty, TOTAL)
    shift = np.zeros((4, 4))
    shift[:3, 3] = 1.0
    moved = {k: Volume(v.array, v.affine + shift, None, v.path) for k, v in tissue_masks.items()}
    with pytest.raises(GridMismatchError):
        build_label_volume(seg, TOTAL, moved)
    with pytest.raises(ConfigError):
        build_label_volume(seg, TOTAL, image=Volume(np.zeros(seg.shape, np.float32), seg.affine), modality="pet")


# --------------------------------------------------------------------------- body contours
def test_a_folder_with_tissue_and_body_task_masks_routes_them_to_tissues_and_body(ts_dir, seg, tissue_masks, caplog):
    """TotalSegmentator total + tissue_types + body written into one folder: the tissue masks become tissue
    types and body/body_trunc/... the body contour, exactly as when given with --tissue-masks / --body."""
    ct = load_volume(ts_dir / "example_ct_sm.nii.gz")
    body = ct.like(body_mask_from_ct(ct.array, ct.spacing, affine=ct.affine))
    organs = {TOTAL.name_of(int(i)): seg.like(seg.array == i) for i in np.unique(seg.array)[1:]}
    trunc = body.array.copy()
    trunc[:, :, :5] = False
    merged = {**organs, **tissue_masks, "body_trunc": body.like(trunc), "body_extremities": body.like(body.array & ~trunc),
              "skin": body.like(np.zeros(body.shape, bool))}
    with caplog.at_level(logging.INFO, logger="seg2med.anatomy.labelmap"):
        vol, rep = build_label_volume(merged, TOTAL)
    assert "taken as the tissue types" in caplog.text and "taken as the body contour" in caplog.text
    ref, ref_rep = build_label_volume(organs, TOTAL, tissues=tissue_masks, body=body)
    np.testing.assert_array_equal(vol.array, ref.array)
    assert rep.contour_source == "given" and rep.unknown_classes == {}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seg2med.anatomy.labelmap"):
        explicit, _ = build_label_volume(merged, TOTAL, body=body.like(np.ones(body.shape, bool)))
    assert "ignoring its body masks body_trunc, body_extremities, skin" in caplog.text
    assert (explicit.array != 0).all()  # the explicit (whole-grid) body won


def _caret_table(table: dict[int, str]) -> bytes:
    labels = "".join(f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{v}]]></Label>\n' for k, v in table.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0"> <LabelTable>\n'
            f"{labels}</LabelTable> <VolumeType><![CDATA[Label]]></VolumeType> </VolumeInformation></CaretExtension>\n  ").encode()


def test_embedded_label_table_of_totalsegmentator_files(ts_dir, tmp_path):
    mr = load_volume(ts_dir / "example_seg_mr.nii.gz", kind="labels")
    table = embedded_label_table(mr.header)
    assert len(table) == 50 and table[13] == "small_bowel" and table[19] == "vertebrae"  # total_mr numbering
    assert embedded_label_table(load_volume(ts_dir / "example_seg.nii.gz", kind="labels").header)[18] == "small_bowel"
    assert embedded_label_table(None) is None
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, b"<CaretExtension><LabelTable><Label Key='x'>"))
    assert embedded_label_table(img.header) is None  # malformed: ignored
    # outputs never carry the source's table: it names the ids of another volume
    out = save_volume(mr.like(mr.array.astype(np.float32)), tmp_path / "img.nii.gz")
    assert len(nib.load(out).header.extensions) == 0


def test_a_label_file_is_read_by_its_own_table_not_by_an_assumed_numbering(ts_dir, tmp_path, caplog):
    """TotalSegmentator MR labels (total_mr numbering: 13 small_bowel, 19 vertebrae) are read as such
    without --scheme: a CT prior puts bowel and bone there, not the lung and duodenum of 'total' ids
    13 and 19. Any numbering named by the file's table gives the same canonical volume."""
    import seg2med

    src = ts_dir / "example_seg_mr.nii.gz"
    raw = load_volume(src, kind="labels").array
    with caplog.at_level(logging.INFO, logger="seg2med.api"):
        lv = seg2med.build_anatomy(src)
    assert "its class names are those of scheme 'total_mr'" in caplog.text
    assert lv.scheme.name.startswith("total_mr") and lv.report["label_table"] == "embedded"
    prior = seg2med.simulate_prior(lv, "ct").volume.array
    assert np.median(prior[raw == 13]) > -200 and np.median(prior[raw == 19]) > 150  # bowel wall / bone, not air
    np.testing.assert_array_equal(lv.volume.array[raw != 0], seg2med.build_anatomy(src, scheme="total_mr").volume.array[raw != 0])
    # explicit --scheme total: still mapped by name; total_mr-only classes are reported with a hint
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        as_total = seg2med.build_anatomy(src, scheme="total")
    total = get_scheme("total")
    assert np.all(as_total.volume.array[raw == 13] == total.id_of("small_bowel"))
    assert "class vertebrae (2006 voxels)" in caplog.text and "pass --scheme total_mr" in caplog.text
    # a scrambled numbering with its own table: same canonical volume as the original
    seg_img = nib.load(str(ts_dir / "example_seg.nii.gz"))
    seg_arr = np.asarray(seg_img.dataobj).astype(np.int16)
    present = [int(i) for i in np.unique(seg_arr)[1:]]
    new_ids = {old: 300 - k for k, old in enumerate(present)}
    scrambled = np.zeros_like(seg_arr)
    for old, new in new_ids.items():
        scrambled[seg_arr == old] = new
    img = nib.Nifti1Image(scrambled, seg_img.affine)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_table({new: TOTAL.name_of(old) for old, new in new_ids.items()})))
    nib.save(img, tmp_path / "scrambled.nii.gz")
    a = seg2med.build_anatomy(ts_dir / "example_seg.nii.gz", scheme="total")
    b = seg2med.build_anatomy(tmp_path / "scrambled.nii.gz")
    assert b.scheme.name == a.scheme.name
    np.testing.assert_array_equal(a.volume.array, b.volume.array)


def test_a_mask_folder_without_scheme_is_read_in_the_scheme_its_file_names_belong_to(ts_dir, tmp_path):
    import seg2med

    mr = load_volume(ts_dir / "example_seg_mr.nii.gz", kind="labels")
    mr_scheme = get_scheme("total_mr")
    folder = tmp_path / "mr_masks"
    folder.mkdir()
    for i in np.unique(mr.array)[1:]:
        save_volume(mr.like(mr.array == i), folder / f"{mr_scheme.name_of(int(i))}.nii.gz")
    lv = seg2med.build_anatomy(folder)
    assert lv.scheme.name == canonical_scheme("total_mr").name and lv.report["unknown_classes"] == {}
    np.testing.assert_array_equal(lv.volume.array, seg2med.build_anatomy(ts_dir / "example_seg_mr.nii.gz").volume.array)
    # names common to both schemes: the default (or the model's) scheme stays
    common = tmp_path / "common"
    common.mkdir()
    save_volume(mr.like(mr.array == mr_scheme.id_of("liver")), common / "liver.nii.gz")
    assert seg2med.build_anatomy(common).scheme.name == canonical_scheme("total").name
    assert seg2med.build_anatomy(common, default_scheme="total_mr").scheme.name == canonical_scheme("total_mr").name


def test_a_totalsegmentator_v1_file_is_read_with_v1_numbering(ts_dir, tmp_path):
    """v1 and v2 'total' share ids 1..104 with other meanings (v1 7 = aorta, v2 7 = pancreas): the file's
    table picks total_v1, and the v1 heart chambers / myocardium get blood / muscle properties."""
    import seg2med

    v2 = load_volume(ts_dir / "example_seg.nii.gz", kind="labels")
    v1_scheme = get_scheme("total_v1")
    arr = np.zeros(v2.shape, np.uint8)
    for name in ("aorta", "pancreas", "liver", "small_bowel"):
        arr[v2.array == TOTAL.id_of(name)] = v1_scheme.id_of(name)
    arr[:4, :4, :] = v1_scheme.id_of("heart_atrium_left")  # a corner block standing in for a v1 heart chamber
    img = nib.Nifti1Image(arr, v2.affine)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_table(dict(zip(v1_scheme.ids, v1_scheme.names)))))
    nib.save(img, tmp_path / "v1.nii.gz")
    lv = seg2med.build_anatomy(tmp_path / "v1.nii.gz")
    assert lv.scheme.name == canonical_scheme("total_v1").name and lv.report["unknown_classes"] == {}
    names = {i: lv.scheme.name_of(int(lv.volume.array[arr == i][0])) for i in (7, 10, 55)}
    assert names == {7: "aorta", 10: "pancreas", 55: "small_bowel"}  # v2 would read pancreas, lung lobe, -
    prior = seg2med.simulate_prior(lv, "vibe-in").volume.array  # blood and pancreas differ in T1/T2
    v2_prior = seg2med.simulate_prior(seg2med.build_anatomy(ts_dir / "example_seg.nii.gz"), "vibe-in").volume.array
    aorta, pancreas = (float(v2_prior[v2.array == TOTAL.id_of(n)][0]) for n in ("aorta", "pancreas"))
    assert aorta != pancreas
    assert np.all(prior[arr == 7] == aorta) and np.all(prior[arr == 10] == pancreas)
    assert np.all(prior[arr == v1_scheme.id_of("heart_atrium_left")] == aorta)  # a v1 chamber: blood


def test_a_tissue_multilabel_file_is_read_by_its_own_table(seg, tissue_masks, tmp_path):
    """tissue_types / tissue_4_types --ml files: ids by the file's table (any numbering, intermuscular_fat too)."""
    ref_vol, _ = build_label_volume(seg, TOTAL, tissue_masks)
    ref_grid = next(iter(tissue_masks.values()))
    arr = np.zeros(ref_grid.shape, np.uint8)
    numbering = {"subcutaneous_fat": 9, "torso_fat": 7, "skeletal_muscle": 8}
    for name in ("subcutaneous_fat", "torso_fat", "skeletal_muscle"):  # later wins: the folder's priority order
        arr[tissue_masks[name].array] = numbering[name]
    extra = (ref_vol.array == CANON.id_of("body")) & (np.arange(arr.shape[2]) == 0)[None, None, :]  # inside the body
    assert extra.sum() > 100
    arr[extra] = 4  # a tissue_4_types class
    img = nib.Nifti1Image(arr, ref_grid.affine)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, _caret_table(
        {9: "subcutaneous_fat", 7: "torso_fat", 8: "skeletal_muscle", 4: "intermuscular_fat"})))
    nib.save(img, tmp_path / "tissue_ml.nii.gz")
    vol, rep = build_label_volume(seg, TOTAL, load_volume(tmp_path / "tissue_ml.nii.gz", kind="labels"))
    assert rep.unknown_tissue_ids == {} and rep.unknown_classes == {}
    assert np.all(vol.array[extra] == CANON.id_of("intermuscular_fat"))
    same = ~extra
    np.testing.assert_array_equal(vol.array[same], ref_vol.array[same])


def test_closing_on_the_bounding_box_equals_the_closing_of_the_whole_padded_array():
    from seg2med.anatomy.contour import _dilate, _erode, binary_closing_mm, bounding_box

    rng = np.random.default_rng(0)
    for _ in range(10):
        m = np.zeros((40, 50, 30), bool)
        for _ in range(int(rng.integers(1, 6))):
            c, r = rng.integers(0, (40, 50, 30)), rng.integers(1, 8, 3)
            m[tuple(slice(max(0, int(ci - ri)), int(ci + ri)) for ci, ri in zip(c, r))] = True
        m &= rng.random(m.shape) > 0.2
        sp, radius = tuple(rng.uniform(0.5, 3.0, 3)), float(rng.uniform(1.0, 8.0))
        pad = [int(np.ceil(radius / s)) + 1 for s in sp]
        full = np.pad(m, [(p, p) for p in pad])
        ref = (_erode(_dilate(full, radius, sp), radius, sp) | full)[tuple(slice(p, p + n) for p, n in zip(pad, m.shape))]
        np.testing.assert_array_equal(binary_closing_mm(m, radius, sp), ref)
    assert bounding_box(np.zeros((3, 4, 5), bool)) is None
    assert not binary_closing_mm(np.zeros((3, 4, 5), bool), 5.0, 1.0).any()


def test_ct_body_contour_contains_organs_excludes_air_and_table(ts_dir):
    ct = load_volume(ts_dir / "example_ct.nii.gz")
    lab = load_volume(ts_dir / "example_seg_fast_force_split.nii.gz", kind="labels").array
    body = body_mask_from_ct(ct.array, ct.spacing, affine=ct.affine)
    assert body.shape == ct.shape and body.dtype == bool
    assert body[lab > 0].mean() >= 0.99
    assert ct.array[~body].mean() < -800
    # the table: dense voxels in the 3 most posterior rows (y is anterior in RAS), not part of the body
    assert int((ct.array[:, :3, :] > -500).sum()) > 1000
    assert int(body[:, :3, :].sum()) == 0
    # no thresholded structure outside the body anywhere near the patient's size
    outside = (ct.array > -500) & ~body
    assert outside.sum() < 0.03 * body.sum()
    assert 0.4 < body.mean() < 0.8


def test_mr_body_contour_through_build(ts_dir):
    mr = load_volume(ts_dir / "example_mr_sm.nii.gz")
    seg = load_segmentation(ts_dir / "example_seg_mr.nii.gz")
    assert axial_axis(mr.affine) == 2  # LPS: still axis 2
    body = body_mask_from_mr(mr.array, mr.spacing, affine=mr.affine)
    assert body[seg.array > 0].mean() >= 0.95
    assert mr.array[~body].mean() < 0.2 * mr.array[body].mean()
    vol, rep = build_label_volume(seg, "total_mr", image=mr, modality="MR")
    assert rep.contour_source == "mr" and rep.unknown_ids == {}
    assert rep.labelled_outside_body <= 0.05 * int((seg.array > 0).sum())
    assert np.array_equal(vol.array == canonical_scheme("total_mr").id_of("body"), body & (seg.array == 0))


def test_labels_contour_matches_ct_contour_and_ignores_axis_order(ts_dir, seg, tissue_masks):
    ct = load_volume(ts_dir / "example_ct_sm.nii.gz")
    union = (seg.array > 0) | np.logical_or.reduce([m.array for m in tissue_masks.values()])
    from_labels = body_mask_from_labels(union, seg.spacing, affine=seg.affine)
    from_ct = body_mask_from_ct(ct.array, ct.spacing, affine=ct.affine)
    assert from_labels[union].all()
    assert (from_labels & from_ct).sum() >= 0.98 * from_labels.sum()
    assert (from_labels & from_ct).sum() >= 0.9 * from_ct.sum()  # misses only the skin layer
    # same anatomy stored with the superior-inferior axis first: same mask, transposed
    perm = (2, 0, 1)
    aff = seg.affine[:, list(perm) + [3]]
    assert axial_axis(aff) == 0
    moved = body_mask_from_labels(union.transpose(perm), [seg.spacing[i] for i in perm], affine=aff)
    np.testing.assert_array_equal(moved, from_labels.transpose(perm))


def test_body_from_totalsegmentator_body_task_folder_or_file(ts_dir, seg, tmp_path, caplog):
    """--body: TotalSegmentator's --task body folder (union of its masks) or one mask file becomes the body
    contour; without it (nor image nor tissue masks) a warning says the body wall is missing."""
    ct = load_volume(ts_dir / "example_ct_sm.nii.gz")
    body = body_mask_from_ct(ct.array, ct.spacing, affine=ct.affine)
    trunc = body.copy()
    trunc[:, :, :10] = False  # split the body in two parts, as body_trunc / body_extremities are
    folder = tmp_path / "body_task"
    folder.mkdir()
    save_volume(ct.like(trunc), folder / "body_trunc.nii.gz")
    save_volume(ct.like(body & ~trunc), folder / "body_extremities.nii.gz")
    from_folder = load_body_mask(folder)
    np.testing.assert_array_equal(from_folder.array, body)
    np.testing.assert_array_equal(from_folder.affine, ct.affine)
    save_volume(ct.like(body.astype(np.uint8) * 2), tmp_path / "body_labels.nii.gz")  # any non-zero value is body
    np.testing.assert_array_equal(load_body_mask(tmp_path / "body_labels.nii.gz").array, body)
    save_volume(ct.like(np.zeros(ct.shape, np.uint8)), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="empty.nii.gz: empty body mask"):
        load_body_mask(tmp_path / "empty.nii.gz")

    vol, rep = build_label_volume(seg, TOTAL, body=from_folder)
    assert rep.contour_source == "given"
    assert np.array_equal(vol.array == CANON.id_of("body"), body & (seg.array == 0))
    shifted = Volume(body, ct.affine.copy())
    shifted.affine[0, 3] += 3.0
    with pytest.raises(GridMismatchError):
        build_label_volume(seg, TOTAL, body=shifted)
    with caplog.at_level(logging.WARNING, logger="seg2med.anatomy.labelmap"):
        build_label_volume(seg, TOTAL, body=from_folder)
        assert "no body contour" not in caplog.text
        _, rep = build_label_volume(seg, TOTAL)
    assert rep.contour_source == "labels"
    assert "no body contour (--body, --image) and no tissue masks" in caplog.text


# --------------------------------------------------------------------------- phantom
def _world_centroid(vol: Volume, label: int) -> np.ndarray:
    return nib.affines.apply_affine(vol.affine, ndi.center_of_mass(vol.array == label))


def test_phantom_is_seeded():
    a = make_phantom(seed=3)
    assert np.array_equal(a.array, make_phantom(seed=3).array)
    assert not np.array_equal(a.array, make_phantom(seed=4).array)
    assert a.shape == (256, 256, 64) and np.issubdtype(a.array.dtype, np.integer)


def test_phantom_anatomy_is_plausible(ts_dir):
    ph = make_phantom(seed=0)
    ids = CANON.classes
    vox_ml = float(np.prod(ph.spacing)) / 1000.0
    counts = np.bincount(ph.array.ravel(), minlength=256)
    assert set(np.unique(ph.array)) <= set(CANON.ids) | {0}
    expected_ml = {  # plausible for a 96 mm high slab of upper abdomen
        "liver": (300, 2000), "spleen": (40, 400), "kidney_left": (30, 250), "kidney_right": (30, 250),
        "stomach": (40, 600), "small_bowel": (50, 1000), "colon": (50, 1000), "aorta": (10, 80),
        "inferior_vena_cava": (10, 80), "spinal_cord": (3, 30), "lung_lower_lobe_left": (5, 1000),
        "lung_lower_lobe_right": (5, 1000), "autochthon_left": (30, 300), "autochthon_right": (30, 300),
        "iliopsoas_left": (5, 200), "iliopsoas_right": (5, 200), "body": (300, 6000),
        "subcutaneous_fat": (200, 4000), "skeletal_muscle": (100, 3000),
    }
    for name, (lo, hi) in expected_ml.items():
        assert lo <= counts[ids[name]] * vox_ml <= hi, name
    levels = [f"vertebrae_{lv}" for lv in ("T11", "T12", "L1", "L2", "L3", "L4")]
    z = [_world_centroid(ph, ids[lv])[2] for lv in levels]
    assert np.all(np.diff(z) < 0)  # T11 on top, L4 at the bottom
    assert _world_centroid(ph, ids["lung_lower_lobe_left"])[2] > _world_centroid(ph, ids["kidney_left"])[2]

    # left/right as in the real RAS CT of subject A
    real = load_volume(ts_dir / "example_seg_fast_force_split.nii.gz", kind="labels")
    real_dx = _world_centroid(real, ids["liver"])[0] - _world_centroid(real, ids["spleen"])[0]
    ph_liver, ph_spleen = _world_centroid(ph, ids["liver"]), _world_centroid(ph, ids["spleen"])
    assert np.sign(ph_liver[0] - ph_spleen[0]) == np.sign(real_dx) != 0
    assert ph_liver[0] > 0 > ph_spleen[0]
    cx = _world_centroid(ph, ids["spinal_cord"])[0]
    assert _world_centroid(ph, ids["kidney_right"])[0] > cx > _world_centroid(ph, ids["kidney_left"])[0]
    assert _world_centroid(ph, ids["aorta"])[0] < cx < _world_centroid(ph, ids["inferior_vena_cava"])[0]

    # the cord runs in the canal: enclosed by a vertebra in every slice
    vert = np.isin(ph.array, [ids[lv] for lv in levels])
    cord = ph.array == ids["spinal_cord"]
    assert cord.any(axis=(0, 1)).all()
    for k in range(ph.shape[2]):
        filled = ndi.binary_fill_holes(vert[:, :, k])
        assert filled[cord[:, :, k]].all(), k

    # canonical already: nothing unknown, nothing relabelled
    vol, rep = build_label_volume(ph, CANON)
    assert rep.unknown_ids == {} and rep.labelled_outside_body == 0


def test_phantom_grid_follows_spacing_and_thickness():
    ph = make_phantom(seed=1, spacing=2.0, slices=20, size=128, slice_thickness=5.0)
    assert ph.shape == (128, 128, 20)
    assert ph.spacing == pytest.approx((2.0, 2.0, 5.0))
    assert np.allclose(ph.affine[:3, :3], np.diag([2.0, 2.0, 5.0]))
    assert np.allclose(nib.affines.apply_affine(ph.affine, (np.array(ph.shape) - 1) / 2), 0)
    assert nib.aff2axcodes(ph.affine) == ("R", "A", "S")
    assert (ph.array == CANON.id_of("liver")).any() and (ph.array == CANON.id_of("spinal_cord")).any()
    with pytest.raises(ConfigError):
        make_phantom(spacing=0)

"""The phases of a canonical label volume, each on its own (organ labels, tissue types, body contour), and the
reading of label inputs (seg2med.anatomy.organs / tissues / body / inputs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from seg2med.anatomy import (
    ORGAN_OVER_ORGAN,
    ORGAN_OVER_TISSUE,
    TISSUE_OVER_TISSUE,
    AnatomyReport,
    add_tissues,
    body_contour,
    build_label_volume,
    fill_body,
    organ_labels,
    organ_scheme,
    read_contour_image,
    read_organs,
    read_seg2med_labels,
    resolve_scheme,
    source_name,
)
from seg2med.errors import ConfigError, InputError
from seg2med.io.nifti import Volume, embedded_label_table, load_volume
from seg2med.labels import canonical_scheme, get_scheme

TOTAL = get_scheme("total")
CANON = canonical_scheme("total")
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _vol(arr: np.ndarray, name: str = "x.nii.gz") -> Volume:
    return Volume(arr, AFFINE.copy(), None, Path(name))


def _box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def _report(source: str = "x.nii.gz", shape=(12, 12, 6)) -> AnatomyReport:
    return AnatomyReport(source, CANON.name, shape)


# --------------------------------------------------------------------------- phase 1: organs
def test_organ_phase_maps_a_totalsegmentator_map_by_its_own_table(ts_dir):
    """TotalSegmentator --ml MR labels (total_mr numbering: 13 small_bowel) read in 'total' (13 = lung) are
    mapped by the names of the file's table; total_mr-only classes become 0 and are reported."""
    src = load_volume(ts_dir / "example_seg_mr.nii.gz", kind="labels")
    table = embedded_label_table(src.header)
    assert table[13] == "small_bowel" and TOTAL.id_of("small_bowel") != 13
    labels, labelled, ref, rep = organ_labels(src, TOTAL, CANON)
    assert ref is src and rep.source == src.name and rep.label_table == "embedded"
    assert np.all(labels[src.array == 13] == CANON.id_of("small_bowel"))
    for i in np.unique(src.array)[1:]:
        want = CANON.id_of(table[int(i)]) if table[int(i)] in TOTAL.classes else 0
        assert np.all(labels[src.array == i] == want), table[int(i)]
    assert set(rep.unknown_classes) == {"intervertebral_discs", "lung_right", "vertebrae"}
    vertebrae = [k for k, v in table.items() if v == "vertebrae"]
    assert rep.unknown_classes["vertebrae"] == int(np.isin(src.array, vertebrae).sum())
    np.testing.assert_array_equal(labelled, src.array != 0)  # unknown classes still count as labelled
    assert labels.dtype == np.int16


def test_organ_phase_keeps_scheme_ids_and_drops_unknown_ones():
    arr = np.zeros((12, 12, 6), np.int16)
    arr[2:6, 2:6, 1:4] = TOTAL.id_of("liver")
    arr[7:9, 7:9, 1:4] = 999
    labels, labelled, _, rep = organ_labels(_vol(arr, "seg.nii.gz"), TOTAL, CANON)
    assert rep.unknown_ids == {999: 12} and rep.label_table == ""
    np.testing.assert_array_equal(labels, np.where(arr == 999, 0, arr))
    np.testing.assert_array_equal(labelled, arr != 0)
    with pytest.raises(ConfigError, match=r"seg\.nii\.gz: ids not in label scheme 'total': id 999 \(12 voxels\)"):
        organ_labels(_vol(arr, "seg.nii.gz"), TOTAL, CANON, strict=True)
    with pytest.raises(InputError, match="empty label map"):
        organ_labels(_vol(np.zeros_like(arr)), TOTAL, CANON)


def test_organ_phase_paints_overlapping_masks_by_priority():
    shape = (12, 12, 6)
    liver, aorta = _box(shape, (1, 1, 1), (8, 8, 5)), _box(shape, (6, 6, 1), (10, 10, 5))
    masks = {"liver": _vol(liver), "aorta": _vol(aorta), "not_a_class": _vol(_box(shape, (0, 0, 0), (1, 1, 1)))}
    labels, labelled, _, rep = organ_labels(masks, TOTAL, CANON)
    both = liver & aorta
    assert np.all(labels[aorta] == CANON.id_of("aorta"))  # a vessel wins over the solid organ around it
    assert np.all(labels[liver & ~aorta] == CANON.id_of("liver"))
    assert rep.lost(ORGAN_OVER_ORGAN, "aorta", "liver") == int(both.sum()) == 16
    assert rep.label_table == "mask names" and rep.unknown_classes == {"not_a_class": 1}
    assert labelled.sum() == (liver | aorta).sum() + 1


# --------------------------------------------------------------------------- phase 2: tissues
def test_tissue_phase_respects_tissue_and_organ_priority():
    shape = (12, 12, 6)
    organs = np.zeros(shape, np.int16)
    organs[4:6, 4:6, 2:4] = CANON.id_of("liver")
    muscle, fat = _box(shape, (2, 2, 1), (8, 8, 5)), _box(shape, (5, 5, 1), (11, 11, 5))
    rep = _report()
    labels, labelled = add_tissues(organs, organs != 0, {"skeletal_muscle": _vol(muscle), "torso_fat": _vol(fat)},
                                   _vol(organs), CANON, rep)
    m_id, f_id, l_id = (CANON.id_of(n) for n in ("skeletal_muscle", "torso_fat", "liver"))
    assert np.all(labels[organs != 0] == l_id)  # any organ beats any tissue type
    assert np.all(labels[muscle & (organs == 0)] == m_id)  # skeletal_muscle > torso_fat
    assert np.all(labels[fat & ~muscle] == f_id)
    assert rep.lost(TISSUE_OVER_TISSUE, "skeletal_muscle", "torso_fat") == int((muscle & fat).sum())
    assert rep.lost(ORGAN_OVER_TISSUE, "liver", "skeletal_muscle") == int((muscle & (organs != 0)).sum()) == 8
    np.testing.assert_array_equal(labelled, (organs != 0) | muscle | fat)


def test_tissue_phase_reads_a_tissue_types_label_map(ts_dir):
    """A multilabel tissue_types file (1 subcutaneous_fat, 2 torso_fat, 3 skeletal_muscle) on the organs' grid."""
    folder = ts_dir / "example_seg_tissue_types"
    names = ("subcutaneous_fat", "torso_fat", "skeletal_muscle")
    masks = {n: load_volume(folder / f"{n}.nii.gz", kind="mask") for n in names}
    ref = next(iter(masks.values()))
    arr = np.zeros(ref.shape, np.int16)
    for k, m in enumerate(masks.values(), 1):
        arr[m.array != 0] = k
    arr[0, 0, 0] = 9
    rep = _report(shape=ref.shape)
    labels, _ = add_tissues(np.zeros(ref.shape, np.int16), np.zeros(ref.shape, bool), ref.like(arr), ref, CANON, rep)
    for k, n in enumerate(masks, 1):
        assert np.all(labels[arr == k] == CANON.id_of(n))
    assert labels[0, 0, 0] == 0 and rep.unknown_tissue_ids == {9: 1} and rep.overlaps == []


# --------------------------------------------------------------------------- phase 3: body contour
def test_contour_phase_closes_the_labels_and_fills_the_body(caplog):
    shape = (16, 16, 6)
    shell = _box(shape, (3, 3, 0), (13, 13, 6)) & ~_box(shape, (5, 5, 0), (11, 11, 6))  # a ring around a cavity
    labels = np.where(shell, CANON.id_of("skeletal_muscle"), 0).astype(np.int16)
    rep = _report(shape=shape)
    with caplog.at_level(logging.WARNING):
        mask = body_contour(_vol(labels), labels != 0, rep, has_tissues=True)
    assert rep.contour_source == "labels" and "no body contour" not in caplog.text
    assert mask[shell].all() and mask[8, 8, 3]  # the cavity is inside the body
    assert not mask[0, 0, 3]
    out = fill_body(labels.copy(), mask, CANON, rep)
    body = CANON.id_of("body")
    np.testing.assert_array_equal(out == body, mask & ~shell)
    assert rep.body_voxels == int(mask.sum()) and rep.body_filled == int((mask & ~shell).sum())
    assert rep.labelled_outside_body == 0 and rep.class_voxels["body"] == rep.body_filled


def test_contour_phase_takes_a_given_body_and_counts_labels_outside_it():
    shape = (12, 12, 6)
    labels = np.zeros(shape, np.int16)
    labels[0:2, 0:2, 0:2] = CANON.id_of("liver")  # outside the body mask
    given = _box(shape, (4, 4, 0), (10, 10, 6))
    rep = _report(shape=shape)
    mask = body_contour(_vol(labels), labels != 0, rep, body=_vol(given), image=_vol(np.zeros(shape, np.float32)),
                        modality="ct")
    assert rep.contour_source == "given"  # a body mask wins over an image
    np.testing.assert_array_equal(mask, given)
    out = fill_body(labels, mask, CANON, rep)
    assert rep.labelled_outside_body == 8 and rep.outside_body_by_class == {"liver": 8}
    assert np.all(out[given] == CANON.id_of("body"))
    with pytest.raises(ConfigError, match=r"unknown modality 'pet' \(expected 'ct' or 'mr'\)"):
        body_contour(_vol(labels), labels != 0, _report(), modality="pet")
    with pytest.raises(InputError, match=r"body mask shape \(3, 3, 3\) does not match x\.nii\.gz \(12, 12, 6\)"):
        body_contour(_vol(labels), labels != 0, _report(), body=np.ones((3, 3, 3)))


def test_the_phases_in_order_are_build_label_volume(ts_dir):
    seg = load_volume(ts_dir / "example_seg.nii.gz", kind="labels")
    tissues = read_organs(ts_dir / "example_seg_tissue_types")
    vol, rep = build_label_volume(seg, TOTAL, tissues=tissues)
    labels, labelled, ref, own = organ_labels(seg, TOTAL, CANON)
    labels, labelled = add_tissues(labels, labelled, tissues, ref, CANON, own)
    labels = fill_body(labels, body_contour(ref, labelled, own, has_tissues=True), CANON, own)
    np.testing.assert_array_equal(vol.array, labels)
    assert rep.to_dict() == own.to_dict()


# --------------------------------------------------------------------------- reading label inputs
def test_organ_scheme_is_chosen_by_the_class_names(ts_dir):
    mr = read_organs(ts_dir / "example_seg_mr.nii.gz")
    assert isinstance(mr, Volume)
    scheme, guessed = organ_scheme(mr)
    assert scheme.name == guessed == "total_mr"
    assert organ_scheme(mr, "total") == (TOTAL, None)  # a given scheme is not second-guessed
    ct = read_organs(ts_dir / "example_seg.nii.gz")
    assert organ_scheme(ct) == (TOTAL, None)
    masks = {n: mr.like(mr.array == 1) for n in ("liver", "vertebrae", "intervertebral_discs")}  # total_mr names
    assert organ_scheme(masks)[1] == "total_mr" and organ_scheme(masks, default="total_mr") == (get_scheme("total_mr"), None)
    folder = ts_dir / "example_seg_tissue_types"
    assert source_name(read_organs(folder), folder) == str(folder)
    assert source_name(masks, masks) == "<masks>" and source_name(mr, None) == mr.name


def test_resolve_scheme_and_contour_image_errors():
    assert resolve_scheme(None).name == "total" and resolve_scheme(None, default="total_mr").name == "total_mr"
    assert resolve_scheme(TOTAL) is TOTAL
    with pytest.raises(ConfigError, match=r"^--scheme: empty; give a scheme name"):
        resolve_scheme(" ")
    with pytest.raises(ConfigError, match=r"^unknown label scheme 'nonesuch'"):
        resolve_scheme("nonesuch")
    img = _vol(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ConfigError, match=r"^an image for the body contour needs its modality \('ct' or 'mr'\)$"):
        read_contour_image(img, None)
    with pytest.raises(ConfigError, match=r"^--modality ct describes --image, which is not given$"):
        read_contour_image(None, "ct")
    assert read_contour_image(img, "ct") is img and read_contour_image(None, None) is None


def test_a_seg2med_label_volume_is_read_as_it_is(ts_dir, tmp_path):
    import seg2med

    lv = seg2med.build_anatomy(ts_dir / "example_seg.nii.gz")
    out = seg2med.save_label_volume(lv, tmp_path / "lab.nii.gz")
    assert read_seg2med_labels(ts_dir / "example_seg.nii.gz") is None  # TotalSegmentator output: no seg2med table
    assert read_seg2med_labels(lv.volume) is None
    again = read_seg2med_labels(out)
    assert again.scheme.name == lv.scheme.name and again.report == {"source": "seg2med label volume", "path": str(out)}
    np.testing.assert_array_equal(again.volume.array, lv.volume.array)
    with pytest.raises(ConfigError, match=r"already holds its tissues and body; --image, --body would be ignored"):
        read_seg2med_labels(out, image="ct.nii.gz", body="body")
    with pytest.raises(ConfigError, match=r"in scheme 'total\+seg2med' \(its lab\.json\); --scheme total_mr contradicts"):
        read_seg2med_labels(out, scheme="total_mr")

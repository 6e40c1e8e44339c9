"""Label registry: the single source of truth for class maps."""

from __future__ import annotations

import numpy as np
import pytest

from seg2med.errors import ConfigError
from seg2med.labels import EXTENSION_CLASSES, LabelScheme, canonical_scheme, get_scheme, list_schemes, scheme_from_mapping


def test_builtin_schemes_present_with_public_class_counts():
    assert set(list_schemes()) >= {"total", "total_mr", "tissue_types", "amos", "brats2021", "brats2015"}
    assert len(get_scheme("total")) == 117
    assert len(get_scheme("total_mr")) == 50
    assert len(get_scheme("tissue_types")) == 3
    assert len(get_scheme("amos")) == 15
    assert len(get_scheme("total_v1")) == 104


@pytest.mark.parametrize("name", ["total", "total_mr", "total_v1", "tissue_types", "amos", "brats2021", "brats2015"])
def test_ids_unique_positive_and_names_round_trip(name):
    s = get_scheme(name)
    ids = list(s.classes.values())
    assert len(ids) == len(set(ids)) and min(ids) >= 1
    for n in s.names:
        assert s.name_of(s.id_of(n)) == n
    assert s.name_of(0) == "background"
    table = s.to_table()
    assert LabelScheme.from_table(table).classes == dict(s.classes)


def test_totalsegmentator_total_ids_match_map_to_binary():
    s = get_scheme("total")
    expected = {1: "spleen", 5: "liver", 7: "pancreas", 18: "small_bowel", 26: "vertebrae_S1", 27: "vertebrae_L5",
                32: "vertebrae_T12", 50: "vertebrae_C1", 51: "heart", 52: "aorta", 63: "inferior_vena_cava",
                79: "spinal_cord", 90: "brain", 92: "rib_left_1", 115: "rib_right_12", 116: "sternum", 117: "costal_cartilages"}
    for i, n in expected.items():
        assert s.name_of(i) == n


def test_totalsegmentator_v1_ids_match_map_to_binary_total_v1():
    s = get_scheme("total_v1")
    expected = {1: "spleen", 7: "aorta", 10: "pancreas", 18: "vertebrae_L5", 41: "vertebrae_C1", 44: "heart_myocardium",
                48: "heart_ventricle_right", 49: "pulmonary_artery", 55: "small_bowel", 58: "rib_left_1", 81: "rib_right_12",
                92: "sacrum", 93: "face", 104: "urinary_bladder"}
    for i, n in expected.items():
        assert s.name_of(i) == n


def test_total_mr_and_tissue_types_ids():
    mr = get_scheme("total_mr")
    assert (mr.id_of("lung_left"), mr.id_of("vertebrae"), mr.id_of("intervertebral_discs"), mr.id_of("brain")) == (10, 19, 20, 50)
    tt = get_scheme("tissue_types")
    assert [tt.id_of(n) for n in ("subcutaneous_fat", "torso_fat", "skeletal_muscle")] == [1, 2, 3]


def test_amos_convention():
    a = get_scheme("amos")
    assert a.id_of("spleen") == 1 and a.id_of("liver") == 6 and a.id_of("inferior_vena_cava") == 9
    assert a.id_of("duodenum") == 13 and a.id_of("urinary_bladder") == 14 and a.id_of("prostate_uterus") == 15


def test_brats_conventions():
    b21 = get_scheme("brats2021")
    assert b21.ids == [1, 2, 4]  # label 3 unused in BraTS 2017-2021
    assert set(b21.regions["tumor_core"]) == {"necrotic_tumor_core", "enhancing_tumor"}
    assert len(b21.regions["whole_tumor"]) == 3
    b15 = get_scheme("brats2015")
    assert b15.ids == [1, 2, 3, 4] and b15.name_of(3) == "non_enhancing_tumor"


def test_canonical_scheme_adds_body_and_tissue_types_without_clashes():
    c = canonical_scheme("total")
    assert len(c) == 117 + len(EXTENSION_CLASSES)
    assert c.id_of("body") == 200 and c.id_of("skeletal_muscle") == 203
    assert c.id_of("liver") == 5


def test_unknown_ids_reported_by_value_and_count():
    s = get_scheme("brats2021")
    arr = np.array([0, 1, 2, 3, 3, 4, 9, 9, 9])
    assert s.unknown_ids(arr) == {3: 2, 9: 3}


def test_unknown_scheme_and_class_raise_config_error():
    with pytest.raises(ConfigError, match="unknown label scheme 'nope'"):
        get_scheme("nope")
    with pytest.raises(ConfigError, match="no class 'heartx'"):
        get_scheme("total").id_of("heartx")
    with pytest.raises(ConfigError, match="duplicate ids"):
        scheme_from_mapping({"name": "x", "classes": {"a": 1, "b": 1}}, "x.yaml")

"""Tissue property table: coverage of every built-in class, realistic values, user overrides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg2med.errors import ConfigError
from seg2med.labels import (
    EXTENSION_CLASSES,
    PROPERTY_FIELDS,
    TissueProperties,
    canonical_scheme,
    get_scheme,
    list_schemes,
    load_default_tissue_table,
    tissue_table_from_mapping,
)


@pytest.fixture(scope="module")
def table():
    return load_default_tissue_table()


def _all_class_names() -> set[str]:
    names = {"background", *EXTENSION_CLASSES}
    for s in list_schemes():
        names |= set(get_scheme(s).classes)
    return names


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_every_builtin_class_resolves_to_finite_values(table, b0):
    for name in sorted(_all_class_names()):
        p = table.properties(name, b0)
        assert isinstance(p, TissueProperties)
        values = p.values()
        assert all(math.isfinite(v) for v in values.values()), name
        assert p.t1 > 0 and p.t2 > 0 and p.t2s > 0, name
        assert 0 <= p.pd <= 1 and 0 <= p.ff <= 1 and p.hu_sd >= 0, name
        assert p.source, name


def test_literature_values(table):
    liver15, liver3 = table.properties("liver", 1.5), table.properties("liver", 3)
    assert (liver15.t1, liver15.t2, liver3.t1, liver3.t2) == (586.0, 46.0, 809.0, 34.0)
    fat15, fat3 = table.properties("subcutaneous_fat", 1.5), table.properties("subcutaneous_fat", 3.0)
    assert (fat15.t1, fat15.t2, fat3.t1, fat3.t2) == (343.0, 58.0, 382.0, 68.0)
    assert fat15.ff >= 0.9 and fat15.hu == -100.0
    assert 0.35 <= table.properties("vertebrae_L4", 1.5).ff <= 0.5
    assert table.properties("background", 1.5).hu == -1000.0
    assert table.properties("background", 3.0).pd == 0.0
    assert table.properties("lung_upper_lobe_left", 1.5).hu == -850.0
    assert 45 <= table.properties("skeletal_muscle", 1.5).hu <= 50
    assert table.properties("aorta", 1.5).hu == 40.0 and table.properties("kidney_left", 1.5).hu == 30.0
    for bone in ("vertebrae_T7", "hip_left", "rib_right_4"):
        assert 300 <= table.properties(bone, 1.5).hu <= 700
    # families resolve through patterns
    assert table.resolve("rib_left_7") == ("group", "bone_cortical")
    assert table.resolve("kidney_cyst_left") == ("tissue", "kidney_cyst")
    assert table.resolve("iliac_vena_right") == ("group", "blood")


def test_unknown_class_and_field_raise(table):
    with pytest.raises(ConfigError, match="not_an_organ"):
        table.properties("not_an_organ", 1.5)
    with pytest.raises(ConfigError, match="field strength"):
        table.properties("liver", 7.0)


def test_arrays_are_per_label_id_lookup_tables(table):
    scheme = get_scheme("brats2021")  # ids 1, 2, 4: id 3 is a gap
    arrays = table.arrays(scheme, 3.0)
    assert arrays["t1"].shape == (5,)
    assert arrays["hu"][0] == -1000.0  # background = air
    assert arrays["t1"][4] == table.properties("enhancing_tumor", 3.0).t1
    assert np.isnan(arrays["hu"][3])
    assert float(arrays["fat_t1"]) == 382.0 and float(arrays["fluid_t1"]) == table.properties("fluid", 3.0).t1
    arrays["hu"][0] = 0.0  # copies: the cache is not touched
    assert table.arrays(scheme, 3.0)["hu"][0] == -1000.0
    total = canonical_scheme("total")
    assert table.arrays(total, 1.5)["hu"].shape == (max(total.ids) + 1,)


def test_user_mapping_overrides_one_value_and_keeps_the_rest(table):
    user = tissue_table_from_mapping(
        {
            "tissues": {
                "liver": {"mr": {"3": {"t1": 900.0}}},
                "my_lesion": {"group": "fluid", "ct": {"hu": 12.5}},
            },
            "group_patterns": {"^lesion_": "my_lesion"},
        },
        "user.yaml",
    )
    new, old = user.properties("liver", 3.0), table.properties("liver", 3.0)
    assert new.t1 == 900.0
    assert (new.t2, new.t2s, new.pd, new.ff, new.hu) == (old.t2, old.t2s, old.pd, old.ff, old.hu)
    assert user.properties("liver", 1.5).values() == table.properties("liver", 1.5).values()
    assert "user.yaml" in new.source
    assert user.properties("lesion_7", 1.5).hu == 12.5
    assert user.properties("lesion_7", 1.5).t1 == table.properties("fluid", 1.5).t1
    assert table.properties("liver", 3.0).t1 == 809.0  # default table untouched


def test_user_mapping_changing_group_replaces_entry(table):
    user = tissue_table_from_mapping({"tissues": {"liver": {"group": "fat"}}}, "u")
    assert user.properties("liver", 1.5) == table.properties("fat", 1.5)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"tissues": {"liver": {"mr": {"1.5": {"T1": 5}}}}}, "unknown field"),
        ({"tissues": {"liver": {"mr": {"7": {"t1": 5}}}}}, "field strength"),
        ({"tissues": {"liver": {"ct": {"hu": "a lot"}}}}, "finite number"),
        ({"tissues": {"liver": {"mr": {"1.5": {"pd": 1.5}}}}}, r"\[0, 1\]"),
        ({"tissues": {"x": {"group": "nope"}}}, "unknown group"),
        ({"tissues": {"x": {"ct": {"hu": 1.0}, "source": "s"}}}, "lacks"),
        ({"group_patterns": {"^y": "nope"}}, "unknown tissue or group"),
        ({"colours": {}}, "unknown top-level"),
    ],
)
def test_bad_user_tables_raise(data, match):
    with pytest.raises(ConfigError, match=match):
        tissue_table_from_mapping(data, "bad.yaml")


def test_property_fields_constant():
    assert PROPERTY_FIELDS == ("hu", "hu_sd", "t1", "t2", "t2s", "pd", "ff")

"""Quality control of generated volumes (#13): per-organ medians against the plausible CT HU range of the
tissue table (MAISI's HU check) and, for MR, against the tissue order the sequence's prior predicts."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import seg2med
from seg2med.errors import ConfigError
from seg2med.inference.qc import MR_ORDER_MARGIN, class_medians, organ_qc, qc_warning
from seg2med.io import Volume, load_volume
from seg2med.labels import canonical_scheme, get_scheme
from seg2med.labels.schemes import list_schemes
from seg2med.labels.tissues import load_default_tissue_table, tissue_table_from_mapping
from seg2med.physics import (
    get_sequence,
    prior_lut,
    sequence_from_config,
    simulate_prior,
)

VIBE = {"name": "vibe-in", "field": 1.5, "tr": 6.5, "te": None, "flip": 10.0}  # the shipped MR demos' sequence


@pytest.fixture(scope="module")
def subject_a(ts_dir):
    """Real CT (portal-venous) of subject A in HU and its canonical ``total`` labels."""
    lv = seg2med.build_anatomy(ts_dir / "example_seg_fast_force_split.nii.gz", scheme="total")
    return lv, load_volume(ts_dir / "example_ct.nii.gz").array.astype(np.float32)


@pytest.fixture(scope="module")
def subject_c(ts_dir):
    """Real abdominal MR of subject C and its canonical ``total_mr`` labels."""
    lv = seg2med.build_anatomy(ts_dir / "example_seg_mr.nii.gz", scheme="total_mr")
    return lv, load_volume(ts_dir / "example_mr_sm.nii.gz").array.astype(np.float32)


def _mask(lv, name):
    return lv.volume.array == lv.scheme.classes[name]


# --------------------------------------------------------------------------- the ranges (data)
def test_the_maisi_ranges_are_in_the_tissue_table():
    """MAISI's check (NV-Generate-CTMR quality_check.py on MONAI's image_median_statistics.json):
    min(sigma_6_low, percentile_0_5)..max(sigma_6_high, percentile_99_5), bone high 1000, rounded outwards."""
    table = load_default_tissue_table()
    maisi = {"liver": (-22, 162), "spleen": (-44, 185), "pancreas": (-57, 150), "kidney_left": (-131, 268),
             "kidney_right": (-131, 268), "lung_lower_lobe_left": (-1089, -366), "brain": (-951, 370),
             "vertebrae_L1": (71, 1000), "rib_left_3": (71, 1000), "femur_left": (71, 1000), "hip_right": (71, 1000)}
    for name, (lo, hi) in maisi.items():
        rng = table.hu_range(name)
        assert (rng.lo, rng.hi) == (lo, hi), name
        assert "MAISI" in rng.source
    assert (table.hu_range("gluteus_maximus_left").lo, table.hu_range("torso_fat").hi) == (-29, -30)  # Mitsiopoulos


@pytest.mark.parametrize("scheme", list_schemes())
def test_every_class_has_a_range_that_holds_its_prior_in_every_contrast_phase(scheme):
    """Native HU + the enhancement of each contrast phase lies in the class's range (arterial aorta ~300 HU,
    portal-venous liver ~110 HU...), for every class of every shipped scheme (with the seg2med extensions)."""
    table = load_default_tissue_table()
    sc = canonical_scheme(get_scheme(scheme))
    for phase in ("native", "arterial", "portal_venous"):
        lut = prior_lut(sc, get_sequence("ct", contrast_phase=phase), table)
        for name, i in sc.classes.items():
            assert lut[i] in table.hu_range(name), (phase, name, lut[i])
    assert table.hu_range("aorta").hi >= 500 and table.hu_range("liver").hi >= 130  # contrast-enhanced


def test_hu_range_entries_parse_merge_and_leave_the_properties_alone():
    base = load_default_tissue_table()
    user = tissue_table_from_mapping({"tissues": {"liver": {"hu_range": [0, 90], "hu_range_source": "mine"}},
                                      "groups": {"muscle": {"hu_range": [-10, 100]}}}, "user.yaml")
    assert (user.hu_range("liver").lo, user.hu_range("liver").hi, user.hu_range("liver").source) == (0, 90, "mine")
    assert user.hu_range("iliopsoas_left").hi == 100  # a group's range reaches the classes of the group
    assert user.properties("liver", 3.0) == base.properties("liver", 3.0)  # properties (and their source) unchanged
    assert user.hu_range("spleen") == base.hu_range("spleen")
    for bad, msg in (([5], "hu_range must be"), ([10, 0], "lo < hi"), (["a", 1], "finite number"), (None, "without")):
        entry = {"hu_range_source": "x"} if bad is None else {"hu_range": bad}
        with pytest.raises(ConfigError, match=msg):
            tissue_table_from_mapping({"tissues": {"liver": entry}}, "bad.yaml")


# --------------------------------------------------------------------------- CT
def test_the_real_ct_passes_and_the_reported_failures_fail_exactly(subject_a):
    lv, ct = subject_a
    qc = organ_qc(ct, lv.volume.array, lv.scheme, "ct", "ct")
    s = qc["summary"]
    assert qc["check"] == "hu_range" and s["passed"] and s["failed"] == 0 and s["unranged"] == []
    assert s["checked"] == len(qc["classes"]) == 62 and all(c["ok"] for c in qc["classes"])
    by = {c["name"]: c for c in qc["classes"]}
    assert by["liver"]["median"] == 46.0 and by["liver"]["range"] == [-22.0, 162.0] and by["liver"]["voxels"] == 41692
    assert by["spleen"]["median"] == 35.0 and by["aorta"]["median"] == 41.0 and by["pancreas"]["median"] == -6.0
    assert qc_warning(qc) is None

    bad = ct.copy()
    bad[_mask(lv, "liver")] = -58.0
    bad[_mask(lv, "spleen")] = -251.0
    qc = organ_qc(bad, lv.volume.array, lv.scheme, "ct", "ct")
    assert qc["summary"]["failed_names"] == ["spleen", "liver"] and not qc["summary"]["passed"]
    assert qc_warning(qc) == ("qc: 2 of 62 organs outside their plausible HU range: spleen -251 (expected -44..185), "
                              "liver -58 (expected -22..162)")


def test_small_classes_are_skipped_and_counted(subject_a):
    lv, ct = subject_a
    qc = organ_qc(ct, lv.volume.array, lv.scheme, "ct", "ct", min_voxels=200)
    small = {"adrenal_gland_right", "rib_left_7", "rib_left_8", "rib_left_9", "rib_left_12", "rib_right_7",
             "rib_right_8", "rib_right_9", "rib_right_10", "rib_right_11", "rib_right_12", "vertebrae_T11"}
    assert set(qc["summary"]["skipped_names"]) == small and qc["summary"]["skipped"] == len(small)
    assert qc["summary"]["checked"] + qc["summary"]["skipped"] == 62
    assert all(c["voxels"] >= 200 for c in qc["classes"])
    with pytest.raises(ConfigError, match="modality"):
        organ_qc(ct, lv.volume.array, lv.scheme, "pet", "ct")


def test_class_medians_match_per_class_masks():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(9, 8, 7))
    image = rng.normal(size=labels.shape)
    image[0, 0, 0] = np.nan  # not counted
    stats = class_medians(labels, image)
    assert sorted(stats) == [1, 2, 3, 4]  # background excluded
    for i, (n, (med,)) in stats.items():
        vals = image[(labels == i) & np.isfinite(image)]
        assert n == vals.size and med == pytest.approx(np.median(vals))


# --------------------------------------------------------------------------- MR
def test_the_real_mr_keeps_the_prior_order_and_a_swap_fails(subject_c):
    lv, mr = subject_c
    qc = organ_qc(mr, lv.volume.array, lv.scheme, "mr", VIBE)
    s = qc["summary"]
    assert qc["check"] == "tissue_order" and qc["sequence"] == "vibe-in" and qc["margin"] == MR_ORDER_MARGIN
    assert s["passed"] and qc["inverted_pairs"] == [] and s["checked"] == 23
    assert s["skipped_names"] == ["lung_right"]  # 6 voxels
    by = {c["name"]: c for c in qc["classes"]}
    assert by["liver"]["expected_rank"] < by["spleen"]["expected_rank"]  # the vibe-in prior: liver brighter
    assert (by["liver"]["median"], by["spleen"]["median"]) == (97.0, 24.0)

    # swap the intensities of liver and spleen (each shifted to the other's median)
    liver, spleen = _mask(lv, "liver"), _mask(lv, "spleen")
    ml, ms = np.median(mr[liver]), np.median(mr[spleen])
    swapped = mr.copy()
    swapped[liver] += ms - ml
    swapped[spleen] += ml - ms
    qc = organ_qc(swapped, lv.volume.array, lv.scheme, "mr", VIBE)
    first = qc["inverted_pairs"][0]
    assert (first["expected_brighter"], first["expected_darker"]) == ("liver", "spleen")
    assert first["prior_margin"] >= MR_ORDER_MARGIN and first["image_margin"] >= MR_ORDER_MARGIN
    assert {"liver", "spleen"} <= set(qc["summary"]["failed_names"]) and not qc["summary"]["passed"]
    assert qc_warning(qc).startswith(f"qc: {qc['summary']['failed']} of 23 organs out of the tissue order the vibe-in "
                                     "prior predicts: spleen 97 above liver 24")
    # a prior given is the prior used: the one of the sequence gives the same result
    prior = simulate_prior(lv.volume.array, lv.scheme, sequence_from_config(VIBE))
    assert organ_qc(swapped, lv.volume.array, lv.scheme, "mr", VIBE, prior=prior) == qc


# --------------------------------------------------------------------------- generate + sidecar
def _crop(lv, z0, n):
    """Slices z0..z0+n of a label volume (a quick generate run), on the same world grid."""
    affine = lv.volume.affine.copy()
    affine[:3, 3] += affine[:3, 2] * z0
    return type(lv)(Volume(lv.volume.array[..., z0 : z0 + n].copy(), affine), lv.scheme, lv.report)


def test_generate_records_the_qc_in_metadata_and_sidecar(subject_a, tmp_path, caplog, one_thread):
    lv, _ = subject_a
    labels = _crop(lv, 94, 3)  # liver, spleen, kidney, bowel, spine, muscles
    with caplog.at_level(logging.WARNING, logger="seg2med.inference.generate"):
        res = seg2med.generate(labels, model="ct-demo-tiny", steps=5, device="cpu")
    meta = res.metadata
    qc = meta["qc"]
    keys = list(meta)
    assert keys.index("qc") == keys.index("seconds") + 1  # after the entries generation made
    assert qc["check"] == "hu_range" and qc["modality"] == "ct" and qc["sequence"] == "ct"
    assert "liver" in {c["name"] for c in qc["classes"]} and qc["summary"]["checked"] > 10
    # the QC describes the volume that was returned
    recomputed = organ_qc(res.samples[0].array, labels.volume.array, labels.scheme, "ct", "ct", prior=res.prior.array)
    assert recomputed == qc
    table = load_default_tissue_table()
    assert all(c["prior_median"] in table.hu_range(c["name"]) for c in qc["classes"])  # the prior is plausible
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("qc: ")]
    assert (warned == [qc_warning(qc)]) if not qc["summary"]["passed"] else warned == []
    for name in qc["summary"]["failed_names"][:10]:
        assert name in warned[0]

    paths = seg2med.save_generated(res, tmp_path / "g.nii.gz")
    side = json.loads(paths["sidecar"].read_text())
    assert side["qc"] == json.loads(json.dumps(qc))  # plain JSON, written as computed

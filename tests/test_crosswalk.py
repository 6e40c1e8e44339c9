"""Crosswalks between label schemes: every class of every scheme covered, the published ids kept, round trips keep
what both schemes hold, and the `crosswalk` / `generate` commands report what each class became."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli_helpers import run_cli
from seg2med.errors import ConfigError
from seg2med.labels import EXTENSION_CLASSES, get_scheme
from seg2med.labels.crosswalk import KINDS, get_crosswalk, list_crosswalks

REPO = Path(__file__).resolve().parents[1]
BODY_FAMILY = ("total", "total_v1", "total_mr", "amos", "maisi")


def test_every_scheme_of_a_family_has_a_crosswalk_to_every_other_that_covers_each_of_its_classes():
    pairs = set(list_crosswalks())
    for family in (BODY_FAMILY, ("tissue_types", "tissue_types_mr"), ("brats2021", "brats2015", "brats2023", "brats_medddpm", "aseg", "aseg_tumor")):
        for s in family:
            for t in family:
                if s != t:
                    assert (s, t) in pairs, (s, t)
    for s, t in pairs:
        cw = get_crosswalk(s, t)  # loading checks every entry against both schemes
        assert set(cw.targets) == set(get_scheme(s).classes), (s, t)
        assert set(cw.kinds.values()) <= set(KINDS)
        for name, kind in cw.kinds.items():
            assert (cw.targets[name] is None) == (kind == "dropped")
            if kind in ("kept", "dropped"):
                assert len(cw.reasons[name]) > 10, (s, t, name)  # a stated reason
            if kind == "kept":
                assert cw.extra[name] not in get_scheme(t).ids and cw.extra[name] not in EXTENSION_CLASSES.values()


def test_the_committed_tables_are_what_the_rules_give():
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "build_crosswalks.py"), "--check"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_totalsegmentator_to_total_mr_merges_lobes_and_vertebrae_and_drops_ribs_with_the_reason():
    cw = get_crosswalk("total", "total_mr")
    lobes = [n for n in get_scheme("total").names if n.startswith("lung_") and n.endswith("_left")]
    assert len(lobes) == 2 and all(cw.targets[n] == "lung_left" and cw.kinds[n] == "merged" for n in lobes)
    vertebrae = [n for n in get_scheme("total").names if n.startswith("vertebrae_")]
    assert len(vertebrae) == 25 and {cw.targets[n] for n in vertebrae} == {"vertebrae"}
    assert cw.kinds["rib_left_1"] == "dropped" and "no ribs" in cw.reasons["rib_left_1"]
    assert cw.kinds["liver"] == "same" and cw.kinds["kidney_cyst_left"] == "merged"
    back = get_crosswalk("total_mr", "total")
    assert back.kinds["vertebrae"] == "kept" and back.kinds["lung_right"] == "kept"
    assert back.kinds["intervertebral_discs"] == "dropped"


def test_maisi_crosswalk_uses_the_published_maisi_ids_and_body_200():
    cw = get_crosswalk("total", "maisi")
    maisi = cw.target_scheme()
    published = {"kidney_left": 14, "kidney_right": 5, "rib_left_1": 63, "rib_right_12": 86, "vertebrae_L5": 33,
                 "vertebrae_C1": 56, "vertebrae_S1": 127, "urinary_bladder": 15, "heart": 115, "trachea": 57,
                 "lung_middle_lobe_right": 31, "portal_vein_and_splenic_vein": 17, "costal_cartilages": 114}
    assert {n: maisi.id_of(cw.targets[n]) for n in published} == published
    assert all(k in ("same", "renamed") for k in cw.kinds.values())  # every total class has its MAISI class
    assert get_scheme("maisi").id_of("body") == 200 == maisi.id_of("body")
    back = get_crosswalk("maisi", "total")
    assert back.kinds["dummy1"] == "dropped" and "placeholder" in back.reasons["dummy1"]
    assert back.targets["hepatic tumor"] == "liver" and back.kinds["hepatic tumor"] == "merged"
    assert back.kinds["airway"] == "kept" and back.targets["body"] == "body"


@pytest.mark.parametrize("other", [s for s in BODY_FAMILY if s != "total"])
def test_round_trip_through_another_scheme_keeps_every_class_both_schemes_hold(other):
    """One voxel per total class, there and back: a class both schemes hold as the same structure (same or
    renamed both ways) comes back exactly; every other class is listed in the reports as merged, kept or dropped."""
    total = get_scheme("total")
    arr = np.array(total.ids, dtype=np.int32).reshape(-1, 1, 1)
    there, mid_scheme, rows = get_crosswalk("total", other).apply(arr, total)
    back, end_scheme, rows_back = get_crosswalk(other, "total").apply(there, mid_scheme)
    fwd, rev = get_crosswalk("total", other), get_crosswalk(other, "total")
    both = [n for n in total.names if fwd.kinds[n] in ("same", "renamed") and rev.kinds[fwd.targets[n]] in ("same", "renamed")]
    assert len(both) >= (14 if other == "amos" else 45)
    for n in both:
        i = total.names.index(n)
        assert end_scheme.name_of(int(back[i, 0, 0])) == n
    listed = {r["class"]: r["kind"] for r in rows}
    assert set(listed) == set(total.names) and all(listed[n] in KINDS for n in total.names)
    assert {n for n in total.names if listed[n] != "same" and listed[n] != "renamed"} == set(total.names) - \
        {n for n in total.names if fwd.kinds[n] in ("same", "renamed")}


def test_crosswalk_of_subject_a_to_total_mr_counts_voxels_and_writes_a_readable_map(ts_dir, tmp_path, capsys, monkeypatch):
    src = ts_dir / "example_seg.nii.gz"
    raw = np.asarray(nib.load(src).dataobj).astype(int)
    total = get_scheme("total")
    out = tmp_path / "mr_labels.nii.gz"
    res = run_cli(["crosswalk", "--labels", src, "--to", "total_mr", "--out", out], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert "rib_left_7" in res.err and "dropped" in res.err  # the printed report
    conv = np.asarray(nib.load(out).dataobj).astype(int)
    side = json.loads(out.with_name("mr_labels.json").read_text())
    mr = {n: int(i) for i, n in side["labels"].items()}
    lobes = sum(int((raw == total.id_of(n)).sum()) for n in ("lung_upper_lobe_left", "lung_lower_lobe_left"))
    assert int((conv == mr["lung_left"]).sum()) == lobes > 0
    ribs = np.isin(raw, [total.id_of(n) for n in total.names if n.startswith("rib_")])
    assert ribs.any() and not conv[ribs].any()  # dropped: unlabelled (this map has no body contour)
    assert int((conv == mr["liver"]).sum()) == int((raw == total.id_of("liver")).sum())
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(src).affine)
    rows = {r["class"]: r for r in side["report"]["crosswalk"]["classes"]}
    assert rows["rib_left_7"]["kind"] == "dropped" and rows["rib_left_7"]["voxels"] == int((raw == total.id_of("rib_left_7")).sum())
    # --strict refuses, on one line, and writes nothing
    res = run_cli(["crosswalk", "--labels", src, "--to", "total_mr", "--strict", "--out", tmp_path / "s.nii.gz"],
                  capsys, monkeypatch)
    assert res.code != 0 and "--strict" in res.err and "rib_left_7" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1 and not (tmp_path / "s.nii.gz").exists()
    res = run_cli(["crosswalk", "--labels", src, "--to", "brats2021", "--out", tmp_path / "b.nii.gz"], capsys, monkeypatch)
    assert res.code != 0 and "no crosswalk from label scheme 'total' to 'brats2021'" in res.err


def test_mr_subject_to_total_keeps_vertebrae_as_bone_in_the_ct_prior(ts_dir):
    """total_mr -> total: 'vertebrae' has no single total class; kept as an extra class, its CT prior is bone."""
    import seg2med

    lv = seg2med.crosswalk(ts_dir / "example_seg_mr.nii.gz", "total")
    rows = {r["class"]: r for r in lv.report["crosswalk"]["classes"]}
    assert rows["vertebrae"]["kind"] == "kept" and rows["intervertebral_discs"]["kind"] == "dropped"
    vert = lv.volume.array == lv.scheme.id_of("vertebrae")
    assert vert.sum() == rows["vertebrae"]["voxels"] > 0
    prior = seg2med.simulate_prior(lv, "ct")
    assert 150 < float(np.median(prior.volume.array[vert])) < 700  # cancellous bone, not soft tissue


def test_generate_with_a_model_of_another_scheme_applies_the_crosswalk_and_records_it(tmp_path, capsys, monkeypatch):
    """A total map given to a total_mr model (mr-demo-tiny): lobes merged, ribs dropped into body, in the sidecar."""
    total = get_scheme("total")
    lab = np.zeros((40, 36, 2), np.uint8)
    lab[4:36, 4:32] = total.id_of("autochthon_left")
    lab[8:20, 8:28] = total.id_of("liver")
    lab[22:32, 8:16] = total.id_of("lung_upper_lobe_left")
    lab[22:32, 18:28] = total.id_of("lung_lower_lobe_left")
    lab[6:8, 4:32] = total.id_of("rib_left_7")
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0])), path)
    out = tmp_path / "mr.nii.gz"
    res = run_cli(["generate", "--labels", path, "--out", out, "--model", "mr-demo-tiny", "--scheme", "total", "--steps", 1,
                   "--precision", "fp32"], capsys, monkeypatch)
    assert res.code == 0, res.err
    meta = json.loads((tmp_path / "mr.json").read_text())
    assert meta["scheme"] == "total_mr+seg2med"
    cw = meta["crosswalk"]
    assert cw["source"] == "total" and cw["target"] == "total_mr"
    kinds = {r["class"]: (r["kind"], r["target"]) for r in cw["classes"]}
    assert kinds == {"autochthon_left": ("same", "autochthon_left"), "liver": ("same", "liver"),
                     "lung_upper_lobe_left": ("merged", "lung_left"), "lung_lower_lobe_left": ("merged", "lung_left"),
                     "rib_left_7": ("dropped", "body")}  # inside the body: a dropped class becomes body
    assert "rib_left_7" in res.err and "lung_upper_lobe_left" in res.err  # the printed report
    with pytest.raises(ConfigError, match="no crosswalk"):
        get_crosswalk("total", "brats2015")

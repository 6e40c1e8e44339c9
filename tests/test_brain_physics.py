"""Brain label schemes and the four-contrast physics (T1 MPRAGE, T1ce with gadolinium, T2 TSE, FLAIR), checked on the
shared brain data: Med-DDPM's BraTS files, the BraTS-Toolkit fusion of TCGA-DU-7294 and voxelmorph's FreeSurfer aseg."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cli_helpers import run_cli
from seg2med.errors import ConfigError
from seg2med.labels import canonical_scheme, get_scheme
from seg2med.labels.crosswalk import get_crosswalk
from seg2med.labels.tissues import load_default_tissue_table
from seg2med.physics.gadolinium import concentration_array, load_gadolinium_table, shortened
from seg2med.physics.prior import prior_lut
from seg2med.physics.sequences import get_sequence, sequence_from_config

#: the four BraTS contrasts as seg2med sequences (T2: turbo spin echo at a brain TR)
CONTRASTS = {"t1": ("mprage", {}), "t1ce": ("t1ce", {}), "t2": ("space", {"tr": 5000.0}), "flair": ("flair", {})}
NCR, ED, ET, BRAIN = 1, 2, 3, 4  # Med-DDPM's numbering


@pytest.fixture(scope="module")
def medddpm(data_dir):
    d = data_dir / "med-ddpm" / "brats2021"
    seg = np.asarray(nib.load(d / "seg" / "BraTS2021_01306_seg.nii.gz").dataobj).astype(np.int16)
    images = {c: np.asarray(nib.load(d / c / f"BraTS2021_01306_{c}.nii.gz").dataobj) for c in CONTRASTS}
    return d, seg, images


def _medians(image, seg):
    return {i: float(np.median(image[seg == i])) for i in (NCR, ED, ET, BRAIN)}


def test_med_ddpm_masks_are_not_read_as_brats_or_total_and_the_error_names_their_scheme(medddpm, tmp_path, capsys,
                                                                                       monkeypatch):
    """Without --scheme a Med-DDPM mask (4 = all other brain) is refused with the scheme that fits; read as BraTS 2015
    its whole brain would be enhancing tumour (the size rule says so)."""
    d, seg, _ = medddpm
    path = d / "seg" / "BraTS2021_01306_seg.nii.gz"
    res = run_cli(["simulate", "--labels", path, "--sequence", "flair", "--out", tmp_path / "p.nii.gz"], capsys,
                  monkeypatch)
    assert res.code == 2 and "pass --scheme brats_medddpm" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "p.nii.gz").exists()
    share = float((seg == BRAIN).sum() / (seg > 0).sum())
    assert share > 0.9  # measured 0.94: why it cannot be a tumour compartment
    res = run_cli(["simulate", "--labels", path, "--scheme", "brats_medddpm", "--sequence", "flair", "--out",
                   tmp_path / "p.nii.gz"], capsys, monkeypatch)
    assert res.code == 0, res.err
    prior = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    lut = prior_lut(canonical_scheme("brats_medddpm"), get_sequence("flair"))
    assert np.median(prior[seg == BRAIN]) == pytest.approx(lut[BRAIN], rel=1e-6)  # brain tissue, not tumour


def test_a_brats_toolkit_fusion_without_table_is_pointed_to_brats2021(data_dir, tmp_path, capsys, monkeypatch):
    """Ids 1 and 2 are spleen and right kidney in `total`: the oedema lies on the tumour, not 20 mm to its right."""
    path = data_dir / "brainlesion-tutorials" / "TCGA-DU-7294" / "fusion" / "mav.nii.gz"
    res = run_cli(["simulate", "--labels", path, "--sequence", "flair", "--out", tmp_path / "p.nii.gz"], capsys,
                  monkeypatch)
    assert res.code == 2 and "pass --scheme brats2021" in res.err and "kidney_right is not right of spleen" in res.err


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_the_four_priors_show_the_textbook_contrasts_that_the_real_brats_images_show(medddpm, field):
    """Per compartment (median over the mask): T1 - tumour and oedema darker than brain; T1ce - enhancing tumour
    the brightest compartment of the tumour and brighter relative to its T1 than brain; T2 and FLAIR - every tumour
    compartment brighter than brain. The real images of BraTS 2021 subject 01306 show each of them too."""
    _, seg, images = medddpm
    scheme = canonical_scheme("brats_medddpm")
    prior = {}
    for contrast, (name, kw) in CONTRASTS.items():
        lut = prior_lut(scheme, get_sequence(name, field=field, **kw))
        prior[contrast] = {i: float(lut[i]) for i in (NCR, ED, ET, BRAIN)}
    for values in (prior, {c: _medians(images[c], seg) for c in CONTRASTS}):
        t1, t1ce, t2, flair = values["t1"], values["t1ce"], values["t2"], values["flair"]
        assert all(t1[BRAIN] > t1[i] for i in (NCR, ED, ET))
        assert t1ce[ET] > max(t1ce[NCR], t1ce[ED])
        assert all(t2[i] > t2[BRAIN] for i in (NCR, ED, ET))
        assert all(flair[i] > flair[BRAIN] for i in (NCR, ED, ET))
    gain = {i: prior["t1ce"][i] / prior["t1"][i] for i in (NCR, ED, ET, BRAIN)}
    assert gain[ET] > 1.5 > gain[BRAIN] and gain[BRAIN] < 1.05  # the blood-brain barrier holds the agent out


def test_aseg_mprage_prior_orders_white_grey_and_csf_as_the_real_t1_of_that_brain(data_dir):
    """voxelmorph's test scan: FreeSurfer aseg labels (every id a class of `aseg`) and its real T1. Region medians:
    white matter > grey matter > CSF in both; over the structures, Spearman(prior, real) >= 0.8 (measured 0.90)."""
    scan = np.load(data_dir / "voxelmorph" / "test_scan.npz")
    seg, real = scan["seg"].astype(np.int16), scan["vol"]
    scheme = canonical_scheme("aseg")
    assert not get_scheme("aseg").unknown_ids(seg)
    lut = prior_lut(scheme, get_sequence("mprage"))
    region = {g: np.isin(seg, [scheme.id_of(n) for n in members]) for g, members in get_scheme("aseg").regions.items()}
    for image in (lut[seg], real):
        med = {g: float(np.median(image[m])) for g, m in region.items()}
        assert med["white_matter"] > med["grey_matter"] > med["csf"]
    ids = [int(i) for i in np.unique(seg) if i and (seg == i).sum() > 500]
    rho = stats.spearmanr([float(np.median(real[seg == i])) for i in ids], [float(lut[i]) for i in ids])[0]
    assert len(ids) >= 30 and rho >= 0.8


def test_t1ce_shortens_t1_as_the_glioblastoma_measurements_it_was_derived_from():
    """At 3 T the table's concentrations give the T1 drops of GBMqT1-2020 (enhancing tumour 838 +- 210 ms, oedema
    123 +- 74 ms, normal-appearing tissue 32 +- 35 ms) within their SD; necrosis does not change."""
    table, gd = load_default_tissue_table(), load_gadolinium_table()
    r1 = gd.relaxivity("gadobutrol", 3.0)
    assert r1 == pytest.approx(4.97)
    for name, (mean, sd) in {"enhancing_tumor": (838, 210), "peritumoral_edema": (123, 74),
                             "left_cerebral_white_matter": (32, 35), "left_cerebral_cortex": (32, 35)}.items():
        t1 = table.properties(name, 3.0).t1
        c = gd.concentration(name, table.group_of(name))
        drop = t1 - float(shortened(t1, c, r1))
        assert abs(drop - mean) <= sd, (name, drop)
    assert gd.concentration("necrosis", table.group_of("necrosis")) == 0.0


@settings(max_examples=50, deadline=None)
@given(t1=st.floats(50.0, 5000.0), c=st.floats(0.0, 5.0), r1=st.floats(1.0, 10.0))
def test_relaxation_rate_is_linear_in_concentration(t1, c, r1):
    post = float(shortened(t1, c, r1))
    assert post <= t1 * (1 + 1e-12)
    assert 1000.0 / post == pytest.approx(1000.0 / t1 + r1 * c, rel=1e-9)
    assert float(shortened(t1, 0.0, r1)) == pytest.approx(t1, rel=1e-12)


def test_gadolinium_parameters_are_config_and_checked():
    scheme = canonical_scheme("brats_medddpm")
    t1ce = get_sequence("t1ce")
    assert t1ce.gd_dose == 1.0 and t1ce.agent == "gadobutrol"
    assert sequence_from_config(t1ce.to_config()) == t1ce
    # no agent: T1ce is the MPRAGE; the dose scales the effect; r1 overrides the agent's
    assert np.array_equal(prior_lut(scheme, get_sequence("t1ce", gd_dose=0.0)), prior_lut(scheme, get_sequence("mprage")),
                          equal_nan=True)
    et = scheme.id_of("enhancing_tumor")
    lut = {d: prior_lut(scheme, get_sequence("t1ce", gd_dose=d))[et] for d in (0.5, 1.0, 2.0)}
    assert lut[0.5] < lut[1.0] < lut[2.0]
    low_r1 = prior_lut(scheme, get_sequence("t1ce", agent="gadoterate"))[et]
    assert low_r1 < lut[1.0]  # gadoterate has the lower r1 (3.32 vs 4.78 at 1.5 T)
    assert prior_lut(scheme, get_sequence("t1ce", r1=3.32))[et] == pytest.approx(low_r1, rel=1e-6)
    gre = get_sequence("gre", gd_dose=1.0)
    assert prior_lut(scheme, gre)[et] > prior_lut(scheme, get_sequence("gre"))[et]
    for bad, match in (({"gd_dose": -1.0}, "gd_dose must be a non-negative"), ({"agent": "iodine"}, "unknown gadolinium"),
                       ({"r1": 0.0}, "r1 must be a positive"), ({"gd_dose": math.nan}, "gd_dose")):
        with pytest.raises(ConfigError, match=match):
            get_sequence("t1ce", **bad)
    conc = concentration_array(scheme, load_default_tissue_table())
    assert conc[0] == 0.0 and conc[et] > conc[scheme.id_of("non_tumour_brain")] > 0.0


def test_med_ddpm_mask_crosswalks_to_brats2021_with_enhancing_tumour_at_4_and_the_brain_dropped(medddpm):
    _, seg, _ = medddpm
    cw = get_crosswalk("brats_medddpm", "brats2021")
    out, dst, rows = cw.apply(seg, get_scheme("brats_medddpm"))
    assert dst.name == "brats2021+seg2med"
    assert np.array_equal(out == 4, seg == ET) and np.array_equal(out == 1, seg == NCR)
    assert not (out == 3).any() and not out[seg == BRAIN].any()
    by = {r["class"]: r for r in rows}
    assert by["non_tumour_brain"]["kind"] == "dropped" and by["non_tumour_brain"]["voxels"] == int((seg == BRAIN).sum())
    back, _, _ = get_crosswalk("brats2021", "brats_medddpm").apply(out, get_scheme("brats2021"))
    assert np.array_equal(back[seg != BRAIN], seg[seg != BRAIN])


def test_simulate_writes_a_t1ce_prior_with_its_gadolinium_in_the_sidecar(medddpm, tmp_path, capsys, monkeypatch):
    d, seg, _ = medddpm
    out = tmp_path / "t1ce.nii.gz"
    res = run_cli(["simulate", "--labels", d / "seg" / "BraTS2021_01306_seg.nii.gz", "--scheme", "brats_medddpm",
                   "--sequence", "t1ce", "--field", "3", "--gd-dose", "0.5", "--agent", "gadoterate", "--out", out],
                  capsys, monkeypatch)
    assert res.code == 0, res.err
    import json

    side = json.loads(out.with_name("t1ce.json").read_text())
    assert side["sequence"]["gd_dose"] == 0.5 and side["sequence"]["agent"] == "gadoterate"
    img = nib.load(out)
    ref = nib.load(d / "seg" / "BraTS2021_01306_seg.nii.gz")
    assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    lut = prior_lut(canonical_scheme("brats_medddpm"), get_sequence("t1ce", field=3.0, gd_dose=0.5, agent="gadoterate"))
    arr = np.asarray(img.dataobj)
    assert float(np.median(arr[seg == ET])) == pytest.approx(float(lut[ET]), rel=1e-6)
    res = run_cli(["simulate", "--labels", d / "seg" / "BraTS2021_01306_seg.nii.gz", "--scheme", "brats_medddpm",
                   "--sequence", "flair", "--gd-dose", "1", "--out", tmp_path / "f.nii.gz"], capsys, monkeypatch)
    assert res.code == 2 and "--gd-dose" in res.err and "flair" in res.err


def test_a_tumour_over_an_aseg_map_keeps_the_normal_tissue_around_it(data_dir):
    """voxelmorph's aseg + a synthetic tumour -> aseg_tumor: the tumour overrides the tissue it covers, grey / white
    matter and CSF stay elsewhere, and the FLAIR prior shows oedema brighter than white matter and CSF dark."""
    from seg2med.anatomy.brain import tumour_over_aseg
    from seg2med.anatomy.lesion import ED, NCR, TumourParameters, tumour_compartments
    from seg2med.io import Volume

    scan = np.load(data_dir / "voxelmorph" / "test_scan.npz")
    aseg = Volume(scan["seg"].astype(np.int16), np.eye(4))
    wm = np.argwhere(aseg.array == 2)
    centre = tuple(float(c) for c in wm[len(wm) // 2])
    tum = tumour_compartments(aseg.shape, aseg.spacing, TumourParameters(centre=centre, radius_mm=8.0, edema_mm=6.0))
    tum[aseg.array == 0] = 0
    tumour = aseg.like(np.where(tum == 3, 4, tum).astype(np.uint8))  # BraTS 2021 ids: enhancing = 4
    out = tumour_over_aseg(tumour, "brats2021", aseg)
    arr = np.asarray(out.array)
    scheme = canonical_scheme("aseg_tumor")
    assert np.array_equal(arr == scheme.id_of("necrotic_tumor_core"), tum == NCR)
    assert np.array_equal(arr == scheme.id_of("enhancing_tumor"), tum == 3)
    assert np.array_equal(arr[tum == 0], np.asarray(aseg.array)[tum == 0])  # the rest is the aseg map
    lut = prior_lut(scheme, get_sequence("flair"))
    assert lut[scheme.id_of("peritumoral_edema")] > lut[scheme.id_of("left_cerebral_white_matter")] > lut[scheme.id_of("csf")]
    assert (tum == ED).sum() > 0

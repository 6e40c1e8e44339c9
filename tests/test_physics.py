"""Sequences against their closed-form equations, deterministic priors, randomised priors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg2med.errors import ConfigError, InputError
from seg2med.labels import canonical_scheme, get_scheme, load_default_tissue_table, tissue_table_from_mapping
from seg2med.physics import (
    RandomPrior,
    bias_field,
    get_sequence,
    in_phase_te,
    list_sequences,
    opposed_phase_te,
    prior_lut,
    sequence_from_config,
    simulate_prior,
)

# Three hand-written tissues (liver-, fat- and fluid-like at 1.5 T), independent of the table.
PD = [0.71, 0.90, 1.00]
T1 = [586.0, 343.0, 4000.0]
T2 = [46.0, 58.0, 2000.0]
T2S = [30.0, 35.0, 500.0]
FF = [0.03, 0.92, 0.0]
FAT_T1, FAT_T2S, FLUID_T1 = 343.0, 35.0, 4000.0


def props(**over):
    p = {"hu": [55.0, -100.0, 5.0], "pd": PD, "t1": T1, "t2": T2, "t2s": T2S, "ff": FF}
    p.update(over)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    p.update(fat_t1=np.asarray(FAT_T1), fat_t2=np.asarray(58.0), fat_t2s=np.asarray(FAT_T2S), fluid_t1=np.asarray(FLUID_T1))
    return p


def flash(pd, t1, t2s, tr, te, flip_deg):
    a = math.radians(flip_deg)
    e1 = math.exp(-tr / t1)
    return pd * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * math.exp(-te / t2s)


@pytest.fixture(scope="module")
def scheme():
    return canonical_scheme("total")


# -- sequences ---------------------------------------------------------------------------
def test_ct_is_hu():
    np.testing.assert_array_equal(get_sequence("ct").signal(props()), [55.0, -100.0, 5.0])


def test_gre_equation():
    s = get_sequence("gre").signal(props())
    expected = [flash(PD[i], T1[i], T2S[i], 10.0, 4.6, 15.0) for i in range(3)]
    np.testing.assert_allclose(s, expected, rtol=1e-12)
    assert s[0] == pytest.approx(0.0529032, rel=1e-5)  # liver-like, worked out by hand
    s = get_sequence("gre", tr=200.0, te=2.0, flip=70.0, field=3.0).signal(props())
    np.testing.assert_allclose(s, [flash(PD[i], T1[i], T2S[i], 200.0, 2.0, 70.0) for i in range(3)], rtol=1e-12)


def test_chemical_shift_echo_times():
    df = 3.4e-6 * 42.577e6 * 1.5  # Hz
    assert in_phase_te(1.5) == pytest.approx(1000 / df) == pytest.approx(4.605, abs=1e-3)
    assert opposed_phase_te(1.5) == pytest.approx(500 / df)
    assert in_phase_te(3.0) == pytest.approx(2.3026, abs=1e-4)
    assert get_sequence("vibe-in").effective_te == pytest.approx(in_phase_te(1.5))
    assert get_sequence("vibe-opp", field=3).effective_te == pytest.approx(opposed_phase_te(3.0))


def _water_fat(i, te, tr=6.5, flip=10.0, t2s=None, fat_t2s=FAT_T2S):
    w = flash((1 - FF[i]) * PD[i], T1[i], T2S[i] if t2s is None else t2s, tr, te, flip)
    f = flash(FF[i] * PD[i], FAT_T1, fat_t2s, tr, te, flip)
    return w, f


def test_vibe_equations():
    te_ip, te_op = in_phase_te(1.5), opposed_phase_te(1.5)
    s_in = get_sequence("vibe-in").signal(props())
    s_op = get_sequence("vibe-opp").signal(props())
    for i in range(3):
        w, f = _water_fat(i, te_ip)
        assert s_in[i] == pytest.approx(w + f, rel=1e-9)  # phase 2π: fat adds
        w, f = _water_fat(i, te_op)
        assert s_op[i] == pytest.approx(abs(w - f), rel=1e-9)  # phase π: fat subtracts
    # explicit TE: general phase exp(i·2π·Δf·TE)
    te = 3.0
    s = get_sequence("vibe-in", te=te, tr=8.0, flip=12.0).signal(props())
    phi = 2 * math.pi * (-3.4e-6 * 42.577e6 * 1.5) * te / 1000
    for i in range(3):
        w, f = _water_fat(i, te, tr=8.0, flip=12.0)
        assert s[i] == pytest.approx(abs(complex(w + f * math.cos(phi), f * math.sin(phi))), rel=1e-9)


def test_opposed_phase_darkens_mixed_tissue_only():
    p = props(ff=[0.5, 0.0, 0.0], t2s=[30.0, 500.0, 500.0])
    s_in, s_op = get_sequence("vibe-in").signal(p), get_sequence("vibe-opp").signal(p)
    assert s_op[0] < 0.2 * s_in[0]  # ff 0.5: water and fat cancel
    assert s_op[1] == pytest.approx(s_in[1], rel=1e-2)  # ff 0: only T2* decay differs
    assert s_op[1] / s_in[1] == pytest.approx(math.exp((in_phase_te(1.5) - opposed_phase_te(1.5)) / 500.0))


def test_dixon_equations_and_relation():
    te_ip, te_op = in_phase_te(1.5), opposed_phase_te(1.5)
    water, fat = get_sequence("dixon-water").signal(props()), get_sequence("dixon-fat").signal(props())
    for i in range(3):
        wi, fi = _water_fat(i, te_ip)
        wo, fo = _water_fat(i, te_op)
        s_ip, s_op = wi + fi, wo - fo  # S_op's fat term carries e^{iπ}
        assert water[i] == pytest.approx(abs(s_ip + s_op) / 2, rel=1e-9)
        assert fat[i] == pytest.approx(abs(s_ip - s_op) / 2, rel=1e-9)
    # without T2* decay: water + fat = in-phase signal and fat / (water + fat) = fat signal fraction
    p = props(t2s=[1e9] * 3)
    p["fat_t2s"] = np.asarray(1e9)
    w, f = get_sequence("dixon-water").signal(p), get_sequence("dixon-fat").signal(p)
    np.testing.assert_allclose(w + f, get_sequence("vibe-in").signal(p), rtol=1e-6)
    for i in range(3):
        ww, ff = _water_fat(i, te_ip, t2s=1e9, fat_t2s=1e9)
        assert f[i] / (w[i] + f[i]) == pytest.approx(ff / (ww + ff), abs=1e-6)
    assert fat[1] > 10 * water[1] and water[0] > 10 * fat[0]


def test_space_and_flair_equations():
    s = get_sequence("space").signal(props())
    np.testing.assert_allclose(s, [PD[i] * (1 - math.exp(-3000 / T1[i])) * math.exp(-100 / T2[i]) for i in range(3)], rtol=1e-12)
    ti = FLUID_T1 * math.log(2 / (1 + math.exp(-9000 / FLUID_T1)))
    assert ti == pytest.approx(2371.76, abs=0.01)
    s = get_sequence("flair").signal(props())
    expected = [PD[i] * abs(1 - 2 * math.exp(-ti / T1[i]) + math.exp(-9000 / T1[i])) * math.exp(-100 / T2[i]) for i in range(3)]
    np.testing.assert_allclose(s, expected, rtol=1e-9, atol=1e-15)
    assert s[2] < 1e-12  # fluid nulled
    s = get_sequence("flair", ti=500.0).signal(props())
    assert s[2] == pytest.approx(abs(1 - 2 * math.exp(-500 / 4000) + math.exp(-9000 / 4000)) * math.exp(-100 / 2000))


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_flair_nulls_fluid_classes(scheme, b0):
    lut = prior_lut(scheme, get_sequence("flair", field=b0))
    for fluid in ("urinary_bladder", "kidney_cyst_left", "kidney_cyst_right"):  # fasting bile is not free fluid
        assert abs(lut[scheme.id_of(fluid)]) < 1e-6
    assert lut[scheme.id_of("liver")] > 0.02


def test_config_round_trip_and_errors():
    for name in list_sequences():
        seq = get_sequence(name)
        assert seq.modality in ("ct", "mr")
        assert sequence_from_config(seq.to_config()) == seq
    assert get_sequence("space", te=80).to_config() == {"name": "space", "field": 1.5, "tr": 3000.0, "te": 80.0}
    with pytest.raises(ConfigError, match="known: ct, gre, vibe-in"):
        get_sequence("bssfp")
    with pytest.raises(ConfigError, match=r"unknown parameter.*'echo'.*known: field, tr, te, flip"):
        get_sequence("gre", echo=3)
    for bad in ({"flip": 200.0}, {"field": 7.0}, {"tr": -1.0}, {"te": 20.0}):
        with pytest.raises(ConfigError):
            get_sequence("gre", **bad)


# -- deterministic prior ---------------------------------------------------------------
def test_ct_prior_equals_table_hu(scheme):
    table = load_default_tissue_table()
    names = ["background", "liver", "aorta", "vertebrae_L1", "subcutaneous_fat", "body"]
    ids = [0 if n == "background" else scheme.id_of(n) for n in names]
    labels = np.array(ids, dtype=np.int16).reshape(2, 3)
    out = simulate_prior(labels, scheme, "ct")
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out.ravel(), np.array([table.properties(n, 1.5).hu for n in names], np.float32))


def test_prior_keeps_non_integer_values(scheme):
    user = tissue_table_from_mapping({"tissues": {"liver": {"ct": {"hu": 55.25}}}}, "u")
    labels = np.full((2, 2, 2), scheme.id_of("liver"), dtype=np.uint8)
    assert np.all(simulate_prior(labels, scheme, "ct", user) == np.float32(55.25))
    mr = simulate_prior(labels, scheme, get_sequence("vibe-in"))
    assert mr.dtype == np.float32 and 0 < mr[0, 0, 0] < 1  # MR signal is fractional, not truncated


def test_prior_matches_lut_for_all_dtypes(scheme):
    rng = np.random.default_rng(0)
    ids = np.array([0, *scheme.ids])
    labels = rng.choice(ids, size=(8, 9, 10))
    lut = prior_lut(scheme, "dixon-fat")
    for dt in (np.uint8, np.int16, np.int32, np.int64, np.uint16):
        np.testing.assert_array_equal(simulate_prior(labels.astype(dt), scheme, "dixon-fat"), lut[labels])


def test_unknown_ids_are_listed_with_counts():
    scheme = get_scheme("brats2021")  # 3 is a gap, 9 beyond the last id
    with pytest.raises(ConfigError, match=r"3 \(2 voxels\), 9 \(1 voxels\)"):
        simulate_prior(np.array([0, 1, 3, 3, 9]), scheme, "ct")
    with pytest.raises(ConfigError, match=r"-1 \(1 voxels\)"):
        simulate_prior(np.array([0, -1]), scheme, "ct")
    with pytest.raises(InputError, match="integers"):
        simulate_prior(np.zeros(3, dtype=np.float32), scheme, "ct")


# -- randomised prior ------------------------------------------------------------------
@pytest.fixture(scope="module")
def volume(scheme):
    rng = np.random.default_rng(1)
    return rng.choice(np.array([0, *scheme.ids], dtype=np.int16), size=(12, 14, 16))


@pytest.mark.parametrize("seq", ["ct", "vibe-opp", "flair"])
def test_zero_spread_equals_deterministic(scheme, volume, seq):
    img, params = RandomPrior(seq, seed=3)(volume, scheme, spacing=(1.0, 1.0, 3.0))
    assert img.dtype == np.float32
    assert np.array_equal(img, simulate_prior(volume, scheme, seq))
    assert params.noise_seed is None and params.bias_coefficients is None and not params.jitter


@pytest.mark.parametrize("seq", ["ct", "vibe-in"])
def test_random_prior_seeds(scheme, volume, seq):
    kw = dict(tissue_spread=0.5, bias_field=0.3, noise=0.02 if seq != "ct" else 10.0, blur=1.0)
    a, pa = RandomPrior(seq, seed=7, **kw)(volume, scheme, spacing=(1, 1, 2))
    b, _ = RandomPrior(seq, seed=7, **kw)(volume, scheme, spacing=(1, 1, 2))
    c, _ = RandomPrior(seq, seed=8, **kw)(volume, scheme, spacing=(1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    rp = RandomPrior(seq, seed=7, **kw)
    assert np.array_equal(rp.apply(pa, volume, scheme, spacing=(1, 1, 2)), a)  # apply is deterministic
    assert set(pa.to_dict()) == {"jitter", "bias_coefficients", "noise_seed", "noise_sd", "blur_mm"}


def test_random_prior_components(scheme):
    liver = scheme.id_of("liver")
    labels = np.full((20, 20, 20), liver, dtype=np.uint8)
    table = load_default_tissue_table()
    hu, sd = table.properties("liver", 1.5).hu, table.properties("liver", 1.5).hu_sd
    # noise: sd in HU for CT
    img, _ = RandomPrior("ct", noise=10.0, seed=0)(labels, scheme)
    assert img.mean() == pytest.approx(hu, abs=1.0) and img.std() == pytest.approx(10.0, rel=0.05)
    # tissue jitter: one constant offset per tissue, scaled by hu_sd
    rp = RandomPrior("ct", tissue_spread=1.0, seed=0)
    params = rp.sample(scheme)
    img = rp.apply(params, labels, scheme)
    assert np.all(img == np.float32(hu + params.jitter["hu"][liver]))
    assert params.jitter["hu"][0] == 0.0 and abs(params.jitter["hu"][liver]) < 5 * sd
    # bias: smooth, positive, applied to attenuation relative to air
    img, params = RandomPrior("ct", bias_field=0.1, seed=0)(labels, scheme)
    gain = (img + 1000.0) / (hu + 1000.0)
    assert img.std() > 0 and np.all(gain > 0)
    for axis in range(3):  # log(gain) is a cubic polynomial: 4th differences vanish
        assert np.abs(np.diff(np.log(gain.astype(np.float64)), n=4, axis=axis)).max() < 1e-4
    np.testing.assert_allclose(gain, bias_field(labels.shape, params.bias_coefficients), rtol=1e-5)
    # blur: a step edge becomes a ramp; uniform regions unchanged
    step = np.zeros((4, 4, 16), dtype=np.uint8)
    step[..., 8:] = liver
    img, _ = RandomPrior("ct", blur=2.0, seed=0)(step, scheme, spacing=(1.0, 1.0, 1.0))
    line = img[0, 0]
    assert -1000 < line[7] < line[8] < hu and np.all(np.diff(line) >= 0)


def test_random_prior_rejects_bad_settings(scheme):
    with pytest.raises(ConfigError):
        RandomPrior("ct", noise=-1.0)
    with pytest.raises(ConfigError):
        RandomPrior("nope")
    with pytest.raises(ConfigError, match="spacing"):
        RandomPrior("ct")(np.zeros((2, 2, 2), np.uint8), scheme, spacing=(1.0, 1.0))

"""CT contrast phases: the prior adds the literature enhancement per tissue (resources/contrast_phases.yaml)."""

from __future__ import annotations

import numpy as np
import pytest

from seg2med.errors import ConfigError
from seg2med.labels import get_scheme
from seg2med.physics import simulate_prior
from seg2med.physics.sequences import CT, get_sequence, sequence_from_config


def _prior_of(names: list[str], phase: str) -> dict[str, float]:
    scheme = get_scheme("total")
    labels = np.array([scheme.classes[n] for n in names], dtype=np.int16).reshape(len(names), 1, 1)
    prior = simulate_prior(labels, scheme, get_sequence("ct", contrast_phase=phase))
    return {n: float(prior[i, 0, 0]) for i, n in enumerate(names)}


NAMES = ["aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "liver", "spleen", "kidney_left",
         "autochthon_left", "vertebrae_L1", "lung_upper_lobe_left", "urinary_bladder"]


def test_arterial_and_portal_venous_phases_enhance_vessels_and_organs_by_the_literature_amounts():
    native, art, pv = (_prior_of(NAMES, p) for p in ("native", "arterial", "portal-venous"))
    assert art["aorta"] - native["aorta"] == pytest.approx(260) and pv["aorta"] - native["aorta"] == pytest.approx(110)
    assert 250 <= art["aorta"] <= 450  # a CT angiogram's aorta
    assert pv["portal_vein_and_splenic_vein"] > art["portal_vein_and_splenic_vein"]  # the portal vein fills later
    assert art["inferior_vena_cava"] - native["inferior_vena_cava"] < 30 < pv["inferior_vena_cava"] - native["inferior_vena_cava"]
    assert 90 <= pv["liver"] <= 130 and pv["liver"] - native["liver"] > art["liver"] - native["liver"]
    assert art["kidney_left"] - native["kidney_left"] >= 100
    for unenhanced in ("vertebrae_L1", "lung_upper_lobe_left", "urinary_bladder"):
        assert art[unenhanced] == native[unenhanced] == pv[unenhanced]
    assert 0 < pv["autochthon_left"] - native["autochthon_left"] <= 15  # muscle barely enhances


def test_native_is_the_default_and_the_phase_is_part_of_the_sequence_config():
    assert CT().contrast_phase == "native"
    assert sequence_from_config({"name": "ct"}) == CT()  # configs written before phases existed
    seq = get_sequence("ct", contrast_phase="arterial")
    assert seq.to_config() == {"name": "ct", "contrast_phase": "arterial"}
    assert sequence_from_config(seq.to_config()) == seq
    with pytest.raises(ConfigError, match="unknown contrast phase 'venous'"):
        get_sequence("ct", contrast_phase="venous")


def test_generate_with_a_contrast_phase_simulates_the_prior_in_that_phase(data_dir):
    import seg2med
    from seg2med.io import Volume, load_volume

    full = load_volume(data_dir / "totalsegmentator" / "example_seg.nii.gz")
    shift = np.eye(4)
    shift[2, 3] = 10
    labels = Volume(full.array[:, :, 10:13], full.affine @ shift, None, None)
    runs = {p: seg2med.generate(labels, model="ct-demo-tiny", steps=3, device="cpu", contrast_phase=p)
            for p in (None, "arterial")}
    aorta = labels.array == get_scheme("total").classes["aorta"]
    assert aorta.sum() > 20
    rise = float(np.median(runs["arterial"].prior.array[aorta]) - np.median(runs[None].prior.array[aorta]))
    assert rise == pytest.approx(260, abs=1)
    assert runs["arterial"].metadata["sequence"] == {"name": "ct", "contrast_phase": "arterial"}
    with pytest.raises(ConfigError, match="applies to CT models"):
        seg2med.generate(labels, model="mr-demo-tiny", contrast_phase="arterial")

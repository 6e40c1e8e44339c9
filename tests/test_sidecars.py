"""The sidecar formats of seg2med.io.sidecars: what api writes beside a label volume, a prior and a generated
volume, and reading them back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seg2med.errors import ConfigError, OutputExistsError
from seg2med.io.outputs import described_files, file_digest, written_by_seg2med
from seg2med.io.sidecars import (
    GENERATED_KIND,
    LABELS_KIND,
    PRIOR_KIND,
    check_volume_outputs,
    generated_paths,
    generated_provenance,
    label_table,
    prior_sidecar,
    read_label_table,
)


@pytest.fixture(scope="module")
def phantom():
    import seg2med

    return seg2med.make_phantom(seed=2, spacing=6.0, slices=6, size=64)


def test_a_label_volume_sidecar_round_trips(phantom, tmp_path):
    import seg2med

    out = seg2med.save_label_volume(phantom, tmp_path / "lab.nii.gz")
    side = json.loads((tmp_path / "lab.json").read_text())
    assert side == {**label_table(phantom.scheme, phantom.report), "files": ["lab.nii.gz"],
                    "sha256": {"lab.nii.gz": file_digest(out)}}
    assert side["kind"] == LABELS_KIND and side["report"] == phantom.report
    back = read_label_table(out)
    assert back.name == phantom.scheme.name and back.classes == phantom.scheme.classes
    assert written_by_seg2med(out) and written_by_seg2med(tmp_path / "lab.json")
    (tmp_path / "other.json").write_text('{"kind": "seg2med-prior", "labels": {}}')
    assert read_label_table(tmp_path / "other.nii.gz") is None  # not a label table
    assert read_label_table(tmp_path / "none.nii.gz") is None


def test_a_prior_sidecar_has_its_layout(phantom, tmp_path):
    import seg2med

    prior = seg2med.simulate_prior(phantom, "vibe-in", seed=5, noise=0.01)
    meta = prior.metadata
    assert list(meta) == ["kind", "seg2med_version", "sequence", "modality", "scheme", "body_contour", "tissue_table",
                          "seed", "randomisation", "sampled_parameters", "seconds", "units"]
    assert meta["kind"] == PRIOR_KIND and meta["seed"] == 5 and meta["tissue_table"] == "default"
    assert meta["randomisation"] == {"tissue_spread": 0.0, "bias_field": 0.0, "noise": 0.01, "blur": 0.0}
    assert meta["sampled_parameters"] is not None and meta["units"] == "a.u. (relative signal)"
    out = seg2med.save_prior(prior, tmp_path / "p.nii.gz")
    side = json.loads((tmp_path / "p.json").read_text())
    assert side == {**json.loads(json.dumps(meta)), "files": ["p.nii.gz"], "sha256": {"p.nii.gz": file_digest(out)}}

    class Sampled:
        def to_dict(self):
            return {"a": 1}

    ct = prior_sidecar(sequence={"name": "ct"}, modality="ct", scheme="total+seg2med", body_contour="labels",
                       tissues="my.yaml", seed=None, tissue_spread=0.0, bias_field=0.0, noise=0.0, blur=0.0,
                       sampled=Sampled(), seconds=1.234567)
    assert ct["units"] == "HU" and ct["tissue_table"] == "my.yaml" and ct["seconds"] == 1.2346
    assert ct["sampled_parameters"] == {"a": 1}


def test_generated_set_names_and_checks(tmp_path):
    paths = generated_paths(tmp_path / "s.nii.gz", 3)
    assert {k: p.name for k, p in paths.items()} == {"sample0": "s.nii.gz", "sidecar": "s.json",
                                                    "sample1": "s_sample1.nii.gz", "sample2": "s_sample2.nii.gz",
                                                    "std": "s_std.nii.gz"}
    assert list(generated_paths(tmp_path / "s.nii", 1)) == ["sample0", "sidecar"]
    assert generated_provenance(model_name="ct-demo", scheme="total+seg2med", body_contour="given", tissues=None) == {
        "seg2med_version": __import__("seg2med").__version__, "model_name": "ct-demo", "scheme": "total+seg2med",
        "body_contour": "given", "tissue_table": "default"}
    check_volume_outputs(tmp_path / "s.nii.gz", samples=3)
    with pytest.raises(ConfigError, match=r"s\.txt: output must be a NIfTI file named \*\.nii\.gz or \*\.nii"):
        check_volume_outputs(tmp_path / "s.txt")
    (tmp_path / "s_std.nii.gz").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match=r"s_std\.nii\.gz: output exists"):
        check_volume_outputs(tmp_path / "s.nii.gz", samples=2)
    check_volume_outputs(tmp_path / "s.nii.gz", samples=1)  # one sample has no _std


def test_a_generated_sidecar_round_trips(phantom, tmp_path, one_thread):
    import seg2med

    res = seg2med.generate(phantom, "ct", model="ct-demo-tiny", steps=1, seed=0, samples=2, batch=8, device="cpu")
    assert res.metadata["kind"] == GENERATED_KIND and res.metadata["model_name"] == "ct-demo-tiny"
    paths = seg2med.save_generated(res, tmp_path / "g.nii.gz")
    side = json.loads(paths["sidecar"].read_text())
    assert side["files"] == ["g.nii.gz", "g_sample1.nii.gz", "g_std.nii.gz"]
    assert side["sha256"] == {n: file_digest(tmp_path / n) for n in side["files"]}
    assert sorted(described_files(paths["sidecar"], kind=GENERATED_KIND)) == sorted(tmp_path / n for n in side["files"])
    assert {k: side[k] for k in ("scheme", "body_contour", "tissue_table")} == {
        "scheme": phantom.scheme.name, "body_contour": "phantom", "tissue_table": "default"}
    assert np.isfinite(side["seconds"])

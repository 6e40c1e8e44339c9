"""Table of bad inputs over every command: each must end in exit code != 0, exactly one ``error:``
line, no traceback, inputs byte-identical and no new (partial) output on disk."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_cli

MODELS = Path(__file__).resolve().parents[1] / "src" / "seg2med" / "resources" / "models"


def _nii(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    arr = np.asarray(arr)
    aff = np.diag([8.0, 8.0, 8.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(arr, aff, dtype=arr.dtype), str(path))
    return path


@pytest.fixture(scope="module")
def fx(tmp_path_factory, ts_dir) -> dict[str, Path]:
    """Shared inputs: a plain phantom label map, its CT prior as 'image', a prepared dataset, a prior run."""
    import seg2med
    from seg2med.data import PrepareConfig, prepare_dataset
    from seg2med.data.synthetic import phantom_subjects

    d = tmp_path_factory.mktemp("inputs")
    lv = seg2med.make_phantom(seed=0, spacing=8.0, slices=6, size=32)
    labels = _nii(d / "labels.nii.gz", lv.volume.array.astype(np.int16), lv.volume.affine)
    ct = _nii(d / "ct.nii.gz", seg2med.simulate_prior(lv, "ct").volume.array, lv.volume.affine)
    seg2med.save_label_volume(lv, d / "canonical.nii.gz")
    ds = d / "ds"
    prepare_dataset(phantom_subjects(3, labels=True), ds, PrepareConfig(modality="ct", spacing=8.0, size=32,
                                                                        split=(0.6, 0.4, 0.0)))
    run = d / "run"
    from seg2med.training import train_method

    train_method("prior", ds, run, training={"val_every": 0}, progress=False)
    return {"mr": ts_dir / "example_mr_sm.nii.gz", "mrseg": ts_dir / "example_seg_mr.nii.gz", "root": d, "labels": labels, "ct": ct, "canonical": d / "canonical.nii.gz", "ds": ds, "run": run}


# --------------------------------------------------------------------------- set-ups (fx, case dir) -> extra names
def _file(name: str, data: bytes):
    def make(fx, d):
        (d / name).write_bytes(data)
        return {name.split(".")[0]: d / name}
    return make


def _arr(name: str, arr, affine=None):
    def make(fx, d):
        return {name: _nii(d / f"{name}.nii.gz", np.asarray(arr), affine)}
    return make


def _bomb(fx, d):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_data_dtype(np.int16)
    with gzip.open(d / "bomb.nii.gz", "wb") as f:
        f.write(hdr.binaryblock + b"\0" * 4)
    return {"bomb": d / "bomb.nii.gz"}


def _truncated(fx, d):
    img = nib.Nifti1Image(np.ones((32, 32, 32), np.int16), np.eye(4))
    nib.save(img, str(d / "trunc.nii"))
    raw = (d / "trunc.nii").read_bytes()
    (d / "trunc.nii").write_bytes(raw[: len(raw) // 2])
    return {"trunc": d / "trunc.nii"}


def _loop(fx, d):
    os.symlink(d / "loop", d / "loop")
    return {"loop": d / "loop"}


def _user_file(fx, d):
    (d / "p.nii.gz").write_bytes(b"my own data")
    return {"userfile": d / "p.nii.gz"}


def _user_dir(fx, d):
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("keep")
    return {"mine": d / "mine"}


def _model(edit):
    def make(fx, d):
        m = d / "model"
        shutil.copytree(MODELS / "ct-demo-tiny", m)
        cfg = json.loads((m / "config.json").read_text())
        edit(cfg, m)
        (m / "config.json").write_text(json.dumps(cfg))
        return {"model": m}
    return make


def _wrong_channels(cfg, m):
    cfg["model"]["channels"] = [c * 2 for c in cfg["model"]["channels"]]


def _zero_timesteps(cfg, m):
    cfg["scheduler"]["num_train_timesteps"] = 0


def _corrupt_weights(cfg, m):
    for w in m.glob("*.safetensors"):
        w.write_bytes(w.read_bytes()[:100])


def _dataset(edit):
    def make(fx, d):
        ds = d / "ds"
        shutil.copytree(fx["ds"], ds)
        edit(ds)
        return {"ds2": ds}
    return make


def _no_config(ds):
    m = json.loads((ds / "manifest.json").read_text())
    del m["config"]
    (ds / "manifest.json").write_text(json.dumps(m))


def _truncate_shard(ds):
    shard = sorted(p for p in ds.rglob("*.npz"))[0]
    shard.write_bytes(shard.read_bytes()[:200])


def _bad_yaml(fx, d):
    (d / "cfg.yaml").write_text("model: [unclosed\n")
    return {"cfg": d / "cfg.yaml"}


def _grid(fx, d):
    return {"other": _nii(d / "other.nii.gz", np.ones((10, 10, 4), np.uint8))}


def _pred_in(fx, d):
    (d / "rep").mkdir()
    shutil.copy(fx["ct"], d / "rep" / "pred.nii.gz")
    (d / "rep" / ".seg2med-output.json").write_text('{"kind": "seg2med-evaluation", "entries": ["pred.nii.gz"]}')
    return {"rep": d / "rep", "predin": d / "rep" / "pred.nii.gz"}


F32 = np.float32
CASES: list[tuple[str, list[str], object, str]] = [
    # (id, argv with {placeholders}, set-up or None, text the error line must contain)
    ("missing-labels", ["simulate", "--labels", "{d}/nope.nii.gz", "--out", "{d}/p.nii.gz"], None, "file not found"),
    ("labels-empty-folder", ["simulate", "--labels", "{d}/empty", "--out", "{d}/p.nii.gz"],
     lambda fx, d: (d / "empty").mkdir() or {}, "empty"),
    ("labels-txt", ["simulate", "--labels", "{notes}", "--out", "{d}/p.nii.gz"], _file("notes.txt", b"hello"), "not a NIfTI"),
    ("labels-corrupt-gzip", ["simulate", "--labels", "{bad}", "--out", "{d}/p.nii.gz"],
     _file("bad.nii.gz", b"\x1f\x8b\x08\x00garbage" * 10), "bad.nii.gz"),
    ("labels-truncated", ["simulate", "--labels", "{trunc}", "--out", "{d}/p.nii.gz"], _truncated, "trunc.nii"),
    ("labels-header-bomb", ["simulate", "--labels", "{bomb}", "--out", "{d}/p.nii.gz"], _bomb, "bomb.nii.gz"),
    ("labels-int64-huge", ["simulate", "--labels", "{big}", "--out", "{d}/p.nii.gz"],
     _arr("big", np.full((4, 4, 4), 2**32 + 5, np.int64)), "4294967301"),
    ("labels-uint32-max", ["simulate", "--labels", "{u32}", "--out", "{d}/p.nii.gz"],
     _arr("u32", np.full((4, 4, 4), 2**32 - 1, np.uint32)), "4294967295"),
    ("labels-float-1e20", ["simulate", "--labels", "{f}", "--out", "{d}/p.nii.gz"],
     _arr("f", np.full((4, 4, 4), 1e20, np.float64)), "1e+20"),
    ("labels-4d", ["simulate", "--labels", "{v4}", "--out", "{d}/p.nii.gz"], _arr("v4", np.zeros((4, 4, 4, 3), np.uint8)), "3D"),
    ("labels-2d", ["simulate", "--labels", "{v2}", "--out", "{d}/p.nii.gz"], _arr("v2", np.zeros((4, 4), np.uint8)), "3D"),
    ("labels-is-ct", ["simulate", "--labels", "{ct}", "--out", "{d}/p.nii.gz"], None, "intensity image"),
    ("labels-fractional", ["simulate", "--labels", "{fr}", "--out", "{d}/p.nii.gz"],
     _arr("fr", np.full((4, 4, 4), 1.5, F32)), "non-integer"),
    ("labels-nan", ["simulate", "--labels", "{nan}", "--out", "{d}/p.nii.gz"], _arr("nan", np.full((4, 4, 4), np.nan, F32)), "NaN"),
    ("out-txt", ["simulate", "--labels", "{labels}", "--out", "{d}/p.txt"], None, "NIfTI"),
    ("out-is-folder", ["simulate", "--labels", "{labels}", "--out", "{d}/f.nii.gz"],
     lambda fx, d: (d / "f.nii.gz").mkdir() or {}, "is a folder"),
    ("out-under-a-file", ["simulate", "--labels", "{labels}", "--out", "{blocker}/p.nii.gz"], _file("blocker", b"x"),
     "not a folder"),
    ("out-symlink-loop", ["simulate", "--labels", "{labels}", "--out", "{loop}/p.nii.gz"], _loop, "symlink loop"),
    ("out-exists", ["simulate", "--labels", "{labels}", "--out", "{userfile}"], _user_file, "--overwrite"),
    ("out-exists-not-ours", ["simulate", "--labels", "{labels}", "--out", "{userfile}", "--overwrite"], _user_file,
     "not written by seg2med"),
    ("out-is-the-input", ["simulate", "--labels", "{canonical}", "--out", "{canonical}", "--overwrite"], None,
     "an input of this command"),
    ("sidecar-is-folder", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz"],
     lambda fx, d: (d / "p.json").mkdir() or {}, "p.json"),
    ("unknown-sequence", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--sequence", "xray"], None, "xray"),
    ("negative-noise", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--noise", "-1"], None, "--noise"),
    ("negative-blur", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--blur", "-2"], None, "--blur"),
    ("nan-bias", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--bias-field", "nan"], None, "--bias-field"),
    ("negative-spread", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--tissue-spread", "-3"], None,
     "--tissue-spread"),
    ("field-zero", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--sequence", "gre", "--field", "0"], None,
     "field"),
    ("tr-negative", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--sequence", "gre", "--tr", "-5"], None,
     "tr"),
    ("seed-negative", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--seed", "-1"], None, "--seed"),
    ("seed-too-big", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--seed", str(2**32)], None, "--seed"),
    ("tissues-missing", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--tissues", "{d}/t.yaml"], None,
     "t.yaml"),
    ("tissues-bad-yaml", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--tissues", "{cfg}"], _bad_yaml,
     "cfg.yaml"),
    ("empty-scheme", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--scheme", ""], None, "--scheme: empty"),
    ("scheme-contradicts-table", ["simulate", "--labels", "{canonical}", "--out", "{d}/p.nii.gz", "--scheme", "amos"], None,
     "contradicts"),
    ("scheme-unknown-for-canonical", ["simulate", "--labels", "{canonical}", "--out", "{d}/p.nii.gz", "--scheme", "nope"],
     None, "nope"),
    ("unknown-scheme", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--scheme", "nosuch"], None, "nosuch"),
    ("image-is-labels", ["simulate", "--labels", "{labels}", "--out", "{d}/p.nii.gz", "--image", "{labels}", "--modality",
                         "ct"], None, "is a label map"),
    ("image-mr-as-ct", ["simulate", "--labels", "{mrseg}", "--out", "{d}/p.nii.gz", "--image", "{mr}", "--modality", "ct"],
     None, "not CT Hounsfield units"),
    ("prepare-mr-as-ct", ["prepare", "--images", "{mr}", "--labels", "{mrseg}", "--out", "{d}/ds", "--sequence", "ct"], None,
     "not CT Hounsfield units"),
    ("prepare-labels-as-image", ["prepare", "--images", "{labels}", "--labels", "{labels}", "--out", "{d}/ds"], None,
     "is a label map"),
    ("modality-without-image", ["anatomy", "--labels", "{labels}", "--out", "{d}/a.nii.gz", "--modality", "ct"], None,
     "--image, which is not given"),
    ("image-without-modality", ["anatomy", "--labels", "{labels}", "--out", "{d}/a.nii.gz", "--image", "{ct}"], None,
     "modality"),
    ("body-other-grid", ["anatomy", "--labels", "{labels}", "--out", "{d}/a.nii.gz", "--body", "{other}"], _grid,
     "different voxel grids"),
    ("body-not-binary", ["anatomy", "--labels", "{labels}", "--out", "{d}/a.nii.gz", "--body", "{ct}"], None,
     "intensity image"),
    ("tissue-masks-missing", ["anatomy", "--labels", "{labels}", "--out", "{d}/a.nii.gz", "--tissue-masks", "{d}/tm"], None,
     "tm"),
    ("canonical-with-body", ["anatomy", "--labels", "{canonical}", "--out", "{d}/a.nii.gz", "--body", "{labels}"], None,
     "would be ignored"),
    ("phantom-spacing-inf", ["phantom", "--out", "{d}/ph.nii.gz", "--spacing", "inf"], None, "spacing"),
    ("phantom-spacing-zero", ["phantom", "--out", "{d}/ph.nii.gz", "--spacing", "0"], None, "spacing"),
    ("phantom-seed-negative", ["phantom", "--out", "{d}/ph.nii.gz", "--seed", "-7"], None, "--seed"),
    ("phantom-size-zero", ["phantom", "--out", "{d}/ph.nii.gz", "--size", "0"], None, "size"),
    ("phantom-size-huge", ["phantom", "--out", "{d}/ph.nii.gz", "--size", "100000"], None, "memory budget"),
    ("phantom-slices-zero", ["phantom", "--out", "{d}/ph.nii.gz", "--slices", "0"], None, "slices"),
    ("model-missing", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "{d}/nomodel"], None, "nomodel"),
    ("model-config-mismatch", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "{model}"],
     _model(_wrong_channels), "model"),
    ("model-zero-timesteps", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "{model}"],
     _model(_zero_timesteps), "num_train_timesteps"),
    ("model-corrupt-weights", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "{model}"],
     _model(_corrupt_weights), "safetensors"),
    ("generate-steps-zero", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                             "--steps", "0"], None, "steps"),
    ("generate-sampler", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                          "--sampler", "euler9"], None, "euler9"),
    ("generate-samples-zero", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                               "--samples", "0"], None, "samples"),
    ("generate-batch-zero", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                             "--batch", "0"], None, "batch"),
    ("generate-axis", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                       "--axis", "oblique"], None, "oblique"),
    ("generate-device", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                         "--device", "foo"], None, "foo"),
    ("generate-fp16-cpu", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                           "--device", "cpu", "--precision", "fp16"], None, "fp16"),
    ("generate-wrong-sequence", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                                 "--sequence", "flair"], None, "flair"),
    ("generate-seed", ["generate", "--labels", "{labels}", "--out", "{d}/s.nii.gz", "--model", "ct-demo-tiny",
                       "--seed", "-3"], None, "--seed"),
    ("generate-out-user-file", ["generate", "--labels", "{labels}", "--out", "{userfile}", "--model", "ct-demo-tiny",
                                "--overwrite"], _user_file, "not written by seg2med"),
    ("prepare-count-mismatch", ["prepare", "--images", "{ct},{ct}", "--labels", "{labels}", "--out", "{d}/ds"], None,
     "pair"),
    ("prepare-cwd", ["prepare", "--images", "{ct}", "--labels", "{labels}", "--out", ".", "--size", "32", "--spacing", "8"],
     None, "current folder"),
    ("prepare-spacing-tiny", ["prepare", "--images", "{ct}", "--labels", "{labels}", "--out", "{d}/ds", "--spacing", "0.001"],
     None, "memory budget"),
    ("prepare-axes", ["prepare", "--images", "{ct}", "--labels", "{labels}", "--out", "{d}/ds", "--axes", "diagonal"], None,
     "diagonal"),
    ("prepare-percentiles", ["prepare", "--images", "{ct}", "--labels", "{labels}", "--out", "{d}/ds", "--percentiles", "x"],
     None, "--percentiles"),
    ("prepare-user-folder", ["prepare", "--images", "{ct}", "--labels", "{labels}", "--out", "{mine}", "--overwrite"],
     _user_dir, "seg2med did not write"),
    ("train-data-missing", ["train", "--data", "{d}/nods", "--out", "{d}/r"], None, "nods"),
    ("train-data-not-dataset", ["train", "--data", "{mine}", "--out", "{d}/r"], _user_dir, "not a prepared"),
    ("train-lr-nan", ["train", "--data", "{ds}", "--out", "{d}/r", "--lr", "nan", "--preset", "tiny"], None, "lr"),
    ("train-batch-zero", ["train", "--data", "{ds}", "--out", "{d}/r", "--batch", "0", "--preset", "tiny"], None, "batch"),
    ("train-batch-huge", ["train", "--data", "{ds}", "--out", "{d}/r", "--batch", "100000000", "--preset", "tiny"], None,
     "memory budget"),
    ("train-steps-zero", ["train", "--data", "{ds}", "--out", "{d}/r", "--steps", "0", "--preset", "tiny"], None, "steps"),
    ("train-manifest-no-config", ["train", "--data", "{ds2}", "--out", "{d}/r", "--preset", "tiny", "--steps", "1"],
     _dataset(_no_config), "config"),
    ("train-truncated-shard", ["train", "--data", "{ds2}", "--out", "{d}/r", "--preset", "tiny", "--steps", "1"],
     _dataset(_truncate_shard), ".npz"),
    ("train-prediction", ["train", "--data", "{ds}", "--out", "{d}/r", "--prediction", "x0"], None, "--prediction"),
    ("train-resume-nothing", ["train", "--data", "{ds}", "--out", "{d}/r", "--resume"], None, "resume"),
    ("train-resume-and-overwrite", ["train", "--data", "{ds}", "--out", "{run}", "--resume", "--overwrite"], None,
     "resume"),
    ("train-bad-config", ["train", "--data", "{ds}", "--out", "{d}/r", "--config", "{cfg}"], _bad_yaml, "cfg.yaml"),
    ("train-user-folder", ["train", "--data", "{ds}", "--out", "{mine}", "--overwrite", "--method", "prior"], _user_dir,
     "not a seg2med run"),
    ("segmenter-no-labels", ["train-segmenter", "--data", "{ds2}", "--out", "{d}/seg", "--steps", "1"],
     _dataset(lambda ds: None), "labels"),
    ("evaluate-pred-missing", ["evaluate", "--pred", "{d}/none.nii.gz", "--ref", "{ct}", "--out", "{d}/rep"], None,
     "none.nii.gz"),
    ("evaluate-pred-is-labels", ["evaluate", "--pred", "{labels}", "--ref", "{ct}", "--out", "{d}/rep"], None, "label map"),
    ("evaluate-grid", ["evaluate", "--pred", "{other}", "--ref", "{ct}", "--out", "{d}/rep"], _grid, "grid"),
    ("evaluate-modality", ["evaluate", "--pred", "{ct}", "--ref", "{ct}", "--out", "{d}/rep", "--modality", "pet"], None,
     "pet"),
    ("evaluate-user-folder", ["evaluate", "--pred", "{ct}", "--ref", "{ct}", "--out", "{mine}", "--overwrite"], _user_dir,
     "seg2med did not write"),
    ("evaluate-pred-in-out", ["evaluate", "--pred", "{predin}", "--ref", "{ct}", "--out", "{rep}", "--overwrite"], _pred_in,
     "an input of this command"),
    ("benchmark-methods", ["benchmark", "--data", "{ds}", "--out", "{d}/b", "--methods", "gan9"], None, "gan9"),
    ("benchmark-data-missing", ["benchmark", "--data", "{d}/nods", "--out", "{d}/b"], None, "nods"),
    ("labels-unknown-scheme", ["labels", "nosuch"], None, "nosuch"),
    ("demo-body-without-labels", ["demo", "--out", "{d}/demo", "--body", "{labels}", "--priors-only"], None, "--labels"),
]


def _state(root: Path) -> dict[str, object]:
    """Every file's bytes and every folder (and link) under ``root``."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            out[rel] = "link" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def test_the_table_holds_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, fx, tmp_path, capsys, monkeypatch):
    name, argv, setup, needle = case
    d = tmp_path / "case"
    d.mkdir()
    names = {k: str(v) for k, v in fx.items()} | {"d": str(d)}
    if name == "segmenter-no-labels":  # a dataset without stored labels
        from seg2med.data import PrepareConfig, prepare_dataset
        from seg2med.data.synthetic import phantom_subjects

        prepare_dataset(phantom_subjects(2), d / "ds", PrepareConfig(modality="ct", spacing=8.0, size=32,
                                                                     split=(0.5, 0.5, 0.0)))
        names["ds2"] = str(d / "ds")
    elif setup is not None:
        names |= {k: str(v) for k, v in setup(fx, d).items()}
    monkeypatch.chdir(d)
    before_inputs, before_case = _state(fx["root"]), _state(d)
    res = run_cli([a.format(**names) for a in argv], capsys, monkeypatch)
    assert res.code != 0, (name, res.out, res.err)
    assert "Traceback" not in res.err + res.out, res.err
    errors = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.err
    assert needle in " ".join(res.err.split()), (needle, res.err)
    assert _state(fx["root"]) == before_inputs  # inputs byte-identical
    assert _state(d) == before_case  # nothing new, nothing half-written, nothing deleted


def test_memory_budget_setting_is_checked(fx, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEG2MED_MEMORY_GB", "lots")
    res = run_cli(["phantom", "--out", tmp_path / "ph.nii.gz"], capsys, monkeypatch)
    assert res.code != 0 and "SEG2MED_MEMORY_GB" in res.err and "Traceback" not in res.err
    assert list(tmp_path.iterdir()) == []


def test_prepare_pairs_by_name_or_refuses_a_partial_match(fx, tmp_path, capsys, monkeypatch):
    import shutil

    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    for n in ("a", "b"):
        shutil.copy(fx["ct"], imgs / f"{n}.nii.gz")
    for n in ("b", "c"):
        shutil.copy(fx["labels"], labs / f"{n}.nii.gz")
    res = run_cli(["prepare", "--images", imgs, "--labels", labs, "--out", tmp_path / "ds", "--size", "32",
                   "--spacing", "8"], capsys, monkeypatch)
    assert res.code != 0 and "Traceback" not in res.err
    assert "a.nii.gz: no label map of the same name" in " ".join(res.err.split())
    assert not (tmp_path / "ds").exists()
    (labs / "c.nii.gz").rename(labs / "a.nii.gz")
    res = run_cli(["prepare", "--images", imgs, "--labels", labs, "--out", tmp_path / "ds", "--size", "32",
                   "--spacing", "8"], capsys, monkeypatch)
    assert res.code == 0, res.err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert {s["id"]: Path(s["sources"]["labels"]).name for s in manifest["subjects"]} == {"a": "a.nii.gz", "b": "b.nii.gz"}


def test_evaluate_refuses_a_segmenter_of_another_modality_or_label_scheme(fx, tmp_path, capsys, monkeypatch):
    from seg2med.training import train_segmenter
    from seg2med.training.segmenter import default_train_config

    seg = tmp_path / "seg"
    train_segmenter(fx["ds"], seg, train_cfg=default_train_config(steps=1, batch=2, ckpt_every=0, val_every=0),
                    progress=False)
    img = nib.load(str(fx["ct"]))
    mr = _nii(tmp_path / "mr.nii.gz", (np.asarray(img.dataobj) + 1024.0).astype(np.float32) / 10.0, img.affine)
    base = ["evaluate", "--segmenter", seg, "--labels", fx["labels"]]
    res = run_cli([*base, "--pred", mr, "--ref", mr, "--modality", "mr", "--out", tmp_path / "r1"], capsys, monkeypatch)
    assert res.code != 0 and "trained on CT images, but these are MR" in " ".join(res.err.split())
    lab = np.asarray(nib.load(str(fx["labels"])).dataobj).astype(np.int16)
    other = _nii(tmp_path / "other.nii.gz", np.where(lab > 0, 99, 0).astype(np.int16), img.affine)  # ids it never saw
    res = run_cli(["evaluate", "--segmenter", seg, "--labels", other, "--pred", fx["ct"], "--ref", fx["ct"], "--out",
                   tmp_path / "r2"], capsys, monkeypatch)
    assert res.code != 0 and "never predicts" in " ".join(res.err.split()), res.err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_evaluate_says_which_references_it_does_not_score(fx, tmp_path, capsys, monkeypatch):
    import shutil

    refs, preds = tmp_path / "refs", tmp_path / "preds"
    refs.mkdir()
    preds.mkdir()
    for n in ("s1", "s2", "s3"):
        shutil.copy(fx["ct"], refs / f"{n}.nii.gz")
    shutil.copy(fx["ct"], preds / "s2.nii.gz")
    res = run_cli(["evaluate", "--pred", preds, "--ref", refs, "--out", tmp_path / "r"], capsys, monkeypatch)
    assert res.code == 0, res.err
    text = " ".join(res.err.split())
    assert "2 of 3 reference subject(s) have no prediction" in text and "s1, s3" in text
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["subjects"] == 1

"""Option and input validation (issue #11): one `error:` line naming the option or file, exit != 0, no traceback, no output.

Covers the randomised-prior amplitudes of ``simulate``, the one seed rule of every command, ``train`` numbers,
model folders whose config.json does not describe their weights, truncated shards / manifests without their
config block, and ``evaluate`` inputs that are not images of the modality (plus the MS-SSIM note).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_cli

from seg2med import api
from seg2med.checks import check_int, check_non_negative, check_positive, check_seed
from seg2med.data import PrepareConfig, prepare_dataset
from seg2med.data.synthetic import phantom_subjects
from seg2med.errors import ConfigError

SHIPPED = Path(api.__file__).parent / "resources" / "models" / "ct-demo-tiny"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test of this module runs with one torch thread (conftest.one_thread)."""


def _files(*roots: Path) -> set[Path]:
    return {p for r in roots if r.exists() for p in r.rglob("*")}


def _one_error_line(res, *needles: str) -> str:
    """Exit != 0, no traceback, exactly one `error:` line (the last one) holding every needle."""
    assert res.code != 0, res
    assert "Traceback" not in res.err and "Traceback" not in res.out
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _refused(args: list, capsys, monkeypatch, *needles: str, watch: tuple[Path, ...] = ()) -> str:
    """Run the CLI and check the one-line error, and that nothing appeared under the ``watch`` folders."""
    before = _files(*watch)
    line = _one_error_line(run_cli(args, capsys, monkeypatch), *needles)
    assert _files(*watch) == before, sorted(map(str, _files(*watch) - before))
    return line


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "l.nii.gz"
    api.save_label_volume(api.make_phantom(seed=0, size=64, slices=8), path)
    return path


@pytest.fixture(scope="module")
def ct_pair(tmp_path_factory, labels) -> dict[str, Path]:
    """Two noisy CT priors of the 64 x 64 x 8 phantom (HU), a CT scaled to [0, 1] and to [0, 255], an MR prior."""
    d = tmp_path_factory.mktemp("images")
    out = {}
    for name, seq, noise, seed in (("ct", "ct", 10.0, 1), ("ct2", "ct", 10.0, 2), ("mr", "vibe-in", 0.02, 1)):
        out[name] = api.save_prior(api.simulate_prior(labels, seq, noise=noise, seed=seed), d / f"{name}.nii.gz")
    img = nib.load(str(out["ct"]))
    unit = np.clip((np.asarray(img.dataobj) + 1000.0) / 2000.0, 0, 1)
    for name, arr in (("ct01", unit.astype(np.float32)), ("ct255", (unit * 255).astype(np.uint8))):
        out[name] = d / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, img.affine), str(out[name]))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """4 phantom subjects with labels (2 train, 1 val, 1 test), 32 x 32 axial slices."""
    root = tmp_path_factory.mktemp("ds") / "ds"
    cfg = PrepareConfig(modality="ct", spacing=8.0, size=32, split=(0.5, 0.25, 0.25), sequence={"name": "ct"}, scheme="total")
    prepare_dataset(phantom_subjects(4, labels=True), root, cfg)
    return root


# --------------------------------------------------------------------------- shared checks
def test_checks_module_rules():
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1 and check_seed(np.int64(7)) == 7
    for bad in (-1, 2**32, 2**64, 1.5, True, "3", None):
        with pytest.raises(ConfigError, match=r"--seed must be an integer in \[0, 2\*\*32\)"):
            check_seed(bad)
    assert check_positive(1e-3, "lr") == 1e-3 and check_non_negative(0, "noise") == 0.0
    for bad in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(ConfigError, match="lr must be a finite number > 0"):
            check_positive(bad, "lr")
    assert check_int(8.0, "batch") == 8
    with pytest.raises(ConfigError, match="batch must be an integer >= 1, got 2.5"):
        check_int(2.5, "batch")


# --------------------------------------------------------------------------- 1. simulate amplitudes
@pytest.mark.parametrize("option,value", [("--noise", "-1"), ("--blur", "-2"), ("--bias-field", "-5"),
                                          ("--tissue-spread", "-3"), ("--noise", "nan"), ("--blur", "inf"),
                                          ("--bias-field", "nan"), ("--tissue-spread", "-inf")])
def test_simulate_refuses_negative_or_non_finite_amplitudes(labels, tmp_path, capsys, monkeypatch, option, value):
    out = tmp_path / "p.nii.gz"
    line = _refused(["simulate", "--labels", labels, "--out", out, option, value], capsys, monkeypatch,
                    f"{option} must be a finite number >= 0", watch=(tmp_path,))
    assert value.lstrip("-") in line.lower()
    assert not out.exists()


# --------------------------------------------------------------------------- 2. one seed rule
@pytest.mark.parametrize("seed", ["-1", "-7", str(2**32), str(2**64)])
def test_every_command_refuses_a_seed_outside_0_to_2_32(labels, ct_pair, dataset, tmp_path, capsys, monkeypatch, seed):
    out = tmp_path / "out"
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    shutil.copy(ct_pair["ct"], img / "s0.nii.gz")
    shutil.copy(labels, lab / "s0.nii.gz")
    commands = {
        "simulate": ["simulate", "--labels", labels, "--out", out / "p.nii.gz", "--noise", "5"],
        "phantom": ["phantom", "--out", out / "ph.nii.gz", "--size", "64", "--slices", "8"],
        "prepare": ["prepare", "--images", img, "--labels", lab, "--out", out / "ds", "--spacing", "8", "--size", "32"],
        "generate": ["generate", "--labels", labels, "--out", out / "g.nii.gz", "--model", "ct-demo-tiny", "--steps", "2"],
        "demo": ["demo", "--out", out / "demo", "--priors-only"],
        "train": ["train", "--data", dataset, "--out", out / "run", "--preset", "tiny", "--steps", "1"],
        "train-segmenter": ["train-segmenter", "--data", dataset, "--out", out / "seg", "--steps", "1"],
        "benchmark": ["benchmark", "--data", dataset, "--out", out / "bench", "--methods", "prior"],
    }
    for name, args in commands.items():
        line = _refused([*args, "--seed", seed], capsys, monkeypatch, "seed must be an integer in [0, 2**32)",
                        f"got {seed}", watch=(tmp_path, dataset))
        assert ("training: seed" in line) == (name in ("train", "train-segmenter")), (name, line)
        assert not out.exists(), name
    config = tmp_path / "train.yaml"
    config.write_text(f"training:\n  seed: {seed}\n")
    _refused(["train", "--data", dataset, "--out", out / "run", "--config", config], capsys, monkeypatch,
             f"{config}: training: seed must be an integer", watch=(tmp_path, dataset))


def test_typed_api_applies_the_seed_rule(labels):
    with pytest.raises(ConfigError, match=r"--seed must be an integer in \[0, 2\*\*32\)"):
        api.make_phantom(seed=-7, size=32, slices=2)
    with pytest.raises(ConfigError, match="--seed"):
        api.simulate_prior(labels, "ct", seed=2**32)
    assert api.simulate_prior(labels, "ct", noise=5.0, seed=2**32 - 1).metadata["seed"] == 2**32 - 1


# --------------------------------------------------------------------------- 3. train numbers
@pytest.mark.parametrize("option,value,field,rule", [
    ("--lr", "nan", "lr", "a finite number > 0"), ("--lr", "inf", "lr", "a finite number > 0"),
    ("--lr", "0", "lr", "a finite number > 0"), ("--lr", "-1", "lr", "a finite number > 0"),
    ("--steps", "0", "steps", "an integer >= 1"), ("--steps", "-1", "steps", "an integer >= 1"),
    ("--batch", "0", "batch", "an integer >= 1"),
])
def test_train_refuses_bad_numbers_before_any_work(dataset, tmp_path, capsys, monkeypatch, option, value, field, rule):
    for cmd in ("train", "train-segmenter"):
        out = tmp_path / cmd
        # --steps 1 first: on a value that slips through, the run stays short (a repeated option: the last one wins)
        _refused([cmd, "--data", dataset, "--out", out, "--steps", "1", option, value], capsys, monkeypatch,
                 f"training: {field} must be {rule}, got {value}", watch=(tmp_path, dataset))
        assert not out.exists()


# --------------------------------------------------------------------------- 4. model folders
def _model_copy(tmp_path: Path, name: str, edit=None, weights: bytes | None = None) -> Path:
    run = tmp_path / name
    shutil.copytree(SHIPPED, run)
    if edit is not None:
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(edit(cfg)))
    if weights is not None:
        (run / "ema.safetensors").write_bytes(weights)
    return run


def _set(block: str, key: str, value):
    def edit(cfg):
        if value is _DELETE:
            del cfg[block][key]
        else:
            cfg[block][key] = value
        return cfg
    return edit


_DELETE = object()


@pytest.mark.parametrize("name,edit,needles", [
    ("other-preset", lambda c: {**c, "model": {**c["model"], "channels": [8, 16, 32, 32], "norm_num_groups": 8}},
     ("ema.safetensors", "weights do not match the model in config.json", "conv_in.conv.weight is [16, 2, 3, 3]")),
    ("other-channels", _set("model", "neighbours", 1),
     ("ema.safetensors", "weights do not match the model", "[16, 4, 3, 3] for the config")),
    ("timesteps-0", _set("scheduler", "num_train_timesteps", 0),
     ("config.json", "scheduler.num_train_timesteps must be an integer >= 1, got 0")),
    ("timesteps-negative", _set("scheduler", "num_train_timesteps", -5), ("config.json", "got -5")),
    ("timesteps-float", _set("scheduler", "num_train_timesteps", 2.5), ("config.json", "got 2.5")),
    ("timesteps-missing", _set("scheduler", "num_train_timesteps", _DELETE),
     ("config.json", "scheduler.num_train_timesteps is missing")),
    ("model-string", lambda c: {**c, "model": "tiny"}, ("config.json", "'model' must be a JSON object, not a string")),
    ("config-array", lambda c: [c], ("config.json", "not a seg2med checkpoint config (it holds an array, not a JSON object)")),
])
def test_generate_refuses_a_model_folder_whose_config_does_not_describe_its_weights(
        labels, tmp_path, capsys, monkeypatch, name, edit, needles):
    run = _model_copy(tmp_path, name, edit)
    out = tmp_path / "g.nii.gz"
    _refused(["generate", "--labels", labels, "--out", out, "--model", run, "--steps", "2"], capsys, monkeypatch,
             str(run), *needles, watch=(tmp_path,))
    assert not out.exists()


@pytest.mark.parametrize("cut", ["truncated", "garbage"])
def test_generate_refuses_corrupt_safetensors(labels, tmp_path, capsys, monkeypatch, cut):
    data = (SHIPPED / "ema.safetensors").read_bytes()
    run = _model_copy(tmp_path, cut, weights=data[: len(data) // 2] if cut == "truncated" else b"\xff" * 8 + data[8:])
    out = tmp_path / "g.nii.gz"
    _refused(["generate", "--labels", labels, "--out", out, "--model", run, "--steps", "2"], capsys, monkeypatch,
             f"{run / 'ema.safetensors'}: corrupt or unreadable safetensors file", watch=(tmp_path,))


# --------------------------------------------------------------------------- 5. datasets
def _broken_copy(dataset: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    ds = tmp_path / f"ds-{how}"
    shutil.copytree(dataset, ds)
    manifest = json.loads((ds / "manifest.json").read_text())
    if how == "truncated-shard":
        for f in ds.glob("*.npz"):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        return ds, "truncated or corrupt shard"
    del manifest["config"]
    (ds / "manifest.json").write_text(json.dumps(manifest))
    return ds, f"{ds / 'manifest.json'}: no 'config' block"


@pytest.mark.parametrize("how", ["truncated-shard", "no-config"])
def test_train_segmenter_and_benchmark_refuse_a_broken_dataset(dataset, tmp_path, capsys, monkeypatch, how):
    ds, needle = _broken_copy(dataset, tmp_path, how)
    for args in (["train", "--preset", "tiny", "--steps", "1", "--val-every", "0"], ["train", "--method", "prior"],
                 ["train-segmenter", "--steps", "1"], ["benchmark", "--methods", "prior"]):
        out = tmp_path / "out"
        line = _refused([*args, "--data", ds, "--out", out], capsys, monkeypatch, needle, watch=(tmp_path,))
        assert str(ds) in line
        assert not out.exists(), args


def test_benchmark_refuses_a_dataset_without_a_label_scheme(dataset, tmp_path, capsys, monkeypatch):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["config"]["scheme"] = None
    (ds / "manifest.json").write_text(json.dumps(manifest))
    _refused(["benchmark", "--data", ds, "--out", tmp_path / "b", "--methods", "prior"], capsys, monkeypatch,
             f"{ds / 'manifest.json'}: config.scheme is empty", watch=(tmp_path,))


# --------------------------------------------------------------------------- 6. evaluate
def test_evaluate_refuses_a_label_map_as_pred_or_ref(labels, ct_pair, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rep"
    for pred, ref, option, bad in ((labels, ct_pair["ct"], "--pred", labels), (ct_pair["ct"], labels, "--ref", labels)):
        _refused(["evaluate", "--pred", pred, "--ref", ref, "--out", out], capsys, monkeypatch,
                 f"{bad}: {option} is a label map", watch=(tmp_path, labels.parent, ct_pair["ct"].parent))
        assert not out.exists()


@pytest.mark.parametrize("pred,ref,modality,needles", [
    ("ct01", "ct", "auto", ("ct01.nii.gz: --pred values lie in [0, ", "not CT Hounsfield units",
                            "--modality auto: CT from the minimum")),
    ("ct255", "ct", "ct", ("ct255.nii.gz: --pred values lie in [0, ", "not CT", "(--modality ct)")),
    ("ct", "mr", "mr", ("ct.nii.gz: --pred values lie in [-10", "CT air, not MR", "(--modality mr)")),
    ("mr", "mr", "ct", ("mr.nii.gz: --ref values lie in", "not CT Hounsfield units", "(--modality ct)")),
    ("mr", "ct", "auto", ("ct.nii.gz: --ref values lie in", "CT air, not MR", "mr.json says MR")),
])
def test_evaluate_refuses_intensities_that_do_not_fit_the_modality(ct_pair, tmp_path, capsys, monkeypatch,
                                                                   pred, ref, modality, needles):
    out = tmp_path / "rep"
    _refused(["evaluate", "--pred", ct_pair[pred], "--ref", ct_pair[ref], "--out", out, "--modality", modality],
             capsys, monkeypatch, *needles, watch=(tmp_path, ct_pair["ct"].parent))
    assert not out.exists()


def test_evaluate_says_why_ms_ssim_is_nan_on_small_slices(ct_pair, tmp_path, capsys, monkeypatch):
    from seg2med.evaluation.core import MS_SSIM_WINDOW
    from seg2med.metrics import ms_ssim_min_size

    out = tmp_path / "rep"
    res = run_cli(["evaluate", "--pred", ct_pair["ct2"], "--ref", ct_pair["ct"], "--out", out], capsys, monkeypatch)
    assert res.code == 0, res.err
    need = ms_ssim_min_size(MS_SSIM_WINDOW["kernel_size"], 5)
    assert need == 80  # MONAI: side // 16 > kernel_size - 1 (5 x 5 window)
    note = (f"MS-SSIM not computed (NaN): slices of 64 x 64 px are smaller than the {need} px its 5 scales with a "
            f"5 x 5 window need")
    summary = json.loads((out / "summary.json").read_text())
    assert any(n.startswith(note) for n in summary["notes"]), summary["notes"]
    assert note in (out / "report.html").read_text()
    assert summary["methods"]["ct2"]["ms_ssim"]["n"] == 0  # NaN kept in the numbers
    assert summary["methods"]["ct2"]["ssim"]["n"] == 1


# --------------------------------------------------------------------------- 7. randomised-prior bounds (QA sweep)
@pytest.mark.parametrize("args,needle", [
    (["--bias-field", "1e10"], "--bias-field must be <= 1 (the range of the bias polynomial's coefficients), got 10000000000.0"),
    (["--noise", "1e30"], "--noise must be <= 1000 (the noise sd in HU), got 1e+30"),
    (["--blur", "1e9"], "--blur must be <= 20 (the Gaussian sigma in mm), got 1000000000.0"),
    (["--tissue-spread", "1e10"], "--tissue-spread must be <= 3 (a multiple of each tissue's spread)"),
    (["--sequence", "vibe-in", "--noise", "2"], "--noise must be <= 1 (the noise sd as a fraction of the image range), got 2.0"),
])
def test_simulate_refuses_amplitudes_beyond_their_bound(labels, tmp_path, capsys, monkeypatch, args, needle):
    out = tmp_path / "p.nii.gz"
    _refused(["simulate", "--labels", labels, "--out", out, *args], capsys, monkeypatch, needle, watch=(tmp_path,))
    assert not out.exists()


def test_simulate_writes_a_finite_prior_at_the_bounds_and_refuses_just_beyond(labels, tmp_path, capsys, monkeypatch):
    for seq, noise in (("ct", 1000.0), ("vibe-in", 1.0)):
        out = tmp_path / f"{seq}.nii.gz"
        at = {"--bias-field": 1.0, "--blur": 20.0, "--tissue-spread": 3.0, "--noise": noise}
        args = ["simulate", "--labels", labels, "--out", out, "--sequence", seq, "--seed", "3"]
        res = run_cli([*args, *(str(x) for kv in at.items() for x in kv)], capsys, monkeypatch)
        assert res.code == 0, res.err
        assert "RuntimeWarning" not in res.err
        assert np.isfinite(np.asarray(nib.load(str(out)).dataobj)).all()
        for option, bound in at.items():
            _refused([*args, "--overwrite", option, str(bound * 1.01)], capsys, monkeypatch,
                     f"{option} must be <= {bound:g} (", watch=(tmp_path,))


def test_random_prior_bounds_and_never_returns_non_finite_values():
    from seg2med.labels.tissues import load_default_tissue_table
    from seg2med.physics import PriorParams, RandomPrior
    from seg2med.physics.prior import table_field
    from seg2med.physics.randomize import MAX_BLUR_MM, MAX_NOISE

    with pytest.raises(ConfigError, match=r"^RandomPrior: blur must be <= 20 \(the Gaussian sigma in mm\), got 21.0$"):
        RandomPrior("ct", blur=21)
    with pytest.raises(ConfigError, match="RandomPrior: noise must be <= 1 "):
        RandomPrior("vibe-in", noise=1.5)
    assert RandomPrior("ct", noise=1.5).noise == 1.5 and (MAX_BLUR_MM, MAX_NOISE) == (20.0, {"ct": 1000.0, "mr": 1.0})
    lv = api.make_phantom(seed=0, size=32, slices=4)
    labels, scheme = lv.volume.array, lv.scheme
    rp = RandomPrior("ct", seed=0)
    with pytest.raises(ConfigError, match=r"PriorParams: \|bias_coefficients\| must be <= 1 .*got 50.0"):
        rp.apply(PriorParams(bias_coefficients=np.full(20, 50.0)), labels, scheme)
    with pytest.raises(ConfigError, match="PriorParams: blur_mm must be <= 20"):
        rp.apply(PriorParams(blur_mm=1e9), labels, scheme)
    size = load_default_tissue_table().arrays(scheme, table_field(rp.sequence))["hu"].shape[0]  # one jitter per label id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either: refused, quietly
        with pytest.raises(ConfigError, match=r"^RandomPrior: the prior has \d+ NaN/inf voxel\(s\)"):
            rp.apply(PriorParams(jitter={"hu": np.full(size, 3e38)}, bias_coefficients=np.full(20, 1.0)), labels, scheme)


# --------------------------------------------------------------------------- 8. train configs (QA sweep)
@pytest.mark.parametrize("yaml_text,needle", [
    ("scheduler: {beta_end: 1.5}", "scheduler: beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1, got "
                                   "beta_start=0.0001, beta_end=1.5"),
    ("scheduler: {beta_start: 0.05}", "scheduler: beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1, got "
                                      "beta_start=0.05, beta_end=0.02"),
    ("scheduler: {beta_start: 0}", "scheduler: beta_start must be a finite number > 0, got 0"),
    ("scheduler: {num_train_timesteps: 0}", "scheduler: num_train_timesteps must be an integer >= 1, got 0"),
    ("scheduler: {num_train_timesteps: 2.5}", "scheduler: num_train_timesteps must be an integer >= 1, got 2.5"),
    ("scheduler: {clip_sample: maybe}", "scheduler: clip_sample must be true or false, got 'maybe'"),
    ("model: {channels: 16}", "model: channels must be a list of positive integers, one per level, got 16"),
    ("model: {channels: [16, 0, 64, 64]}", "model: channels must be a list of positive integers, one per level, got [16, 0, 64, 64]"),
    ("model: {attention_levels: [0, 0, 0, 1]}", "model: attention_levels must be a list of true/false flags, one per level"),
    ("model: {num_res_blocks: 0}", "model: num_res_blocks must be an integer >= 1, got 0"),
    ("model: {norm_num_groups: 0}", "model: norm_num_groups must be an integer >= 1, got 0"),
    ("model: {num_head_channels: 48}", "model: the channel counts (128, 128) of the attention levels and the last level "
                                       "must be divisible by num_head_channels=48"),
    ("model: {neighbours: 1.5}", "model: neighbours must be an integer >= 0, got 1.5"),
])
def test_train_refuses_a_bad_config_file_before_touching_the_run_folder(dataset, tmp_path, capsys, monkeypatch,
                                                                        yaml_text, needle):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text + "\n")
    out = tmp_path / "run"
    _refused(["train", "--data", dataset, "--out", out, "--steps", "1", "--batch", "2", "--config", config],
             capsys, monkeypatch, f"{config}: {needle}", watch=(tmp_path, dataset))
    assert not out.exists()


def test_train_checks_configs_again_before_the_run_folder(dataset, tmp_path):
    """The typed API takes (mutable) config objects: a value changed after construction is refused up front."""
    from seg2med.models.config import ModelConfig, SchedulerConfig
    from seg2med.training import TrainConfig, train

    sched = SchedulerConfig()
    sched.num_train_timesteps = 0  # was: RuntimeError in the first step, after log.csv was written
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^scheduler: num_train_timesteps must be an integer >= 1, got 0$"):
        train(dataset, out, ModelConfig.from_preset("tiny"), sched, TrainConfig(steps=1, batch=2, val_every=0), progress=False)
    assert not out.exists()


def test_prior_method_checks_its_model_block(dataset, tmp_path, capsys, monkeypatch):
    for text, needle in (("model: {neighbours: abc}", "model: neighbours must be an integer >= 0, got 'abc'"),
                         ("model: {channels: [8]}", "model config of prior: unknown keys ['channels']")):
        config = tmp_path / "c.yaml"
        config.write_text(text + "\n")
        _refused(["train", "--method", "prior", "--data", dataset, "--out", tmp_path / "run", "--config", config],
                 capsys, monkeypatch, f"{config}: {needle}", watch=(tmp_path, dataset))


def test_train_config_file_is_checked_against_the_chosen_preset(dataset, tmp_path, capsys, monkeypatch):
    from seg2med.models.config import ModelConfig
    from seg2med.training import read_config_file

    config = tmp_path / "c.yaml"
    config.write_text("model: {channels: [16, 32, 64, 64]}\n")
    assert read_config_file(config, preset="tiny") == {"model": {"channels": [16, 32, 64, 64]}}
    base = {"method": "ddpm", "model": ModelConfig.from_preset("tiny").to_dict(), "scheduler": {}, "training": {"config": {}}}
    assert read_config_file(config, base=base)["model"]["channels"] == [16, 32, 64, 64]  # resume: the run's preset
    with pytest.raises(ConfigError, match="must be divisible by norm_num_groups=32"):
        read_config_file(config, preset="small")
    out = tmp_path / "run"
    res = run_cli(["train", "--data", dataset, "--out", out, "--preset", "tiny", "--steps", "1", "--batch", "2",
                   "--val-every", "0", "--config", config], capsys, monkeypatch)
    assert res.code == 0, res.err
    model = json.loads((out / "config.json").read_text())["model"]
    assert (model["preset"], model["channels"], model["norm_num_groups"]) == ("tiny", [16, 32, 64, 64], 16)


# --------------------------------------------------------------------------- 9. benchmark options (QA sweep)
def test_benchmark_refuses_an_unknown_preset_for_every_method(dataset, tmp_path, capsys, monkeypatch):
    from seg2med.evaluation.benchmark import BenchmarkConfig

    with pytest.raises(ConfigError, match=r"^--preset: unknown model preset 'huge' \(known: paper, small, tiny\)$"):
        BenchmarkConfig(methods=("prior",), preset="huge")
    out = tmp_path / "b"
    _refused(["benchmark", "--data", dataset, "--out", out, "--methods", "prior", "--preset", "huge"], capsys, monkeypatch,
             "--preset: unknown model preset 'huge'", watch=(tmp_path, dataset))
    assert not out.exists()


def test_benchmark_checks_the_segmenter_and_fid_weights_before_any_work(dataset, tmp_path, capsys, monkeypatch):
    bad_weights = tmp_path / "w.pth"
    bad_weights.write_text("not weights\n")
    out = tmp_path / "b"
    for option, value, needle in (("--segmenter", tmp_path / "nope", f"{tmp_path / 'nope'}: checkpoint folder not found"),
                                  ("--segmenter", SHIPPED, f"{SHIPPED}: not a segmenter run (method 'ddpm'"),
                                  ("--fid-weights", bad_weights, f"{bad_weights}: not a readable PyTorch weights file")):
        _refused(["benchmark", "--data", dataset, "--out", out, "--methods", "prior", option, value], capsys, monkeypatch,
                 needle, watch=(tmp_path, dataset, SHIPPED))
        assert not out.exists(), option

"""--overwrite never loses a user's data: it replaces only what seg2med wrote, never an input, and
sets of outputs (image + sidecar + samples) are replaced atomically, as a whole."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_cli

from seg2med.io.outputs import FOLDER_MARKER, atomic_outputs, written_by_seg2med


def _clean_error(res, *needles: str) -> None:
    assert res.code != 0, res.err
    assert "Traceback" not in res.err + res.out
    errors = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.err  # warnings may come before it
    for n in needles:
        assert n in " ".join(res.err.split()), (n, res.err)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> dict[str, Path]:
    """A tiny phantom: labels, its CT prior (the 'image') and a noisy copy (a 'prediction')."""
    import seg2med

    d = tmp_path_factory.mktemp("subject")
    lv = seg2med.make_phantom(seed=1, spacing=8.0, slices=6, size=32)
    seg2med.save_label_volume(lv, d / "canonical.nii.gz")
    nib.save(nib.Nifti1Image(lv.volume.array.astype(np.int16), lv.volume.affine), str(d / "labels.nii.gz"))  # as TotalSegmentator
    prior = seg2med.simulate_prior(lv, "ct")
    img = d / "ct.nii.gz"
    nib.save(nib.Nifti1Image(prior.volume.array, prior.volume.affine), str(img))
    noisy = prior.volume.array + np.random.default_rng(0).normal(0, 30, prior.volume.shape).astype(np.float32)
    pred = d / "pred.nii.gz"
    nib.save(nib.Nifti1Image(noisy, prior.volume.affine), str(pred))
    return {"labels": d / "labels.nii.gz", "canonical": d / "canonical.nii.gz", "image": img, "pred": pred}


def _prepare(subject, out: Path, capsys, monkeypatch, *extra):
    return run_cli(["prepare", "--images", subject["image"], "--labels", subject["labels"], "--out", out,
                    "--size", "32", "--spacing", "8", *extra], capsys, monkeypatch)


# --------------------------------------------------------------------------- folders
def test_prepare_overwrite_refuses_a_users_folder_and_keeps_every_file(subject, tmp_path, capsys, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.docx").write_bytes(b"years of work")
    (user / "manifest.json").write_text('{"my": "own manifest"}')
    before = _snapshot(user)
    _clean_error(_prepare(subject, user, capsys, monkeypatch, "--overwrite"), "mine", "seg2med did not write")
    assert _snapshot(user) == before


def test_prepare_overwrite_replaces_its_own_dataset_but_not_one_holding_a_users_file(subject, tmp_path, capsys, monkeypatch):
    ds = tmp_path / "ds"
    assert _prepare(subject, ds, capsys, monkeypatch).code == 0
    assert json.loads((ds / FOLDER_MARKER).read_text())["kind"] == "seg2med-dataset"
    res = _prepare(subject, ds, capsys, monkeypatch, "--overwrite")
    assert res.code == 0, res.err  # its own dataset it replaces
    (ds / "notes.txt").write_text("mine")
    before = _snapshot(ds)
    _clean_error(_prepare(subject, ds, capsys, monkeypatch, "--overwrite"), "notes.txt", "seg2med did not write")
    assert _snapshot(ds) == before


def test_prepare_never_deletes_its_own_inputs(subject, tmp_path, capsys, monkeypatch):
    ds = tmp_path / "ds"
    assert _prepare(subject, ds, capsys, monkeypatch).code == 0
    # the user's labels now live inside the (seg2med) dataset folder and are read from there
    inside = ds / "labels_in_ds.nii.gz"
    inside.write_bytes(subject["labels"].read_bytes())
    marker = json.loads((ds / FOLDER_MARKER).read_text())  # even when the marker were to list it
    marker["entries"].append(inside.name)
    (ds / FOLDER_MARKER).write_text(json.dumps(marker))
    res = run_cli(["prepare", "--images", subject["image"], "--labels", inside, "--out", ds, "--size", "32",
                   "--spacing", "8", "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "an input of this command")
    assert inside.read_bytes() == subject["labels"].read_bytes()


def test_prepare_into_the_current_folder_is_one_line(subject, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _clean_error(_prepare(subject, Path("."), capsys, monkeypatch), "current folder")
    assert list(work.iterdir()) == []
    (work / "data.txt").write_text("x")
    _clean_error(_prepare(subject, Path("."), capsys, monkeypatch, "--overwrite"), "current folder")
    assert (work / "data.txt").read_text() == "x"


def test_evaluate_overwrite_keeps_a_prediction_inside_the_report_folder(subject, tmp_path, capsys, monkeypatch):
    rep = tmp_path / "report"
    args = ["evaluate", "--ref", subject["image"], "--labels", subject["labels"], "--out", rep]
    res = run_cli([*args[:1], "--pred", subject["pred"], *args[1:]], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert json.loads((rep / "summary.json").read_text())["kind"] == "seg2med-evaluation"
    assert run_cli([*args[:1], "--pred", subject["pred"], *args[1:], "--overwrite"], capsys, monkeypatch).code == 0
    pred_inside = rep / "pred.nii.gz"
    pred_inside.write_bytes(subject["pred"].read_bytes())
    before = _snapshot(rep)
    res = run_cli([*args[:1], "--pred", pred_inside, *args[1:], "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "an input of this command")
    assert _snapshot(rep) == before
    user = tmp_path / "results"
    user.mkdir()
    (user / "table.csv").write_text("a,b\n")
    res = run_cli([*args[:1], "--pred", subject["pred"], *args[1:-1], user, "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "seg2med did not write")
    assert (user / "table.csv").read_text() == "a,b\n"


def test_train_overwrite_replaces_only_a_seg2med_run_and_keeps_user_files(subject, tmp_path, capsys, monkeypatch):
    ds = tmp_path / "ds"
    assert _prepare(subject, ds, capsys, monkeypatch).code == 0
    user = tmp_path / "folder"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}')
    (user / "log.csv").write_text("my,log\n")
    before = _snapshot(user)
    res = run_cli(["train", "--method", "prior", "--data", ds, "--out", user, "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "not a seg2med run")
    assert _snapshot(user) == before
    run = tmp_path / "run"
    assert run_cli(["train", "--method", "prior", "--data", ds, "--out", run], capsys, monkeypatch).code == 0
    (run / "my_notes.md").write_text("keep me")
    res = run_cli(["train", "--method", "prior", "--data", ds, "--out", run, "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert (run / "my_notes.md").read_text() == "keep me"  # only the run's own items were replaced
    res = run_cli(["train", "--method", "prior", "--data", ds, "--out", ds / "run"], capsys, monkeypatch)
    _clean_error(res, "may not hold one another")


# --------------------------------------------------------------------------- files
def test_demo_overwrite_never_replaces_its_input_or_a_users_file(subject, tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    labels = out / "labels.nii.gz"  # the user's label map, named like the demo's own output
    labels.write_bytes(subject["labels"].read_bytes())
    before = _snapshot(out)
    res = run_cli(["demo", "--out", out, "--labels", labels, "--priors-only", "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "labels.nii.gz", "an input of this command")
    assert _snapshot(out) == before
    other = tmp_path / "demo2"
    other.mkdir()
    (other / "preview_ct.png").write_bytes(b"\x89PNG my own figure")
    res = run_cli(["demo", "--out", other, "--priors-only", "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "preview_ct.png", "not written by seg2med")
    assert (other / "preview_ct.png").read_bytes() == b"\x89PNG my own figure"
    assert sorted(p.name for p in other.iterdir()) == ["preview_ct.png"]  # nothing else was started
    (other / "preview_ct.png").unlink()
    assert run_cli(["demo", "--out", other, "--priors-only"], capsys, monkeypatch).code == 0
    assert written_by_seg2med(other / "preview_ct.png") and written_by_seg2med(other / "ct_prior.nii.gz")
    assert run_cli(["demo", "--out", other, "--priors-only", "--overwrite"], capsys, monkeypatch).code == 0


def test_generate_overwrite_with_fewer_samples_removes_the_stale_ones(subject, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s.nii.gz"
    base = ["generate", "--labels", subject["labels"], "--out", out, "--model", "ct-demo-tiny", "--steps", "2"]
    assert run_cli([*base, "--samples", "2"], capsys, monkeypatch).code == 0
    assert (tmp_path / "s_sample1.nii.gz").is_file() and (tmp_path / "s_std.nii.gz").is_file()
    (tmp_path / "s_sample7.nii.gz").write_bytes(b"not ours")  # a name like ours, but not listed by the sidecar
    res = run_cli([*base, "--samples", "1", "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.nii.gz", "s_sample7.nii.gz"]
    assert json.loads((tmp_path / "s.json").read_text())["files"] == ["s.nii.gz"]
    assert (tmp_path / "s_sample7.nii.gz").read_bytes() == b"not ours"


def test_a_sidecar_name_taken_by_a_folder_is_refused_before_any_work(subject, tmp_path, capsys, monkeypatch):
    (tmp_path / "p.json").mkdir()
    res = run_cli(["simulate", "--labels", subject["labels"], "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch)
    _clean_error(res, "p.json", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_a_failing_sidecar_write_leaves_the_previous_pair_and_a_rerun_works(subject, tmp_path, capsys, monkeypatch):
    import seg2med.api as api

    out = tmp_path / "p.nii.gz"
    args = ["simulate", "--labels", subject["labels"], "--out", out, "--sequence", "ct"]
    assert run_cli(args, capsys, monkeypatch).code == 0
    before = _snapshot(tmp_path)
    real = api.write_json

    def disk_full(path, obj, overwrite=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(api, "write_json", disk_full)
    res = run_cli([*args[:-1], "flair", "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "p.json: No space left on device")
    assert _snapshot(tmp_path) == before  # the old image AND the old sidecar, no temporary files
    monkeypatch.setattr(api, "write_json", real)
    res = run_cli([*args[:-1], "flair", "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "p.json").read_text())["sequence"]["name"] == "flair"


def test_atomic_outputs_puts_the_old_set_back_when_a_move_fails(tmp_path, monkeypatch):
    import os

    import seg2med.io.outputs as outputs

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"kind": "seg2med-x", "v": 1}')
    b.write_text('{"kind": "seg2med-x", "v": 1}')
    real = os.rename
    calls = {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if Path(dst) == b and calls["n"] < 5:  # the second file of the set cannot be moved in (once)
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "rename", flaky)
    with pytest.raises(OSError), atomic_outputs([a, b], overwrite=True) as (ta, tb):
        ta.write_text('{"kind": "seg2med-x", "v": 2}')
        tb.write_text('{"kind": "seg2med-x", "v": 2}')
    assert json.loads(a.read_text())["v"] == 1 and json.loads(b.read_text())["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_interrupt_exits_130_with_one_line_and_no_partial_output(subject, tmp_path, capsys, monkeypatch):
    import seg2med.api as api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "save_volume", interrupted)
    res = run_cli(["simulate", "--labels", subject["labels"], "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch)
    assert res.code == 130
    _clean_error(res, "interrupted")
    assert list(tmp_path.iterdir()) == []


def test_written_by_seg2med_tells_its_own_files(subject, tmp_path):
    assert written_by_seg2med(subject["canonical"])  # NIfTI descrip + its seg2med label table
    assert not written_by_seg2med(subject["labels"]) and not written_by_seg2med(subject["image"])  # nibabel's
    (tmp_path / "x.json").write_text('{"kind": "other"}')
    assert not written_by_seg2med(tmp_path / "x.json")
    assert nib.load(str(subject["canonical"])).header["descrip"].tobytes().startswith(b"seg2med")


def test_an_unwritable_output_folder_is_refused_before_sampling(subject, tmp_path, capsys, monkeypatch):
    import os

    import seg2med.inference as inference
    import seg2med.io.outputs as outputs

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(outputs.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    sampled = []
    monkeypatch.setattr(inference, "generate_volume", lambda *a, **k: sampled.append(1))
    res = run_cli(["generate", "--labels", subject["labels"], "--out", locked / "s.nii.gz", "--model", "ct-demo-tiny"],
                  capsys, monkeypatch)
    _clean_error(res, "locked", "not writable")
    assert sampled == [] and list(locked.iterdir()) == []
    res = run_cli(["prepare", "--images", subject["image"], "--labels", subject["labels"], "--out", locked / "ds"],
                  capsys, monkeypatch)
    _clean_error(res, "not writable")
    assert list(locked.iterdir()) == []


def test_a_failed_write_into_new_folders_leaves_no_empty_folders(subject, tmp_path, capsys, monkeypatch):
    import seg2med.api as api

    def disk_full(path, obj, overwrite=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(api, "write_json", disk_full)
    res = run_cli(["simulate", "--labels", subject["labels"], "--out", tmp_path / "new" / "deeper" / "p.nii.gz"],
                  capsys, monkeypatch)
    _clean_error(res, "p.json: No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_an_inputs_sidecar_and_a_stale_sample_that_is_an_input_are_never_touched(subject, tmp_path, capsys, monkeypatch):
    import shutil

    d = tmp_path / "w"
    d.mkdir()
    shutil.copy(subject["canonical"], d / "ph.nii.gz")
    shutil.copy(subject["canonical"].with_name("canonical.json"), d / "ph.json")  # the label table read with it
    before = _snapshot(d)
    for cmd in (["simulate"], ["generate", "--model", "ct-demo-tiny", "--steps", "1"]):
        res = run_cli([*cmd, "--labels", d / "ph.nii.gz", "--out", d / "ph.nii", "--overwrite"], capsys, monkeypatch)
        _clean_error(res, "ph.json", "an input of this command")
        assert _snapshot(d) == before
    # a sample of an earlier run, used as this run's labels, is not removed as stale
    y = tmp_path / "y"
    base = ["generate", "--model", "ct-demo-tiny", "--steps", "1", "--out", y / "out.nii.gz"]
    assert run_cli([*base, "--labels", subject["labels"], "--samples", "3"], capsys, monkeypatch).code == 0
    (y / "out_sample2.nii.gz").write_bytes(subject["labels"].read_bytes())
    res = run_cli([*base, "--labels", y / "out_sample2.nii.gz", "--samples", "1", "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert (y / "out_sample2.nii.gz").read_bytes() == subject["labels"].read_bytes()
    assert not (y / "out_sample1.nii.gz").exists() and not (y / "out_std.nii.gz").exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["simulate", "--foo"], "No such option: --foo"),
    (["phantom", "--seed", "1.5"], "Invalid value for '--seed'"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["labels", "total", "extra"], "unexpected extra argument"),
    (["simulate", "--labels", "x.nii.gz"], "Missing option '--out'"),
])
def test_usage_errors_are_one_error_line_naming_the_help(argv, needle, capsys, monkeypatch):
    res = run_cli(argv, capsys, monkeypatch)
    assert res.code == 2
    _clean_error(res, needle, "--help')")
    assert "╭" not in res.err and "Usage:" not in res.err  # not click's usage block


def test_sigterm_is_one_line_exit_143_and_leaves_nothing(subject, tmp_path, capsys, monkeypatch):
    import os
    import signal

    import seg2med.api as api

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(api, "save_volume", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    res = run_cli(["simulate", "--labels", subject["labels"], "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch)
    assert res.code == 143
    _clean_error(res, "terminated")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # main() restores the handler it installed


def test_ctrl_c_while_the_cli_loads_is_one_line(capsys, monkeypatch):
    import builtins

    from seg2med import _entry

    real = builtins.__import__

    def slow_import(name, *a, **k):
        if name == "seg2med.cli":
            raise KeyboardInterrupt
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", slow_import)
    with pytest.raises(SystemExit) as exc:
        _entry.main()
    assert exc.value.code == 130
    assert capsys.readouterr().err.startswith("error: interrupted")


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_a_real_sigint_at_any_moment_of_start_up_ends_the_run(subject, tmp_path, delay):
    """Ctrl-C while torch / MONAI import: a KeyboardInterrupt raised inside a library's import can be swallowed
    by its ``except:`` (seen under load: generate went on for minutes); the start-up handler exits at once."""
    import signal
    import subprocess
    import sys
    import time

    exe = Path(sys.executable).with_name("seg2med")
    out = tmp_path / "s.nii.gz"
    proc = subprocess.Popen([str(exe), "generate", "--labels", str(subject["labels"]), "--out", str(out), "--model",
                             "ct-demo-tiny", "--steps", "1000", "--samples", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and [ln for ln in err.splitlines() if ln.startswith("error:")][0].startswith("error: interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_real_sigint_during_generate_exits_130_without_partial_files(subject, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    exe = Path(sys.executable).with_name("seg2med")
    out = tmp_path / "s.nii.gz"
    proc = subprocess.Popen([str(exe), "generate", "--labels", str(subject["labels"]), "--out", str(out), "--model",
                             "ct-demo-tiny", "--steps", "1000", "--samples", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")][0].startswith("error: interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_that_a_library_turns_into_its_own_error_still_exits_130_as_interrupted(subject, tmp_path, capsys,
                                                                                          monkeypatch):
    """Seen in CI: SIGINT while safetensors builds the torch storages came back as a TypeError, reported as
    'corrupt or unreadable safetensors file' with exit 2. The signal is remembered, so it is 'interrupted'."""
    import os
    import signal

    import safetensors.torch

    def load_file(path, device="cpu"):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the 'library'
        raise AssertionError("not reached")

    def swallowing(path, device="cpu"):
        try:
            load_file(path, device)
        except KeyboardInterrupt:
            raise TypeError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None

    monkeypatch.setattr(safetensors.torch, "load_file", swallowing)
    before = signal.getsignal(signal.SIGINT)  # Python's handler; SIG_IGN when the suite runs as a background job
    out = tmp_path / "s.nii.gz"
    res = run_cli(["generate", "--labels", subject["labels"], "--out", out, "--model", "ct-demo-tiny", "--steps", "1"],
                  capsys, monkeypatch)
    assert res.code == 130, res.err
    assert res.err.strip().splitlines()[-1].startswith("error: interrupted") and "corrupt" not in res.err
    assert list(tmp_path.iterdir()) == []
    # without a signal the same error is what it says
    monkeypatch.setattr(safetensors.torch, "load_file", lambda path, device="cpu": (_ for _ in ()).throw(
        RuntimeError("bad header")))
    res = run_cli(["generate", "--labels", subject["labels"], "--out", out, "--model", "ct-demo-tiny", "--steps", "1"],
                  capsys, monkeypatch)
    assert res.code == 2 and "corrupt or unreadable safetensors file (bad header)" in res.err
    assert signal.getsignal(signal.SIGINT) is before  # main() put back the handler it found


def test_a_ctrl_c_that_a_library_swallows_still_ends_generate_at_the_next_sampling_step(subject, tmp_path, capsys,
                                                                                        monkeypatch):
    """Lazy imports of torch / MONAI can catch a KeyboardInterrupt and go on (seen: generate kept running for
    minutes after Ctrl-C under load); the sampling loop checks the recorded signal and ends the run."""
    import os
    import signal

    import seg2med.inference.generate as gen_mod

    real_load, real_sample = gen_mod.load_weights_into, gen_mod.sample
    steps_run = []

    def swallowing_load(*a, **k):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # a library's bare except
        return real_load(*a, **k)

    def counting_sample(*a, callback=None, **k):
        return real_sample(*a, callback=lambda i, n: steps_run.append(i), **k)

    monkeypatch.setattr(gen_mod, "load_weights_into", swallowing_load)
    monkeypatch.setattr(gen_mod, "sample", counting_sample)
    res = run_cli(["generate", "--labels", subject["labels"], "--out", tmp_path / "s.nii.gz", "--model",
                   "ct-demo-tiny", "--steps", "50"], capsys, monkeypatch)
    assert res.code == 130, res.err
    assert res.err.strip().splitlines()[-1].startswith("error: interrupted") and steps_run == []
    assert list(tmp_path.iterdir()) == []


def test_a_run_interrupted_before_its_first_checkpoint_can_be_started_again(subject, tmp_path, capsys, monkeypatch):
    import seg2med.training.baselines as baselines

    ds = tmp_path / "ds"
    assert _prepare(subject, ds, capsys, monkeypatch).code == 0
    run = tmp_path / "run"
    args = ["train", "--method", "unet", "--preset", "tiny", "--steps", "2", "--batch", "2", "--data", ds, "--out", run]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(baselines, "optimizer_step", interrupted)  # Ctrl-C in the first step
        res = run_cli(args, capsys, monkeypatch)
    assert res.code == 130 and (run / "log.csv").is_file() and not (run / "config.json").exists()
    _clean_error(run_cli([*args, "--resume"], capsys, monkeypatch), "no checkpoint", "--overwrite")
    res = run_cli([*args, "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert (run / "config.json").is_file()


def test_generate_records_the_tissue_table_it_used(subject, tmp_path, capsys, monkeypatch):
    table = tmp_path / "t.yaml"
    table.write_text("tissues:\n  liver:\n    ct: {hu: 60}\n")
    out = tmp_path / "s.nii.gz"
    args = ["generate", "--labels", subject["labels"], "--model", "ct-demo-tiny", "--steps", "1"]
    assert run_cli([*args, "--out", out, "--tissues", table], capsys, monkeypatch).code == 0
    assert json.loads((tmp_path / "s.json").read_text())["tissue_table"] == str(table)
    assert run_cli([*args, "--out", tmp_path / "d.nii.gz"], capsys, monkeypatch).code == 0
    assert json.loads((tmp_path / "d.json").read_text())["tissue_table"] == "default"


def test_a_user_file_put_where_a_seg2med_output_was_is_never_replaced(subject, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.nii.gz"
    base = ["generate", "--labels", subject["labels"], "--out", out, "--model", "ct-demo-tiny", "--steps", "1"]
    assert run_cli([*base, "--samples", "2"], capsys, monkeypatch).code == 0
    (tmp_path / "o_std.nii.gz").write_bytes(subject["image"].read_bytes())  # the user's own file, same name
    res = run_cli([*base, "--samples", "1", "--overwrite"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert (tmp_path / "o_std.nii.gz").read_bytes() == subject["image"].read_bytes()  # not removed as stale
    res = run_cli([*base, "--samples", "2", "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "o_std.nii.gz", "not written by seg2med")
    # a seg2med output edited in place (header kept, so its descrip still says seg2med) is the user's now
    img = nib.load(str(out))
    edited = nib.Nifti1Image(np.asarray(img.dataobj) + 1.0, img.affine, header=img.header)
    nib.save(edited, str(out))
    assert nib.load(str(out)).header["descrip"].tobytes().startswith(b"seg2med")
    kept = out.read_bytes()
    res = run_cli([*base, "--samples", "1", "--overwrite"], capsys, monkeypatch)
    _clean_error(res, "o.nii.gz", "not written by seg2med")
    assert out.read_bytes() == kept

"""A label map without its own label table is read in the numbering its anatomy fits, or refused:
schemes reuse small ids for other organs (total 14 = right lower lung lobe, total_mr 14 = duodenum)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_cli

from seg2med.anatomy.plausibility import centroids, scheme_evidence
from seg2med.labels import get_scheme


def _plain(src: Path, dst: Path, keep=None, flip_lr: bool = False) -> Path:
    """``src`` without its embedded label table (a plain NIfTI as many tools write), optionally with
    only the ids ``keep`` and / or the affine's left-right axis flipped."""
    img = nib.load(str(src))
    arr = np.asarray(img.dataobj).astype(np.int16)
    if keep is not None:
        arr[~np.isin(arr, list(keep))] = 0
    aff = img.affine.copy()
    if flip_lr:
        aff[0, :] *= -1
    nib.save(nib.Nifti1Image(arr, aff), str(dst))
    assert not nib.load(str(dst)).header.extensions
    return dst


def _one_error_line(res) -> str:
    assert res.code != 0 and "Traceback" not in res.err + res.out
    errs = [ln for ln in res.err.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, res.err
    return " ".join(res.err.split())


def test_real_maps_fit_their_own_scheme_and_break_the_others(ts_dir):
    for file, own, wrong in (("example_seg_fast_force_split.nii.gz", "total", ("total_mr", "total_v1", "amos")),
                             ("example_seg_mr.nii.gz", "total_mr", ("total", "total_v1", "amos"))):
        img = nib.load(str(ts_dir / file))
        cents = centroids(np.asarray(img.dataobj), img.affine)
        ev = scheme_evidence(cents, get_scheme(own))
        assert ev.fits and ev.checked >= 9, (file, ev)
        for w in wrong:
            assert not scheme_evidence(cents, get_scheme(w)).fits, (file, w)


def test_a_total_map_without_table_given_to_an_mr_model_is_refused(ts_dir, tmp_path, capsys, monkeypatch):
    seg = _plain(ts_dir / "example_seg_fast_force_split.nii.gz", tmp_path / "seg.nii.gz")
    out = tmp_path / "mr.nii.gz"
    res = run_cli(["generate", "--labels", seg, "--model", "mr-demo-tiny", "--out", out, "--steps", "1"], capsys, monkeypatch)
    text = _one_error_line(res)
    assert "do not fit scheme 'total_mr'" in text and "fit scheme 'total': pass --scheme total" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_sparse_ids_that_exist_in_both_schemes_are_told_apart_by_anatomy(ts_dir, tmp_path, capsys, monkeypatch):
    # only ids <= 50: every one is also a total_mr id (lung lobes -> esophagus/bowel, L1-L5 -> humerus/iliac vessels)
    seg = _plain(ts_dir / "example_seg_fast_force_split.nii.gz", tmp_path / "sparse.nii.gz", keep=range(1, 51))
    assert not (set(np.unique(nib.load(str(seg)).dataobj)) - {0} - set(get_scheme("total_mr").id_to_name))
    res = run_cli(["simulate", "--labels", seg, "--scheme", "total_mr", "--out", tmp_path / "forced.nii.gz"],
                  capsys, monkeypatch)
    assert res.code == 0, res.err  # --scheme always wins
    res = run_cli(["generate", "--labels", seg, "--model", "mr-demo-tiny", "--out", tmp_path / "mr.nii.gz", "--steps", "1"],
                  capsys, monkeypatch)
    text = _one_error_line(res)
    assert "is not above" in text and "pass --scheme total" in text


def test_an_mr_map_without_table_is_not_read_as_total(ts_dir, tmp_path, capsys, monkeypatch):
    seg = _plain(ts_dir / "example_seg_mr.nii.gz", tmp_path / "mr_seg.nii.gz")
    res = run_cli(["simulate", "--labels", seg, "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch)
    text = _one_error_line(res)
    assert "do not fit scheme 'total'" in text and "vertebrae_C is not above liver" in text
    assert "pass --scheme total_mr" in text
    res = run_cli(["simulate", "--labels", seg, "--scheme", "total_mr", "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch)
    assert res.code == 0, res.err


def test_a_map_in_the_right_numbering_passes_and_a_flipped_affine_is_warned_about(ts_dir, tmp_path, capsys, monkeypatch, caplog):
    seg = _plain(ts_dir / "example_seg_fast_force_split.nii.gz", tmp_path / "seg.nii.gz")
    assert run_cli(["simulate", "--labels", seg, "--out", tmp_path / "p.nii.gz"], capsys, monkeypatch).code == 0
    flipped = _plain(ts_dir / "example_seg_fast_force_split.nii.gz", tmp_path / "flip.nii.gz", flip_lr=True)
    res = run_cli(["simulate", "--labels", flipped, "--out", tmp_path / "f.nii.gz"], capsys, monkeypatch)
    assert res.code == 0, res.err
    assert "flipped affine" in " ".join(res.err.split())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_phantom_is_anatomically_plausible(seed):
    import seg2med

    lv = seg2med.make_phantom(seed=seed, spacing=3.0, slices=32, size=128)
    ev = scheme_evidence(centroids(lv.volume.array, lv.volume.affine), get_scheme("total"), ignore_ids=range(200, 256))
    assert ev.fits and ev.checked >= 5, ev

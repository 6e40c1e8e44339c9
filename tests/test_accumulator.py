"""The metric accumulator behind evaluate's summary: per-subject values, mean / SD / n and Mann-Whitney p-values
checked against numpy and scipy, and an Evaluation fed CaseResult by CaseResult (no volumes needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from seg2med.errors import InputError
from seg2med.evaluation import CaseResult, Evaluation, summarize
from seg2med.metrics import MetricAccumulator


def _filled(rng: np.random.Generator) -> tuple[MetricAccumulator, dict[str, list[float]]]:
    """Two methods on 7 subjects, each subject scored on three slices (averaged per subject)."""
    acc = MetricAccumulator(reference="ref")
    per_subject: dict[str, list[float]] = {"ref": [], "new": []}
    for s in range(7):
        for method, centre in (("ref", 0.6), ("new", 0.8)):
            slices = centre + 0.05 * rng.normal(size=3)
            for v in slices:
                acc.add(f"s{s}", method, ssim=float(v))
            per_subject[method].append(float(np.mean(slices)))
    return acc, per_subject


def test_summary_is_over_per_subject_means_with_scipy_p_values():
    acc, per_subject = _filled(np.random.default_rng(3))
    summary = acc.summary()
    for method, values in per_subject.items():
        entry = summary[method]["ssim"]
        assert entry["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert entry["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)  # over 7 subjects, not 21 slices
        assert entry["n"] == 7
    expected = stats.mannwhitneyu(per_subject["new"], per_subject["ref"], alternative="two-sided").pvalue
    assert summary["new"]["ssim"]["p_vs_ref"] == pytest.approx(expected, rel=1e-12)
    assert "p_vs_ref" not in summary["ref"]["ssim"]  # the reference is not tested against itself
    assert acc.pvalues()["new"]["ssim"]["p"] == pytest.approx(expected, rel=1e-12)
    assert MetricAccumulator().summary() == {}  # nothing recorded, no reference needed


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")  # the SD of inf
def test_nan_is_ignored_and_infinite_values_are_kept_out_of_n_and_the_test():
    acc = MetricAccumulator(reference="b")
    a = [0.2, float("nan"), math.inf, 0.4, 0.3]
    b = [0.5, 0.6, 0.7, float("nan"), 0.9]
    for s, (x, y) in enumerate(zip(a, b)):
        acc.add(f"s{s}", "a", psnr=x, dice=float("nan"))
        acc.add(f"s{s}", "b", psnr=y, dice=0.5 + 0.1 * s)
    entry = acc.summary()["a"]["psnr"]
    assert entry["mean"] == math.inf and math.isnan(entry["sd"]) and entry["n"] == 3  # n counts finite values only
    finite_a, finite_b = [0.2, 0.4, 0.3], [0.5, 0.6, 0.7, 0.9]
    assert entry["p_vs_b"] == pytest.approx(stats.mannwhitneyu(finite_a, finite_b, alternative="two-sided").pvalue)
    b_entry = acc.summary()["b"]["psnr"]
    assert b_entry["mean"] == pytest.approx(np.mean(finite_b)) and b_entry["sd"] == pytest.approx(np.std(finite_b, ddof=1))
    undefined = acc.summary()["a"]["dice"]  # NaN on every subject: no mean, no test
    assert math.isnan(undefined["mean"]) and undefined["n"] == 0 and undefined["p_vs_b"] is None
    assert all(math.isnan(v) for v in acc.pvalues()["a"]["dice"].values())


def test_reset_and_a_reference_without_values():
    acc, _ = _filled(np.random.default_rng(0))
    acc.reset()
    assert len(acc) == 0 and acc.summary() == {} and acc.reference == "ref"
    acc.add("s0", "other", ssim=0.5)
    with pytest.raises(ValueError, match="reference method 'ref' has no values"):
        acc.summary()


def _case(subject: str, ssim: dict[str, float], dice: dict[str, list[float]], modality: str = "ct") -> CaseResult:
    rows = [{"subject": subject, "method": m, "voxels": 100, "ssim": v, "dice_mean": float(np.mean(dice[m]))}
            for m, v in ssim.items()]
    dice_rows = [{"subject": subject, "method": m, "class": c, "dice": d, "hd95": 1.0}
                 for m, ds in dice.items() for c, d in enumerate(ds, start=1)]
    return CaseResult(subject, modality, rows=rows, dice_rows=dice_rows, notes=["the same note"])


def test_evaluation_fed_case_results_gives_the_summary():
    ev = Evaluation("ct", ["unet", "ddpm"])
    ssim = {"unet": [0.5, 0.55, 0.45, 0.6], "ddpm": [0.8, 0.85, 0.9, 0.75]}
    dice = {"unet": [[0.2, 0.4], [0.3], [0.1, 0.5, 0.6], [0.4]], "ddpm": [[0.7, 0.9], [0.8], [0.6, 0.7, 0.9], [0.85]]}
    for s in range(4):
        ev.add(_case(f"s{s}", {m: ssim[m][s] for m in ssim}, {m: dice[m][s] for m in dice}))
    out = summarize(ev)
    assert out["reference_method"] == "ddpm" and out["subjects"] == 4 and out["notes"] == ["the same note"]
    assert list(out["methods"]) == ["unet", "ddpm"]
    unet = out["methods"]["unet"]
    assert list(unet) == ["ssim", "dice_mean", "dice_all_classes"]  # report order, pooled Dice last
    assert unet["ssim"]["mean"] == pytest.approx(np.mean(ssim["unet"]))
    assert unet["ssim"]["p_vs_ddpm"] == pytest.approx(stats.mannwhitneyu(ssim["unet"], ssim["ddpm"]).pvalue)
    pooled = [d for ds in dice["unet"] for d in ds]  # every (subject, class), not a mean of subject means
    assert unet["dice_all_classes"]["n"] == len(pooled) == 7
    assert unet["dice_all_classes"]["mean"] == pytest.approx(np.mean(pooled))
    assert unet["dice_all_classes"]["sd"] == pytest.approx(np.std(pooled, ddof=1))
    assert unet["dice_mean"]["mean"] == pytest.approx(np.mean([np.mean(ds) for ds in dice["unet"]]))
    assert len(ev.rows) == 8 and len(ev.dice_rows) == 14  # the CSV tables keep every row
    with pytest.raises(InputError, match="MR but earlier subjects are CT"):
        ev.add(_case("s9", {"unet": 0.5, "ddpm": 0.6}, {"unet": [0.1], "ddpm": [0.2]}, modality="mr"))

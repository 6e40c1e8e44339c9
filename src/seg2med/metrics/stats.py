"""Summary statistics, the Mann-Whitney U test and a per-subject metric accumulator.

:class:`MetricAccumulator` collects rows ``{subject, method, metric: value}``
(one per subject, or several - e.g. one per slice - which are averaged per
subject), and gives the per-subject table, mean / SD / n per method and
metric, and two-sided Mann-Whitney p-values of each method against a
reference method (unpaired, over the per-subject values, as in the seg2med
paper). Like MONAI's cumulative metrics it is fed as results come
(:meth:`~MetricAccumulator.add`), summarised at the end
(:meth:`~MetricAccumulator.summary`, :meth:`~MetricAccumulator.pvalues`) and
emptied with :meth:`~MetricAccumulator.reset`.

NaN values (undefined metrics) are ignored everywhere. An infinite value (the
PSNR of identical images, the HD95 of a missed class) enters the mean and SD
(which become infinite) but is neither counted in the accumulator's ``n`` nor
ranked by its tests, which see the finite values only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats


class MeanSD(NamedTuple):
    """Mean and sample standard deviation (ddof = 1) of the non-NaN values."""

    mean: float
    sd: float


class MannWhitney(NamedTuple):
    """Mann-Whitney U statistic of the first sample and its two-sided p-value."""

    u: float
    p: float


def _finite_or_inf(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64).ravel()
    return a[~np.isnan(a)]


def count_valid(values: Iterable[float]) -> int:
    """Number of non-NaN values (infinite values count)."""
    return int(_finite_or_inf(values).size)


def mean_sd(values: Iterable[float]) -> MeanSD:
    """``(mean, sd)``: mean and sample SD (ddof = 1) ignoring NaN; SD is NaN for fewer than 2 values, both for none.

    Infinite values (e.g. HD95 of a missed class) are kept and make the mean infinite.
    """
    a = _finite_or_inf(values)
    if a.size == 0:
        return MeanSD(float("nan"), float("nan"))
    sd = float(np.std(a, ddof=1)) if a.size > 1 else float("nan")
    return MeanSD(float(np.mean(a)), sd)


def mann_whitney(a: Iterable[float], b: Iterable[float]) -> MannWhitney:
    """Two-sided Mann-Whitney U test (:func:`scipy.stats.mannwhitneyu`, default method), NaN ignored.

    Returns ``(U, p)`` with U the statistic of ``a``.
    """
    x, y = _finite_or_inf(a), _finite_or_inf(b)
    if x.size == 0 or y.size == 0:
        raise ValueError(f"Mann-Whitney needs values in both samples, got {x.size} and {y.size}")
    res = stats.mannwhitneyu(x, y, alternative="two-sided")
    return MannWhitney(float(res.statistic), float(res.pvalue))


def per_subject_means(
    rows: Iterable[Mapping[str, Any]],
    subject_key: str = "subject",
    group_keys: Sequence[str] = ("method",),
) -> list[dict[str, Any]]:
    """Average numeric entries of rows sharing ``subject_key`` and ``group_keys`` (NaN ignored).

    E.g. per-slice rows ``{subject, method, ssim, ...}`` -> one row per
    (subject, method) with the mean of each metric over that subject's rows.
    Rows keep the order in which each (subject, group) first appears; a
    metric that is NaN in every row of a group stays NaN.
    """
    keys = (subject_key, *group_keys)
    groups: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    for row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"row {dict(row)} lacks {missing}")
        vals = groups.setdefault(tuple(row[k] for k in keys), {})
        for name, v in row.items():
            if name not in keys:
                vals.setdefault(name, []).append(float(v))
    out = []
    for ident, vals in groups.items():
        row_out: dict[str, Any] = dict(zip(keys, ident))
        for name, vs in vals.items():
            a = _finite_or_inf(vs)
            row_out[name] = float(np.mean(a)) if a.size else float("nan")
        out.append(row_out)
    return out


class MetricAccumulator:
    """Collect per-subject metric values of several methods; summarise and compare them.

    Example::

        acc = MetricAccumulator(reference="prior")
        acc.add("s01", "model", ssim=0.91, mae=40.2)
        acc.add("s01", "prior", ssim=0.70, mae=95.0)
        acc.per_subject()  # [{"subject": "s01", "method": "model", "ssim": 0.91, "mae": 40.2}, ...]
        acc.summary()      # {"model": {"ssim": {"mean": .., "sd": .., "n": .., "p_vs_prior": ..}, ...}, ...}
        acc.pvalues()      # {"model": {"ssim": {"u": .., "p": ..}, ...}}  (vs "prior")

    Several ``add`` calls for one subject and method (e.g. one per slice) are
    averaged into one per-subject value before summary and tests.
    """

    def __init__(self, reference: str | None = None) -> None:
        self.reference = reference
        self._rows: list[dict[str, Any]] = []

    def add(self, subject: str, method: str, metrics: Mapping[str, float] | None = None, **more: float) -> None:
        """Record metric values of ``method`` on ``subject`` (as a mapping and/or keywords)."""
        values = {**(dict(metrics) if metrics else {}), **more}
        if not values:
            raise ValueError("no metric values given")
        for reserved in ("subject", "method"):
            if reserved in values:
                raise ValueError(f"{reserved!r} cannot be a metric name")
        self._rows.append({"subject": str(subject), "method": str(method), **{k: float(v) for k, v in values.items()}})

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every recorded row, as added."""
        return [dict(r) for r in self._rows]

    @property
    def methods(self) -> list[str]:
        """Method names in order of first appearance."""
        return list(dict.fromkeys(r["method"] for r in self._rows))

    @property
    def metrics(self) -> list[str]:
        """Metric names in order of first appearance."""
        return list(dict.fromkeys(k for r in self._rows for k in r if k not in ("subject", "method")))

    def per_subject(self) -> list[dict[str, Any]]:
        """One row per (subject, method): the mean of its recorded values (missing metrics are NaN)."""
        table = per_subject_means(self._rows)
        names = self.metrics
        return [{"subject": r["subject"], "method": r["method"], **{m: r.get(m, float("nan")) for m in names}} for r in table]

    def reset(self) -> None:
        """Forget every recorded value (the reference method stays)."""
        self._rows.clear()

    def _reference(self, reference: str | None) -> str:
        ref = reference if reference is not None else self.reference
        if ref is None:
            raise ValueError("no reference method: pass reference= here or to MetricAccumulator()")
        if ref not in self.methods:
            raise ValueError(f"reference method {ref!r} has no values (methods: {', '.join(self.methods)})")
        return ref

    def _finite_values(self, table: list[dict[str, Any]], method: str, metric: str) -> np.ndarray:
        a = np.array([r[metric] for r in table if r["method"] == method], np.float64)
        return a[np.isfinite(a)]

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{method: {metric: {"mean", "sd", "n"}}}`` over the per-subject values; with a reference method, every
        other method's entries also hold ``"p_vs_<reference>"``.

        mean and sd ignore NaN (:func:`mean_sd`); n counts the finite values; p is the two-sided Mann-Whitney
        p-value of the finite values against the reference's, None where either side has none.
        """
        table = self.per_subject()
        ref = self._reference(None) if self.reference is not None and self._rows else None
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for method in self.methods:
            out[method] = {}
            for metric in self.metrics:
                vals = [r[metric] for r in table if r["method"] == method]
                finite = self._finite_values(table, method, metric)
                entry: dict[str, Any] = {**mean_sd(vals)._asdict(), "n": int(finite.size)}
                if ref is not None and method != ref:
                    other = self._finite_values(table, ref, metric)
                    entry[f"p_vs_{ref}"] = mann_whitney(finite, other).p if finite.size and other.size else None
                out[method][metric] = entry
        return out

    def pvalues(self, reference: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Two-sided Mann-Whitney of each method against ``reference`` per metric: ``{method: {metric: {"u", "p"}}}``.

        Over the finite per-subject values; NaN where either side has none.
        """
        ref = self._reference(reference)
        table = self.per_subject()
        out: dict[str, dict[str, dict[str, float]]] = {}
        for method in self.methods:
            if method == ref:
                continue
            out[method] = {}
            for metric in self.metrics:
                a, b = self._finite_values(table, method, metric), self._finite_values(table, ref, metric)
                out[method][metric] = (mann_whitney(a, b)._asdict() if a.size and b.size
                                       else {"u": float("nan"), "p": float("nan")})
        return out

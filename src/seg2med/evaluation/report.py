"""Write an evaluation: per-subject CSV, summary JSON (mean ± sd, Mann-Whitney p) and an HTML report with figures.

Figures (PNG, matplotlib): box plots per metric per method; intensity
histograms real vs synthetic with HistCC; a Dice heatmap (class x subject);
a qualitative grid (label | prior | each method | ground truth) with the
slice SSIM on each panel; a through-plane grid (axial | coronal | sagittal
through the body centre; reference first, then the prior and each method)
where streaks across slices show, with each plane's SSIM and the roughness_z.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seg2med.evaluation.core import METRIC_COLUMNS, METRIC_GOALS, Evaluation, goal_text
from seg2med.io.files import write_json, write_text
from seg2med.io.outputs import replace_folder
from seg2med.metrics import histcc

LABELS_OF_METRICS = {"ssim": "SSIM (axial)", "ssim_coronal": "SSIM coronal", "ssim_sagittal": "SSIM sagittal",
                     "roughness_z": "roughness z", "roughness_xy": "roughness in-plane",
                     "ms_ssim": "MS-SSIM", "psnr": "PSNR (dB)", "mae": "MAE [0,1]", "mae_hu": "MAE (HU)",
                     "histcc": "HistCC", "fsim": "FSIM", "dice_mean": "Dice (mean over classes)",
                     "fid": "FID", "frechet_seg": "Fréchet-Seg (segmenter features, not FID)"}


PRIOR_COLUMN = "\0prior input"  # never a method name


def metric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Metric columns present in the rows, in report order."""
    present = {k for r in rows for k in r}
    return [m for m in METRIC_COLUMNS if m in present]


def summarize(ev: Evaluation) -> dict[str, Any]:
    """Per method and metric: mean, sd, n (over subjects) and the two-sided Mann-Whitney U p-value vs the reference
    method (from ``ev.scores``), the distribution distances, and the Dice pooled over subjects and classes."""
    scores = ev.scores.summary()
    summary: dict[str, Any] = {}
    for method in ev.methods:
        summary[method] = {**scores.get(method, {}), **{k: {"value": v} for k, v in ev.distribution.get(method, {}).items()}}
    for method, entries in ev.dice.summary().items():
        summary.setdefault(method, {})["dice_all_classes"] = entries["dice"]
    present = [k for entries in summary.values() for k in entries]
    better = {k: goal_text(k) for k in dict.fromkeys(present) if k in METRIC_GOALS}
    return {"reference_method": ev.scores.reference, "modality": ev.modality, "subjects": len({r["subject"] for r in ev.rows}),
            "methods": summary, "better": better, "notes": ev.notes}


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    _plt().close(fig)
    return path.name


def fig_boxplots(ev: Evaluation, path: Path) -> str:
    plt = _plt()
    names = metric_names(ev.rows)
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, m in zip(axes.flat, names):
        data = [[r[m] for r in ev.rows if r["method"] == meth and np.isfinite(r.get(m, np.nan))] for meth in ev.methods]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(ev.methods) + 1), ev.methods, rotation=30, fontsize=8)
        ax.set_title(LABELS_OF_METRICS.get(m, m), fontsize=10)
        for j, vals in enumerate(data, start=1):  # per-subject points on top of the boxes
            ax.plot(np.full(len(vals), j) + np.linspace(-0.08, 0.08, len(vals)), vals, "k.", ms=3, alpha=0.6)
    return _save(fig, path)


def fig_histograms(ev: Evaluation, path: Path, bins: int = 128) -> str:
    plt = _plt()
    ref = ev.histograms["reference"]
    fig, axes = plt.subplots(1, len(ev.methods), figsize=(3.6 * len(ev.methods), 3.2), squeeze=False)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, meth in zip(axes[0], ev.methods):
        vals = ev.histograms[meth]
        ax.hist(ref, bins=edges, density=True, alpha=0.5, label="real")
        ax.hist(vals, bins=edges, density=True, alpha=0.5, label=meth)
        cc = histcc_of(ev, meth)
        ax.set_title(f"{meth}: HistCC {cc:.3f}", fontsize=10)
        ax.set_xlabel("intensity [0, 1]")
        ax.legend(fontsize=8)
    return _save(fig, path)


def fig_dice_heatmap(ev: Evaluation, path: Path, names: dict[int, str] | None = None) -> str:
    plt = _plt()
    cols = [(m, s) for m in [*(["real image"] if any(r["method"] == "real image" for r in ev.dice_rows) else []), *ev.methods]
            for s in sorted({r["subject"] for r in ev.dice_rows})]
    classes = sorted({r["class"] for r in ev.dice_rows})
    grid = np.full((len(classes), len(cols)), np.nan)
    for r in ev.dice_rows:
        if (r["method"], r["subject"]) in cols:
            grid[classes.index(r["class"]), cols.index((r["method"], r["subject"]))] = r["dice"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(cols) + 3), max(3.0, 0.22 * len(classes) + 1.5)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(classes)), [(names or {}).get(c, str(c)) for c in classes], fontsize=7)
    ax.set_xticks(range(len(cols)), [f"{m}\n{s}" for m, s in cols], rotation=60, fontsize=7)
    fig.colorbar(im, ax=ax, label="Dice")
    ax.set_title("Dice of the re-segmented image vs the input labels", fontsize=10)
    return _save(fig, path)


def fig_qualitative(ev: Evaluation, path: Path) -> str:
    plt = _plt()
    has_labels = any(p["labels"] is not None for p in ev.panels)
    has_prior = any("prior" in p for p in ev.panels)
    cols = [*(["label"] if has_labels else []), *([PRIOR_COLUMN] if has_prior else []), *ev.methods, "ground truth"]
    fig, axes = plt.subplots(len(ev.panels), len(cols), figsize=(2.4 * len(cols), 2.6 * len(ev.panels)), squeeze=False)
    for row, p in zip(axes, ev.panels):
        for ax, col in zip(row, cols):
            ax.axis("off")
            if col == "label":
                if p["labels"] is not None:
                    ax.imshow(np.flipud(p["labels"].T), cmap="nipy_spectral", interpolation="nearest")
                title = "label"
            elif col == PRIOR_COLUMN:
                if "prior" in p:
                    ax.imshow(np.flipud(p["prior"].T), cmap="gray", vmin=0, vmax=1)
                title = "physics prior (input)"
            elif col == "ground truth":
                ax.imshow(np.flipud(p["reference"].T), cmap="gray", vmin=0, vmax=1)
                title = "ground truth"
            else:
                ax.imshow(np.flipud(p["methods"][col]["image"].T), cmap="gray", vmin=0, vmax=1)
                title = f"{col}\nSSIM {p['methods'][col]['ssim']:.3f}"
            ax.set_title(f"{title}" if col != cols[0] else f"{p['subject']} z={p['slice']}\n{title}", fontsize=8)
    return _save(fig, path)


def _display(plane: str, arr: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, float]:
    """A plane of an (x, y, z) volume as shown (rows = y or z upwards) and its pixel aspect (height / width)."""
    sx, sy, sz = spacing
    aspect = {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[plane]
    return np.flipud(np.asarray(arr).T), aspect


def fig_planes(ev: Evaluation, path: Path) -> str:
    """Axial | coronal | sagittal through the body centre of each qualitative subject: the reference, the prior
    (when given) and every method, one row each, with the plane's SSIM inside the mask and the method's
    roughness_z: a slice-wise generator's streaks across slices show in the coronal and sagittal columns."""
    plt = _plt()
    planes = ("axial", "coronal", "sagittal")
    rows = [(p, kind, name) for p in ev.panels
            for kind, name in [("reference", "ground truth"), *([("prior", "physics prior (input)")] if "prior" in p["planes"] else []),
                               *(("method", m) for m in p["methods"])]]
    fig, axes = plt.subplots(len(rows), 3, figsize=(3.2 * 3, 2.4 * len(rows)), squeeze=False)
    for ax_row, (p, kind, name) in zip(axes, rows):
        cx, cy, k = p["centre"]
        method = p["methods"][name] if kind == "method" else None
        images = method["planes"] if method is not None else p["planes"][kind]
        for ax, plane in zip(ax_row, planes):
            img, aspect = _display(plane, images[plane], p["spacing"])
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            cut = {"axial": f"z={k}", "coronal": f"y={cy}", "sagittal": f"x={cx}"}[plane]
            title = f"{p['subject']} {name}\n{plane} {cut}"
            if method is not None:
                value = method["plane_ssim"][plane]
                title += f", SSIM {value:.3f}" if np.isfinite(value) else ""
                if plane == "coronal" and np.isfinite(method["roughness_z"]):
                    title += f"\nroughness z {method['roughness_z']:.2f} (1 = real)"
            ax.set_title(title, fontsize=7)
    return _save(fig, path)


# --------------------------------------------------------------------------- HTML
def _fmt(entry: dict[str, Any]) -> str:
    if "value" in entry:
        return f"{entry['value']:.3f}"
    if entry["mean"] is None or not np.isfinite(entry["mean"]):
        return "–"
    return f"{entry['mean']:.4g} ± {entry['sd']:.2g}" if entry["n"] > 1 else f"{entry['mean']:.4g}"


def summary_table_html(summary: dict[str, Any]) -> str:
    """Table II style: one row per method, mean ± sd per metric, p-values vs the reference method."""
    methods = summary["methods"]
    ref = summary["reference_method"]
    cols: list[str] = []
    for entries in methods.values():
        cols += [k for k in entries if k not in cols]
    marks = {"higher": " ↑", "lower": " ↓"}

    def header(c: str) -> str:
        goal = goal_text(c)
        mark = marks.get(goal, f" ({goal})" if goal else "")
        tip = f' title="{html.escape(goal)} is better"' if goal else ""
        return f"<th{tip}>{html.escape(LABELS_OF_METRICS.get(c, c) + mark)}</th>"

    head = "".join(header(c) for c in cols)
    body = []
    for meth, entries in methods.items():
        cells = []
        for c in cols:
            e = entries.get(c)
            if e is None:
                cells.append("<td>–</td>")
                continue
            p = e.get(f"p_vs_{ref}")
            ptxt = f"<br><small>p={p:.3g}</small>" if p is not None else ""
            cells.append(f"<td>{_fmt(e)}{ptxt}</td>")
        body.append(f"<tr><th>{html.escape(meth)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def write_report(ev: Evaluation, out: str | Path, overwrite: bool = False, title: str = "seg2med evaluation",
                 extra_html: str = "", class_names: dict[int, str] | None = None,
                 inputs: Sequence[str | Path | None] = ()) -> dict[str, Path]:
    """Write ``per_subject.csv``, ``dice.csv`` (with a segmenter), ``summary.json``, ``figures/*.png`` and ``report.html``.

    The folder is replaced as a whole; ``overwrite`` replaces only a report folder seg2med wrote that
    holds none of the ``inputs`` (:mod:`seg2med.io.outputs`)."""
    summary = summarize(ev)
    out = Path(out)
    with replace_folder(out, "evaluation", overwrite, inputs) as tmp:
        figs = tmp / "figures"
        figs.mkdir()
        write_text(tmp / "per_subject.csv", _csv(ev.rows))
        figures = {"boxplots": fig_boxplots(ev, figs / "boxplots.png"),
                   "histograms": fig_histograms(ev, figs / "histograms.png"),
                   "qualitative": fig_qualitative(ev, figs / "qualitative.png"),
                   "through_plane": fig_planes(ev, figs / "through_plane.png")}
        if ev.dice_rows:
            write_text(tmp / "dice.csv", _csv(ev.dice_rows))
            figures["dice"] = fig_dice_heatmap(ev, figs / "dice_heatmap.png", class_names)
        write_json(tmp / "summary.json", {"kind": "seg2med-evaluation", **summary, "figures": {k: f"figures/{v}" for k, v in figures.items()},
                                          "written": dt.datetime.now().isoformat(timespec="seconds")})
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in ev.notes)
        fig_html = "".join(f'<h3>{html.escape(k)}</h3><img src="figures/{html.escape(v)}" alt="{html.escape(k)}">'
                           for k, v in figures.items())
        doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary['subjects']} subject(s), modality {ev.modality.upper()}, methods: {html.escape(', '.join(ev.methods))}.
Mean ± sd over subjects; p: two-sided Mann-Whitney U against <b>{html.escape(summary['reference_method'])}</b>.
↑ higher is better, ↓ lower is better; a roughness ratio (mean squared difference of neighbouring voxels, synthetic ÷ real,
along z across slices or in-plane) is best at 1: above it is rougher (streaks, noise), below it smoother than the real image.
Metrics inside the mask, intensities in [0, 1] (CT window [-1000, 1000] HU; MR 0.5-99.5th percentiles per volume).</p>
{summary_table_html(summary)}{extra_html}<ul>{notes}</ul>{fig_html}</body></html>"""
        write_text(tmp / "report.html", doc)
    return {"dir": out, "csv": out / "per_subject.csv", "summary": out / "summary.json", "html": out / "report.html"}


def histcc_of(ev: Evaluation, method: str, bins: int = 256) -> float:
    """Pooled HistCC of a method's sampled intensities against the reference's."""
    a, b = ev.histograms[method], ev.histograms["reference"]
    n = min(a.size, b.size)
    return histcc(a[:n], b[:n], bins=bins, value_range=(0.0, 1.0))


# --------------------------------------------------------------------------- without ground truth
def _cell(entry: Any, digits: int = 3) -> str:
    if isinstance(entry, dict) and "mean" in entry:
        if entry["mean"] is None:
            return "–"
        return f"{entry['mean']:.{digits}f} ± {entry['sd']:.2g}" if entry["n"] > 1 else f"{entry['mean']:.{digits}f}"
    if isinstance(entry, dict) and "value" in entry:
        return f"{entry['value']:.{digits}f}"
    return "–" if entry is None else html.escape(str(entry))


def unpaired_table_html(summary: dict[str, Any]) -> str:
    """One row per method (and the segmenter on real images): per-organ check, re-segmentation, distances."""
    mr = summary["modality"] == "mr"
    check = "organs in tissue order" if mr else "organs in plausible HU range"
    counts = [f"classes Dice > {t:g}" for t in summary["dice_counts"]]
    head = ["method", f"{check} (fraction, mean ± sd)", "subjects passed", *(["inverted pairs"] if mr else []),
            "Dice (mean over classes)", "HD95 mm", *counts, "Fréchet-Seg ↓", "FID ↓"]
    body = []

    def reseg_cells(r: dict[str, Any] | None) -> list[str]:
        if r is None:
            return ["–"] * (2 + len(counts))
        return [_cell(r["dice"]), _cell(r["hd95"], 1),
                *(f"{r[f'classes_dice_above_{t:g}']} of {r['classes']}" for t in summary["dice_counts"])]

    for m, e in summary["methods"].items():
        cells = [_cell(e["organs_ok_fraction"]), f"{e['subjects_passed']} of {e['subjects']}",
                 *([_cell(e["inverted_pairs"], 1)] if mr else []), *reseg_cells(e.get("resegmentation")),
                 _cell(e.get("frechet_seg")), _cell(e.get("fid"))]
        body.append(f"<tr><th>{html.escape(m)}</th>{''.join(f'<td>{c}</td>' for c in cells)}</tr>")
    if summary["real_image"] is not None:
        cells = ["–", "–", *(["–"] if mr else []), *reseg_cells(summary["real_image"]), "–", "–"]
        body.append(f"<tr><th>segmenter on real images</th>{''.join(f'<td>{c}</td>' for c in cells)}</tr>")
    return (f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{''.join(body)}</table>")


def dice_classes_html(summary: dict[str, Any]) -> str:
    """Per class mean Dice of every method beside the segmenter on real images (the paper's Table VII)."""
    cols = [(m, e["resegmentation"]["per_class"]) for m, e in summary["methods"].items() if "resegmentation" in e]
    if summary["real_image"] is not None:
        cols.append(("real image", summary["real_image"]["per_class"]))
    if not cols:
        return ""
    classes = sorted({c for _, pc in cols for c in pc})
    name = {c: pc[c]["name"] for _, pc in cols for c in pc}
    rows = []
    for c in classes:
        cells = "".join(f"<td>{pc[c]['dice']:.3f}</td>" if c in pc and pc[c]["dice"] is not None else "<td>–</td>"
                        for _, pc in cols)
        rows.append(f"<tr><th>{html.escape(name[c])} ({c})</th>{cells}</tr>")
    head = "".join(f"<th>{html.escape(m)}</th>" for m, _ in cols)
    return f"<h2>Dice per class</h2><table><tr><th>class</th>{head}</tr>{''.join(rows)}</table>"


def write_unpaired_report(ev: Any, out: str | Path, overwrite: bool = False,
                          inputs: Sequence[str | Path | None] = ()) -> dict[str, Path]:
    """Write ``qc.csv`` (subject x method), ``organs.csv`` (x class), ``dice.csv`` (with a segmenter),
    ``summary.json``, ``figures/`` and ``report.html`` of an :class:`~seg2med.evaluation.unpaired.UnpairedEvaluation`;
    the folder is replaced as a whole, as :func:`write_report` does."""
    from seg2med.evaluation.unpaired import summarize_unpaired

    summary = summarize_unpaired(ev)
    out = Path(out)
    with replace_folder(out, "evaluation", overwrite, inputs) as tmp:
        write_text(tmp / "qc.csv", _csv(ev.qc_rows))
        write_text(tmp / "organs.csv", _csv(ev.organ_rows))
        figures = {}
        if ev.dice_rows:
            write_text(tmp / "dice.csv", _csv(ev.dice_rows))
            (tmp / "figures").mkdir()
            figures["dice"] = fig_dice_heatmap(ev, tmp / "figures" / "dice_heatmap.png", ev.class_names)
        write_json(tmp / "summary.json", {**summary, "figures": {k: f"figures/{v}" for k, v in figures.items()},
                                          "written": dt.datetime.now().isoformat(timespec="seconds")})
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in ev.notes)
        fig_html = "".join(f'<h3>{html.escape(k)}</h3><img src="figures/{html.escape(v)}" alt="{html.escape(k)}">'
                           for k, v in figures.items())
        what = ("each organ's median HU against its plausible range (tissue table)" if ev.modality == "ct" else
                "the organs' order of brightness against the order the physics prior of the sequence predicts")
        doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>seg2med evaluation without ground truth</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}}img{{max-width:100%}}</style></head><body>
<h1>seg2med evaluation without ground truth</h1>
<p>{summary['subjects']} subject(s), modality {ev.modality.upper()}, methods: {html.escape(', '.join(ev.methods))}.
No same-patient real image: per-organ check ({what}); re-segmentation Dice / HD95 of the output against its input
labels, beside the same segmenter on real images with their own labels; Fréchet distances to a reference set of real
volumes (slices pooled: {html.escape(str(summary['distribution_slices']) or '–')}).</p>
{unpaired_table_html(summary)}{dice_classes_html(summary)}<ul>{notes}</ul>{fig_html}</body></html>"""
        write_text(tmp / "report.html", doc)
    return {"dir": out, "csv": out / "qc.csv", "summary": out / "summary.json", "html": out / "report.html"}

"""Command-line interface. Each command parses its options and calls :mod:`seg2med.api`.

User errors (:class:`seg2med.errors.Seg2MedError`) are printed as one line on
stderr with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from seg2med._version import __version__
from seg2med.errors import ConfigError, Seg2MedError, clear_interrupt, interrupt_seen, note_interrupt
from seg2med.models.registry import DEFAULT_METHOD, DEFAULT_SLICE_CORRELATION, DEFAULT_STEPS, GENERATORS, methods_help

try:  # typer >= 0.2x ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click itself
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

app = typer.Typer(
    name="seg2med",
    help="seg2med: anatomy (label maps) -> physics priors -> synthetic CT / MR.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out_console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )


def _bar(*columns, transient: bool = True) -> Progress:
    """A rich progress display on stderr, shown only on a terminal (in a log it would leave a blank line
    above an error); ``transient``: gone when done, so no stale bar stands above an error line."""
    return Progress(*columns, TimeElapsedColumn(), console=console, disable=not console.is_terminal, transient=transient)


@contextmanager
def _progress(total: int, description: str):
    """A rich progress bar; yields a callback that advances it by one (a str argument names the step)."""
    with _bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
              transient=False) as prog:
        task = prog.add_task(description, total=total)

        def advance(msg: str | int = "") -> None:
            label = f"{description}: {msg}" if isinstance(msg, str) and msg else description
            prog.update(task, advance=1, description=label)

        try:
            yield advance
        except BaseException:
            prog.remove_task(task)  # the error line alone, not a half-full bar (or a blank line) above it
            prog.live.transient = True
            raise


def _version(value: bool) -> None:
    if value:
        out_console.print(f"seg2med {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = None,
) -> None:
    _setup_logging(verbose)


# --------------------------------------------------------------------------- labels
@app.command("labels")
def labels_cmd(scheme: Annotated[Optional[str], typer.Argument(help="Scheme to list (omit to list schemes).")] = None) -> None:
    """List label schemes, or the classes (id, name) of one scheme."""
    from seg2med.api import resolve_scheme
    from seg2med.labels import list_schemes

    if scheme is None:
        table = Table("scheme", "classes", "description")
        for name in list_schemes():
            s = resolve_scheme(name)
            table.add_row(name, str(len(s)), s.description)
        out_console.print(table)
        return
    s = resolve_scheme(scheme)
    table = Table("id", "name", title=f"{s.name}: {s.description}", caption=s.source)
    for i, n in sorted(s.id_to_name.items()):
        table.add_row(str(i), n)
    out_console.print(table)


# --------------------------------------------------------------------------- anatomy
@app.command("anatomy")
def anatomy_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="TotalSegmentator output: multilabel NIfTI or per-class folder.")],
    out: Annotated[Path, typer.Option("--out", help="Canonical label volume (.nii.gz); a .json label table is written beside it.")],
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme of the input (name or YAML; default: the one its class names belong to, else total).")] = None,
    tissue_masks: Annotated[Optional[Path], typer.Option("--tissue-masks", help="TotalSegmentator tissue_types output (folder or multilabel).")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Image for the body contour.")] = None,
    modality: Annotated[Optional[str], typer.Option("--modality", help="Modality of --image: ct or mr.")] = None,
    body: Annotated[Optional[Path], typer.Option("--body", help="Body contour: a mask, or TotalSegmentator --task body / body_mr output (file or folder).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Unknown label ids are an error, not a warning.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Build one canonical label volume (organs + tissue types + body) with an overlap report."""
    from seg2med import api

    inputs = [labels, tissue_masks, image, body]
    api.check_volume_outputs(out, overwrite, inputs)
    lv = api.build_anatomy(labels, scheme=scheme, tissue_masks=tissue_masks, image=image, modality=modality, body=body,
                           strict=strict)
    api.save_label_volume(lv, out, overwrite=overwrite, inputs=inputs)
    rep = lv.report
    for rule in rep.get("overlaps", []) if isinstance(rep, dict) else []:
        logging.getLogger("seg2med").info("overlap: %s", rule)
    classes = [k for k, v in rep.get("class_voxels", {}).items() if v]
    out_console.print(f"wrote {out} and {api.sidecar_path(out)}: scheme {lv.scheme.name} ({lv.classes_read_by}), "
                      f"{len(classes)} classes, body contour from {lv.body_contour}")


# --------------------------------------------------------------------------- lesion
def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, got {text!r}") from None


@app.command("lesion")
def lesion_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="Brain label map (brats_medddpm: 1 necrotic core, 2 oedema, 3 enhancing, 4 other brain; or --scheme with --brain).")],
    out: Annotated[Path, typer.Option("--out", help="Edited label map (.nii.gz); its label table and the edit go into the .json beside it.")],
    insert: Annotated[bool, typer.Option("--insert", help="Insert a tumour (necrotic core, enhancing rim, oedema around both) at --centre or at a random place deep in the brain.")] = False,
    centre: Annotated[Optional[str], typer.Option("--centre", help="x,y,z of the new tumour's centre, RAS+ mm (default: random, seeded).")] = None,
    radius: Annotated[Optional[float], typer.Option("--radius", help="Radius of the enhancing tumour's outer boundary, mm (default: drawn from 8-22).")] = None,
    edema: Annotated[Optional[float], typer.Option("--edema", help="Thickness of the oedema around it, mm (default: drawn from 4-15).")] = None,
    core_fraction: Annotated[Optional[float], typer.Option("--core-fraction", help="Necrotic core radius / tumour radius (default: drawn from 0.3-0.7).")] = None,
    move: Annotated[Optional[str], typer.Option("--move", help="Move the existing tumour by dx,dy,dz mm (RAS+).")] = None,
    scale: Annotated[Optional[float], typer.Option("--scale", help="Scale the existing tumour about its centroid by this factor.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Scheme of --labels (default brats_medddpm; another brain-tumour scheme needs --brain).")] = None,
    brain: Annotated[Optional[Path], typer.Option("--brain", help="Brain mask on the labels' grid, for a tumour-only map.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Also regenerate the images of the edited map with this multi-contrast model (run folder or shipped name) into --images-out.")] = None,
    images_out: Annotated[Optional[Path], typer.Option("--images-out", help="Folder for the regenerated contrasts (with --model).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps of the regeneration.")] = DEFAULT_STEPS,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (only seg2med's).")] = False,
) -> None:
    """Edit a brain tumour mask (insert, move, scale; seeded), and optionally regenerate its four contrasts: every
    synthetic lesion comes with its ground truth."""
    from seg2med import api

    if (model is None) != (images_out is None):
        raise ConfigError("--model and --images-out go together")
    inputs = [labels, brain]
    api.check_volume_outputs(out, overwrite, inputs)
    if model is not None:
        api.check_volume_outputs(images_out, overwrite, inputs, 1, api.model_contrasts(model))
    lv = api.edit_lesion(labels, scheme=scheme, brain=brain, insert=insert, centre_mm=_floats(centre, "--centre"),
                         radius=radius, edema=edema, core_fraction=core_fraction, move_mm=_floats(move, "--move"),
                         scale=scale, seed=seed)
    api.save_label_volume(lv, out, overwrite=overwrite, inputs=inputs)
    after = lv.report["lesion"]["volumes_ml"]["after"]
    out_console.print(f"wrote {out}: " + ", ".join(f"{k} {v:.1f} mL" for k, v in after.items()))
    if model is not None:
        result = api.generate(lv, model=model, steps=steps, seed=seed)
        written = api.save_generated(result, images_out, overwrite=overwrite, inputs=[*inputs, out])
        out_console.print(f"wrote {', '.join(str(p) for p in written.values())}")


# --------------------------------------------------------------------------- crosswalk
def print_crosswalk(report: dict | None, all_classes: bool = False) -> None:
    """The crosswalk report as a table: every class that was not kept as it is (or every class), with its voxels."""
    if not report:
        return
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report["counts"].items()))
    rows = [r for r in report["classes"] if all_classes or r["kind"] not in ("same", "seg2med class")]
    table = Table("class", "voxels", "became", "target", "reason",
                  title=f"crosswalk {report['source']} -> {report['target']}: {counts} (of the classes present)")
    for r in rows:
        table.add_row(r["class"], str(r["voxels"]), r["kind"], r["target"] or "-", r["reason"])
    if rows:
        console.print(table)
    else:
        console.print(table.title)


@app.command("crosswalk")
def crosswalk_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="Label map: multilabel NIfTI, per-class folder or a seg2med label volume.")],
    to: Annotated[str, typer.Option("--to", help="Target label scheme (see `seg2med schemes`).")],
    out: Annotated[Path, typer.Option("--out", help="Converted label map (.nii.gz); its .json label table and report are written beside it.")],
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme of the input (default: the one its class names belong to, else total).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse when a class with voxels would be dropped.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs seg2med wrote.")] = False,
) -> None:
    """Convert a label map to another scheme through a checked crosswalk; report what each class became."""
    from seg2med import api

    inputs = [labels]
    api.check_volume_outputs(out, overwrite, inputs)
    lv = api.crosswalk(labels, to, scheme=scheme, strict=strict)
    api.save_label_volume(lv, out, overwrite=overwrite, inputs=inputs)
    report = lv.report.get("crosswalk")
    print_crosswalk(report)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report["counts"].items())) if report else "already in that scheme"
    out_console.print(f"wrote {out} and {api.sidecar_path(out)}: scheme {lv.scheme.name}; classes present: {counts}")


# --------------------------------------------------------------------------- convert
@app.command("convert")
def convert_cmd(
    image: Annotated[Path, typer.Option("--image", help="The image to convert (CT in HU, or MR).")],
    modality: Annotated[str, typer.Option("--modality", help="Modality of --image: ct or mr.")],
    to: Annotated[str, typer.Option("--to", help="Modality to generate: mr or ct.")],
    out: Annotated[Path, typer.Option("--out", help="Synthetic image (.nii.gz) on the grid of --image; a .json sidecar records every stage.")],
    model: Annotated[str, typer.Option("--model", help="Model of the --to modality: run folder or shipped name (ct-demo, mr-demo, ...).")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Label map of --image (same grid), e.g. TotalSegmentator output.")] = None,
    segmenter: Annotated[Optional[str], typer.Option("--segmenter", help="totalsegmentator (installed with its weights; never downloaded) or a seg2med train-segmenter run.")] = None,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme of --labels (default: guessed).")] = None,
    steps: Annotated[int, typer.Option("--steps")] = DEFAULT_STEPS,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch: Annotated[int, typer.Option("--batch", help="Slices per forward pass (bounds memory).")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16.")] = "auto",
    strict: Annotated[bool, typer.Option("--strict", help="Refuse unknown label ids and classes the crosswalk would drop.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs seg2med wrote.")] = False,
) -> None:
    """Image in, other modality out: labels (given or segmented) -> body from the image -> crosswalk -> prior -> generate."""
    from seg2med import api

    inputs = [image, labels, model, None if segmenter is None or segmenter.lower() == api.TOTALSEGMENTATOR else segmenter]
    api.check_volume_outputs(out, overwrite, inputs)
    with _bar(SpinnerColumn(), TextColumn("convert"), BarColumn(), TextColumn("{task.percentage:>3.0f}%")) as prog:
        task = prog.add_task("convert", total=1.0)
        result = api.convert(image, modality, to, model=model, labels=labels, segmenter=segmenter, scheme=scheme,
                             strict=strict, steps=steps, seed=seed, batch=batch, device=device, precision=precision,
                             progress=lambda i, n: prog.update(task, completed=i / n))
    print_crosswalk(result.metadata.get("crosswalk"))
    written = api.save_generated(result, out, overwrite=overwrite, inputs=inputs)
    conv = result.metadata["convert"]
    out_console.print(f"wrote {', '.join(str(p) for p in written.values())}: {conv['modality']} -> {conv['to']}, "
                      f"labels {conv['labels']['source']} ({conv['labels']['scheme']}), body contour from "
                      f"{conv['body_contour']}")


# --------------------------------------------------------------------------- simulate
@app.command("simulate")
def simulate_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="Label map (NIfTI file or TotalSegmentator folder).")],
    out: Annotated[Path, typer.Option("--out", help="Prior image (.nii.gz, float32); a .json sidecar is written beside it.")],
    sequence: Annotated[str, typer.Option("--sequence", help="ct|gre|vibe-in|vibe-opp|dixon-water|dixon-fat|space|flair|mprage|t1ce")] = "ct",
    field: Annotated[Optional[float], typer.Option("--field", help="Field strength in tesla (1.5 or 3).")] = None,
    tr: Annotated[Optional[float], typer.Option("--tr", help="Repetition time, ms.")] = None,
    te: Annotated[Optional[float], typer.Option("--te", help="Echo time, ms.")] = None,
    ti: Annotated[Optional[float], typer.Option("--ti", help="Inversion time, ms.")] = None,
    flip: Annotated[Optional[float], typer.Option("--flip", help="Flip angle, degrees.")] = None,
    contrast_phase: Annotated[Optional[str], typer.Option("--contrast-phase", help="CT: native | arterial | portal-venous (iodinated contrast enhancement per tissue; default native).")] = None,
    gd_dose: Annotated[Optional[float], typer.Option("--gd-dose", help="MR gre/mprage/t1ce: gadolinium dose x the standard 0.1 mmol/kg (t1ce: 1, the others: 0).")] = None,
    agent: Annotated[Optional[str], typer.Option("--agent", help="Gadolinium agent (its r1 at the field strength): gadobutrol | gadoterate.")] = None,
    tissues: Annotated[Optional[Path], typer.Option("--tissues", help="Tissue property YAML overriding the defaults.")] = None,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme of the input (name or YAML; default: the one its class names belong to, else total).")] = None,
    tissue_masks: Annotated[Optional[Path], typer.Option("--tissue-masks", help="TotalSegmentator tissue_types output.")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="Image for the body contour.")] = None,
    modality: Annotated[Optional[str], typer.Option("--modality", help="Modality of --image: ct or mr.")] = None,
    body: Annotated[Optional[Path], typer.Option("--body", help="Body contour: a mask, or TotalSegmentator --task body / body_mr output (file or folder).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the randomised prior.")] = None,
    tissue_spread: Annotated[float, typer.Option("--tissue-spread", help="Per-tissue parameter jitter (x table spread).")] = 0.0,
    bias_field: Annotated[float, typer.Option("--bias-field", help="Smooth multiplicative bias amplitude.")] = 0.0,
    noise: Annotated[float, typer.Option("--noise", help="Additive Gaussian noise sd.")] = 0.0,
    blur: Annotated[float, typer.Option("--blur", help="Partial-volume blur sigma, mm.")] = 0.0,
    strict: Annotated[bool, typer.Option("--strict", help="Unknown label ids are an error.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Label map -> physics prior image (CT HU or MR signal)."""
    from seg2med import api

    inputs = [labels, tissues, scheme, tissue_masks, image, body]
    api.check_volume_outputs(out, overwrite, inputs)
    prior = api.simulate_prior(
        labels, sequence, field=field, tr=tr, te=te, ti=ti, flip=flip, contrast_phase=contrast_phase, gd_dose=gd_dose,
        agent=agent, tissues=tissues, scheme=scheme,
        tissue_masks=tissue_masks, image=image, modality=modality, body=body, seed=seed, tissue_spread=tissue_spread,
        bias_field=bias_field, noise=noise, blur=blur, strict=strict,
    )
    api.save_prior(prior, out, overwrite=overwrite, inputs=inputs)
    out_console.print(f"wrote {out} ({prior.volume.shape}, {prior.metadata['units']}; scheme {prior.metadata['scheme']}, "
                      f"body contour from {prior.metadata['body_contour']})")


# --------------------------------------------------------------------------- phantom
@app.command("phantom")
def phantom_cmd(
    out: Annotated[Path, typer.Option("--out", help="Label volume (.nii.gz); a .json label table is written beside it.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    spacing: Annotated[float, typer.Option("--spacing", help="In-plane and slice spacing, mm.")] = 1.5,
    slices: Annotated[int, typer.Option("--slices")] = 64,
    size: Annotated[int, typer.Option("--size", help="In-plane matrix size.")] = 256,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """A procedural digital torso phantom in the TotalSegmentator 'total' scheme."""
    from seg2med import api

    api.check_volume_outputs(out, overwrite)
    lv = api.make_phantom(seed=seed, spacing=spacing, slices=slices, size=size)
    api.save_label_volume(lv, out, overwrite=overwrite)
    out_console.print(f"wrote {out} {lv.volume.shape}")


# --------------------------------------------------------------------------- prepare
@app.command("prepare")
def prepare_cmd(
    out: Annotated[Path, typer.Option("--out", help="Dataset folder (shards + manifest.json).")],
    images: Annotated[Optional[list[str]], typer.Option("--images", help="Image files or a folder (repeat or comma-separate).")] = None,
    labels: Annotated[Optional[list[str]], typer.Option("--labels", help="Label files or a folder, paired with --images.")] = None,
    brats: Annotated[Optional[Path], typer.Option("--brats", help="A folder of BraTS cases (one folder per case: _t1, _t1ce, _t2, _flair, _seg; or 2023's -t1n, -t1c, -t2w, -t2f, -seg): the four-contrast dataset of the brain system (priors T1 mprage, T1ce, T2 TSE, FLAIR; masks over the skull-stripped brain).")] = None,
    sequence: Annotated[str, typer.Option("--sequence", help="Prior sequence (ct for CT data, e.g. vibe-in for MR).")] = "ct",
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme (default total for CT, total_mr for MR).")] = None,
    tissue_masks: Annotated[Optional[list[str]], typer.Option("--tissue-masks", help="Tissue-type masks per subject.")] = None,
    tissues: Annotated[Optional[Path], typer.Option("--tissues", help="Tissue property YAML.")] = None,
    field: Annotated[Optional[float], typer.Option("--field")] = None,
    axes: Annotated[str, typer.Option("--axes", help="Comma-separated: axial,coronal,sagittal.")] = "axial",
    spacing: Annotated[float, typer.Option("--spacing", help="In-plane spacing, mm.")] = 1.0,
    size: Annotated[int, typer.Option("--size", help="Slice size after pad/crop.")] = 256,
    percentiles: Annotated[str, typer.Option("--percentiles", help="MR window percentiles, e.g. 10,90 or 1,99.")] = "10,90",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the subject split.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Real images + label maps -> priors -> normalised slice dataset with a manifest (--brats: four contrasts)."""
    from seg2med import api
    from seg2med.errors import ConfigError

    try:
        p_lo, p_hi = (float(v) for v in percentiles.split(","))
    except ValueError:
        raise ConfigError(f"--percentiles: expected two numbers like 10,90, got {percentiles!r}") from None
    ax = [a.strip() for a in axes.split(",") if a.strip()]
    if brats is not None:
        if images or labels or sequence != "ct" or tissue_masks or tissues or field is not None:
            raise ConfigError("--brats prepares the four BraTS contrasts from its case folders: --images, --labels, "
                              "--sequence, --tissue-masks, --tissues and --field do not apply")
        with _bar(SpinnerColumn(), TextColumn("{task.description}")) as prog:
            task = prog.add_task("prepare", total=None)
            manifest = api.prepare_brats(brats, out, scheme=scheme, axes=ax, spacing=spacing, size=size,
                                         mr_percentiles=(p_lo, p_hi), seed=seed, overwrite=overwrite,
                                         progress=lambda msg: prog.update(task, description=f"prepare {msg}"))
        out_console.print(f"wrote {out} ({len(manifest.get('subjects', []))} cases, four contrasts)")
        return
    if not images or not labels:
        raise ConfigError("prepare needs --images and --labels (or --brats FOLDER)")
    n = len(api.expand_paths(images))
    with _progress(2 * n, "prepare") as advance:  # one step for the prior, one for the slices
        manifest = api.prepare_dataset(
            images, labels, out, sequence=sequence, scheme=scheme, tissue_masks=tissue_masks, tissues=tissues,
            field=field, axes=ax, spacing=spacing, size=size,
            mr_percentiles=(p_lo, p_hi), seed=seed, overwrite=overwrite, progress=advance,
        )
    out_console.print(f"wrote {out} ({len(manifest.get('subjects', []))} subjects)")


# --------------------------------------------------------------------------- demo
@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-out"),
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Use this label map instead of the phantom.")] = None,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme of --labels (default: the one its class names belong to, else total).")] = None,
    tissue_masks: Annotated[Optional[Path], typer.Option("--tissue-masks", help="TotalSegmentator tissue_types output for --labels.")] = None,
    body: Annotated[Optional[Path], typer.Option("--body", help="Body contour for --labels: a mask, or TotalSegmentator --task body / body_mr output.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steps: Annotated[int, typer.Option("--steps", help="DDIM steps of the synthesis (quality vs steps: benchmarks/results/sampling-cpu.md).")] = 10,
    no_synthesis: Annotated[bool, typer.Option("--priors-only", help="Only simulate the priors.")] = False,
    convert: Annotated[bool, typer.Option("--convert", help="Also convert the synthetic CT to MR, image to image (seg2med convert with mr-demo).")] = False,
    brain: Annotated[bool, typer.Option("--brain", help="Also a brain phantom with a random tumour and its T1, T1ce, T2 and FLAIR (brain-demo).")] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16 (CUDA only), as for generate.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Run the embedded demo: one anatomy -> CT and MR priors -> synthetic CT and MR -> NIfTI + PNG previews in OUT."""
    from seg2med import api
    from seg2med.inference import list_models

    models = set(list_models())
    shipped = {"ct-demo", "mr-demo"} & models
    n = 3 + (0 if no_synthesis else len(shipped) + int(convert and len(shipped) == 2)
             + int(brain and api.BRAIN_DEMO in models))
    with _progress(n, "demo") as advance:
        written = api.run_demo(out, labels=labels, scheme=scheme, tissue_masks=tissue_masks, body=body, seed=seed,
                               steps=steps, synthesize=not no_synthesis, convert_ct=convert, brain=brain,
                               device=device, precision=precision, overwrite=overwrite, progress=advance)
    for name, path in written.items():
        out_console.print(f"{name}: {path}")


# --------------------------------------------------------------------------- generate
@app.command("generate")
def generate_cmd(
    labels: Annotated[Path, typer.Option("--labels", help="Label map (NIfTI file or TotalSegmentator folder).")],
    out: Annotated[Path, typer.Option("--out", help="Synthetic volume (.nii.gz); a .json sidecar is written beside it. A multi-contrast model (brain): a folder that receives one file per contrast (or S.nii.gz: S_t1.nii.gz ...).")],
    sequence: Annotated[Optional[str], typer.Option("--sequence", help="Must match the model's sequence (checked).")] = None,
    model: Annotated[str, typer.Option("--model", help="Run folder or shipped model name (e.g. ct-demo, mr-demo).")] = "ct-demo",
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps (quality vs steps and solvers: benchmarks/results/sampling-cpu.md).")] = DEFAULT_STEPS,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="ddim | ddpm | dpm++ | rflow (default: rflow for an rflow-trained model, else ddim).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    strength: Annotated[float, typer.Option("--strength", help="Prior-anchored start (SDEdit): start from the prior noised to this fraction of the schedule and run only that fraction of --steps; 1 = pure noise (curves: benchmarks/results/).")] = 1.0,
    anchor_scale: Annotated[Optional[float], typer.Option("--anchor-scale", help="Prior-consistency guidance: at every step keep the image's coarse intensities (Gaussian low-pass of this sigma, mm) on the prior's; 0 = off (default: the model's, config.json sampling).")] = None,
    anchor_tolerance: Annotated[Optional[float], typer.Option("--anchor-tolerance", help="With --anchor-scale: coarse departures from the prior up to this much (HU for CT, normalised units for MR) are left to the model (default: the model's).")] = None,
    fov_margin: Annotated[Optional[float], typer.Option("--fov-margin", help="Where the body reaches the edge of the field of view, continue the prior this far (mm) so that no body outline is drawn there; 0 = off (default: the model's).")] = None,
    tri_planar: Annotated[Optional[bool], typer.Option("--tri-planar/--single-plane", help="Tri-planar sampling: denoise the whole volume along another axis (axial, coronal, sagittal) at each step, so the output is consistent in 3D; --single-plane: slice by slice along --axis (default: the model's).")] = None,
    slice_noise: Annotated[Optional[str], typer.Option("--slice-noise", help="independent | correlated: neighbouring slices start from correlated noise (--slice-correlation), so they follow nearby trajectories | shared: every slice from the same noise (slice-by-slice sampling only; measured in benchmarks/results/). Default: the model's (config.json sampling), else independent.")] = None,
    slice_correlation: Annotated[float, typer.Option("--slice-correlation", help="With --slice-noise correlated: correlation in [0, 1] of the start noise of two slices one model spacing apart (thinner slices correlate more).")] = DEFAULT_SLICE_CORRELATION,
    contrast_phase: Annotated[Optional[str], typer.Option("--contrast-phase", help="CT models: simulate the prior in this phase (native | arterial | portal-venous) instead of the model's.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="K samples; K > 1 also writes a std map.")] = 1,
    batch: Annotated[int, typer.Option("--batch", help="Slices per forward pass (bounds memory).")] = 8,
    axis: Annotated[Optional[str], typer.Option("--axis", help="Slicing axis: axial, coronal or sagittal (default: the model's training axis).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16 (CUDA only): the network under autocast; auto = bf16 on a GPU or a CPU that accelerates it (AMX / AVX512-BF16), else fp32 (speed and agreement: benchmarks/results/).")] = "auto",
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="Label scheme of the input (default: the one its class names belong to, else the model's).")] = None,
    tissue_masks: Annotated[Optional[Path], typer.Option("--tissue-masks", help="TotalSegmentator tissue_types output.")] = None,
    body: Annotated[Optional[Path], typer.Option("--body", help="Body contour: a mask, or TotalSegmentator --task body / body_mr output (file or folder).")] = None,
    tissues: Annotated[Optional[Path], typer.Option("--tissues", help="Tissue property YAML.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Unknown label ids are an error.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Label map -> physics prior -> conditional diffusion -> synthetic CT / MR volume on the input grid."""
    from seg2med import api

    inputs = [labels, model, tissue_masks, body, tissues, scheme]
    api.check_volume_outputs(out, overwrite, inputs, samples, api.model_contrasts(model))  # before minutes of sampling
    with _bar(SpinnerColumn(), TextColumn("generate"), BarColumn(), TextColumn("{task.percentage:>3.0f}%")) as prog:
        task = prog.add_task("generate", total=1.0)
        result = api.generate(
            labels, sequence, model=model, steps=steps, sampler=sampler, seed=seed, samples=samples, batch=batch,
            axis=axis, device=device, precision=precision, strength=strength, anchor_scale=anchor_scale,
            anchor_tolerance=anchor_tolerance, fov_margin=fov_margin, tri_planar=tri_planar, slice_noise=slice_noise,
            slice_correlation=slice_correlation, contrast_phase=contrast_phase,
            scheme=scheme, tissue_masks=tissue_masks, body=body,
            tissues=tissues, strict=strict,
            progress=lambda i, n: prog.update(task, completed=i / n),
        )
    print_crosswalk(result.metadata.get("crosswalk"))
    written = api.save_generated(result, out, overwrite=overwrite, inputs=inputs)
    meta = result.metadata
    out_console.print(f"wrote {', '.join(str(p) for p in written.values())} ({meta['seconds']} s; scheme {meta['scheme']}, "
                      f"body contour from {meta['body_contour']})")


# --------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option("--data", help="Prepared slice dataset (seg2med prepare).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config.json, weights, checkpoints, val PNGs, log.csv.")],
    method: Annotated[Optional[str], typer.Option("--method", help=f"{methods_help()} (default: YAML method:, the resumed run's, else {DEFAULT_METHOD}).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model size: paper | small | tiny (default small).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML with model:, scheduler:, training: blocks.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Total optimisation steps.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Global batch size (split over torchrun processes).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    prediction: Annotated[Optional[str], typer.Option("--prediction", help="epsilon | v | sample.")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="ddpm | rflow.")] = None,
    beta_schedule: Annotated[Optional[str], typer.Option("--beta-schedule", help="linear | scaled_linear.")] = None,
    neighbours: Annotated[Optional[int], typer.Option("--neighbours", help="2.5D: +-K neighbouring prior slices.")] = None,
    residual: Annotated[Optional[bool], typer.Option("--residual/--no-residual", help="ddpm: diffuse the image minus the prior (the prior is added back after sampling).")] = None,
    ckpt_every: Annotated[Optional[int], typer.Option("--ckpt-every", help="Checkpoint every N steps (0: at the end).")] = None,
    val_every: Annotated[Optional[int], typer.Option("--val-every", help="Validation PNG every N steps (0: never).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="auto | fp32 | bf16 | fp16.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in --out.")] = False,
    init_from: Annotated[Optional[str], typer.Option("--init-from", help="Start the network from the EMA weights of this run folder or shipped model (same network and scheduler; fewer --neighbours are inflated: a 2D model starts a 2.5D one). Recorded in config.json.")] = None,
    augment: Annotated[Optional[str], typer.Option("--augment", help="Augmentation preset: robust (prior re-simulated from the labels with tissue spread, bias, noise, blur and class dropout; zoom, rotation, shift, inside-the-body views; flips) | none. The YAML training: block overrides its values.")] = None,
) -> None:
    """Train prior -> image: the diffusion model (also under torchrun --nproc_per_node=N -m seg2med train) or a baseline (--method)."""
    import os

    from seg2med.errors import ConfigError
    from seg2med.inference.generate import resolve_model
    from seg2med.io.checkpoints import CONFIG, read_checkpoint_config
    from seg2med.training import read_config_file, train_method

    names = {"prediction": {"epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction", "sample": "sample"},
             "beta_schedule": {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta",
                               "linear_beta": "linear_beta", "scaled_linear_beta": "scaled_linear_beta"}}
    for opt, value in (("prediction", prediction), ("beta_schedule", beta_schedule)):
        if value is not None and value not in names[opt]:
            raise ConfigError(f"--{opt.replace('_', '-')}: unknown value {value!r} (known: {', '.join(names[opt])})")

    def given(**kw: object) -> dict[str, object]:
        return {k: v for k, v in kw.items() if v is not None}

    base = read_checkpoint_config(out) if resume and (out / CONFIG).is_file() else None
    blocks = read_config_file(config, method, preset=preset, base=base) if config is not None else None
    summary = train_method(
        method, data, out, preset=preset, blocks=blocks, model=given(neighbours=neighbours, residual=residual),
        scheduler=given(kind=scheduler, prediction_type=names["prediction"].get(prediction or ""),
                        schedule=names["beta_schedule"].get(beta_schedule or "")),
        training=given(steps=steps, batch=batch, lr=lr, seed=seed, ckpt_every=ckpt_every, val_every=val_every,
                       precision=precision, device=device,
                       init_from=None if init_from is None else str(resolve_model(init_from))),
        base=base, augment=augment, resume=resume, overwrite=overwrite,
    )
    if os.environ.get("RANK", "0") == "0":
        loss, val = (("-" if v is None else f"{v:.4f}") for v in (summary["final_loss"], summary["val_loss"]))
        out_console.print(f"{out}: step {summary['step']}, loss {loss}, val loss {val}")


# --------------------------------------------------------------------------- train-segmenter
@app.command("train-segmenter")
def train_segmenter_cmd(
    data: Annotated[Path, typer.Option("--data", help="Prepared slice dataset with stored labels (seg2med prepare).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config.json, model.safetensors, checkpoints, log.csv.")],
    steps: Annotated[int, typer.Option("--steps", help="Total optimisation steps.")] = 2000,
    batch: Annotated[int, typer.Option("--batch", help="Slices per step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ckpt_every: Annotated[int, typer.Option("--ckpt-every", help="Checkpoint every N steps (0: at the end).")] = 500,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="resnet10 | resnet18 | resnet34 | resnet50: a U-Net with that ResNet encoder (MONAI FlexibleUNet, randomly initialised; default: the plain MONAI UNet).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in --out.")] = False,
) -> None:
    """Train the auxiliary 2D segmenter (MONAI UNet, DiceCE) on real image slices -> labels, for Dice / Fréchet-Seg.
    A multi-contrast dataset (the brain's four contrasts) gives it one input channel per contrast."""
    from seg2med.training import train_segmenter
    from seg2med.training.segmenter import SegmenterConfig, default_train_config

    cfg = default_train_config(steps=steps, batch=batch, lr=lr, seed=seed, ckpt_every=ckpt_every, val_every=ckpt_every,
                               device=device)
    summary = train_segmenter(data, out, net_cfg=SegmenterConfig(backbone=backbone), train_cfg=cfg, resume=resume,
                              overwrite=overwrite)
    loss, val = (("-" if v is None else f"{v:.4f}") for v in (summary["final_loss"], summary["val_loss"]))
    out_console.print(f"{out}: step {summary['step']}, {len(summary['classes'])} classes, loss {loss}, val loss {val}")


# --------------------------------------------------------------------------- evaluate
@app.command("evaluate")
def evaluate_cmd(
    pred: Annotated[list[str], typer.Option("--pred", help="Synthetic volume(s): file or folder, NAME=PATH for several methods (repeat).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: per_subject.csv, summary.json, report.html, figures/.")],
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Real volume (file) or folder of them (paired by file name); with --unpaired a reference set (any patient, any grid).")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Label map(s): body mask and Dice reference; with --unpaired the maps the outputs were made from.")] = None,
    unpaired: Annotated[bool, typer.Option("--unpaired", help="No same-patient real image: per-organ check, re-segmentation Dice vs --labels, Fréchet distances to --ref.")] = False,
    brain: Annotated[bool, typer.Option("--brain", help="Four-contrast brain outputs (--pred: a folder of t1/t1ce/t2/flair.nii.gz): the segmenter's Dice per BraTS region vs --labels beside its Dice on the real images (--ref: a folder of the same contrasts), SSIM / PSNR per contrast inside the brain.")] = False,
    ref_labels: Annotated[Optional[Path], typer.Option("--ref-labels", help="--unpaired: label maps of the --ref volumes (the segmenter's Dice on real images).")] = None,
    sequence: Annotated[Optional[str], typer.Option("--sequence", help="--unpaired, MR: the sequence of the tissue-order check (default: the outputs' sidecars).")] = None,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="--unpaired: label scheme of --labels / --ref-labels (default: detected).")] = None,
    tissues: Annotated[Optional[Path], typer.Option("--tissues", help="--unpaired: tissue table of the per-organ ranges (default: built-in).")] = None,
    mask: Annotated[str, typer.Option("--mask", help="body | none | mask file/folder.")] = "body",
    prior: Annotated[Optional[Path], typer.Option("--prior", help="Prior volume(s) for the qualitative figure.")] = None,
    modality: Annotated[str, typer.Option("--modality", help="auto | ct | mr.")] = "auto",
    segmenter: Annotated[Optional[str], typer.Option("--segmenter", help="train-segmenter run (Dice/HD95, Fréchet-Seg) or 'totalsegmentator' (installed with weights).")] = None,
    fid_weights: Annotated[Optional[Path], typer.Option("--fid-weights", help="Local Inception-v3 FID weights (or $SEG2MED_FID_WEIGHTS).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Compare synthetic with real volumes: SSIM (axial, coronal, sagittal), MS-SSIM, PSNR, MAE, HistCC, FSIM, roughness
    across and within slices (+ Dice, FID) and an HTML report. --unpaired: without a same-patient real image."""
    from seg2med import api
    from seg2med.errors import ConfigError

    if brain:
        if unpaired or labels is None:
            raise ConfigError("--brain takes one --pred folder and its --labels (and not --unpaired)")
        written = api.evaluate_brain(pred, labels, out, ref=ref, segmenter=segmenter, scheme=scheme,
                                     overwrite=overwrite)
        summary = json.loads(written["summary"].read_text())
        fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731  (None: not scored / absent from both)
        for region, v in summary["regions"].items():
            out_console.print(f"{region}: Dice {fmt(v['synthetic'])} synthetic, {fmt(v['real'])} real")
        for c, v in summary["contrasts"].items():
            psnr = "inf" if v["psnr"] is None else f"{v['psnr']:.2f}"  # JSON holds no inf: identical images
            out_console.print(f"{c}: SSIM {v['ssim']:.3f}, PSNR {psnr} dB")
        out_console.print(f"wrote {written['summary']} ({written['regions'].name}, {written['contrasts'].name})")
        return
    if unpaired:
        if labels is None:
            raise ConfigError("--unpaired needs --labels: the label map(s) the outputs were made from")
        with _bar(SpinnerColumn(), TextColumn("{task.description}")) as prog:
            task = prog.add_task("evaluate", total=None)
            written = api.evaluate_unpaired(pred, labels, out, ref=ref, ref_labels=ref_labels, modality=modality,
                                            sequence=sequence, scheme=scheme, segmenter=segmenter, tissues=tissues,
                                            fid_weights=fid_weights, overwrite=overwrite,
                                            progress=lambda msg: prog.update(task, description=f"evaluate {msg}"))
        _print_unpaired(written["summary"])
        out_console.print(f"wrote {written['html']} ({written['csv'].name}, {written['summary'].name})")
        return
    if ref is None:
        raise ConfigError("--ref is needed: the real volume(s) to compare with (or --unpaired when there is none)")
    for name, value in (("--ref-labels", ref_labels), ("--sequence", sequence), ("--scheme", scheme), ("--tissues", tissues)):
        if value is not None:
            raise ConfigError(f"{name} applies to --unpaired only")
    with _bar(SpinnerColumn(), TextColumn("{task.description}")) as prog:
        task = prog.add_task("evaluate", total=None)
        written = api.evaluate(pred, ref, out, labels=labels, mask=mask if mask in ("body", "none") else Path(mask), prior=prior,
                               modality=modality, segmenter=segmenter, fid_weights=fid_weights, overwrite=overwrite,
                               progress=lambda msg: prog.update(task, description=f"evaluate {msg}"))
    out_console.print(f"wrote {written['html']} ({written['csv'].name}, {written['summary'].name})")


def _print_unpaired(summary_path: Path) -> None:
    """One line per method (and the segmenter on real images) of an evaluation without ground truth."""
    from seg2med.io.files import read_json

    summary = read_json(summary_path)
    check = "in tissue order" if summary["modality"] == "mr" else "in HU range"

    def reseg(r: dict) -> str:
        counts = " / ".join(f"{r[f'classes_dice_above_{t:g}']}" for t in summary["dice_counts"])
        above = " / ".join(f"> {t:g}" for t in summary["dice_counts"])
        return f"Dice {r['dice']['mean']:.3f} over {r['classes']} classes ({counts} with mean Dice {above})"

    for method, e in summary["methods"].items():
        parts = [f"organs {check}: {e['organs_checked'] - e['organs_failed']} of {e['organs_checked']}"]
        if "resegmentation" in e and e["resegmentation"]["classes"]:
            parts.append(reseg(e["resegmentation"]))
        if "frechet_seg" in e:
            parts.append(f"Fréchet-Seg {e['frechet_seg']['value']:.3f}")
        out_console.print(f"{method}: " + "; ".join(parts), highlight=False)
    if summary["real_image"] is not None and summary["real_image"]["classes"]:
        out_console.print(f"segmenter on real images: {reseg(summary['real_image'])}", highlight=False)


# --------------------------------------------------------------------------- benchmark
@app.command("benchmark")
def benchmark_cmd(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset (seg2med prepare) with train and test splits.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: runs/, test/, report/, benchmark.md, benchmark.json.")],
    methods: Annotated[str, typer.Option("--methods", help=f"Comma-separated: {','.join(GENERATORS)}.")] = ",".join(GENERATORS),
    budget: Annotated[float, typer.Option("--budget", help="Training minutes per method (same for all).")] = 10.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Step cap per method.")] = 100_000,
    preset: Annotated[str, typer.Option("--preset", help="Network size for every method: tiny | small | paper.")] = "tiny",
    batch: Annotated[int, typer.Option("--batch")] = 8,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    sample_steps: Annotated[int, typer.Option("--sample-steps", help="DDIM steps of the diffusion model.")] = 20,
    segmenter: Annotated[Optional[Path], typer.Option("--segmenter", help="Existing train-segmenter run for Dice / Fréchet-Seg.")] = None,
    segmenter_budget: Annotated[float, typer.Option("--segmenter-budget", help="Minutes to train a segmenter here (0: none).")] = 0.0,
    fid_weights: Annotated[Optional[Path], typer.Option("--fid-weights", help="Local Inception-v3 FID weights (or $SEG2MED_FID_WEIGHTS).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Train every method for the same time budget, generate the test split, evaluate: a paper-Table-II-style comparison."""
    from seg2med import api

    names = [m.strip() for m in methods.split(",") if m.strip()]
    with _bar(SpinnerColumn(), TextColumn("{task.description}")) as prog:
        task = prog.add_task("benchmark", total=None)
        result = api.benchmark(data, out, methods=names, budget_minutes=budget, max_steps=max_steps, preset=preset, batch=batch,
                               seed=seed, sample_steps=sample_steps, segmenter=segmenter, segmenter_minutes=segmenter_budget,
                               fid_weights=fid_weights, device=device, overwrite=overwrite,
                               progress=lambda msg: prog.update(task, description=f"benchmark: {msg}"))
    out_console.print((out / "benchmark.md").read_text())
    out_console.print(f"report: {out / 'report' / 'report.html'} ({result['seconds']:.0f} s)")


_ATOMIC = "outputs are written atomically: any output file present is complete, none is half-written"
INTERRUPTED, TERMINATED = f"interrupted ({_ATOMIC})", f"terminated ({_ATOMIC})"


def main() -> None:
    """Console-script entry point: one-line errors, no traceback, exit code != 0.

    Usage errors (unknown option, missing or malformed value) are one ``error:`` line too, not click's
    usage block; SIGTERM ends like Ctrl-C (atomic outputs leave nothing half-written), with exit 143.
    """
    clear_interrupt()
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    try:
        _run()
    finally:  # for callers that run main() in-process (tests)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.default_int_handler)


def _run() -> None:
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into a silent exit 130 when it does not exit itself
            _error(INTERRUPTED, 130)
        sys.exit(code if isinstance(code, int) else 0)
    except NoArgsIsHelpError as exc:  # `seg2med` alone: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "seg2med"
        _error(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
    except ClickException as exc:
        _error(exc.format_message(), exc.exit_code)
    except Terminated:
        _error(TERMINATED, 143)
    except KeyboardInterrupt:  # SIGINT / Ctrl-C: outputs are written atomically, so nothing half-written is left
        _error(INTERRUPTED, 130)
    except (Seg2MedError, OSError, MemoryError) as exc:
        if interrupt_seen():  # a library turned the KeyboardInterrupt into its own error (safetensors: "corrupt file")
            _error(INTERRUPTED, 130)
        if isinstance(exc, Seg2MedError):
            _error(str(exc), exc.exit_code)
        if isinstance(exc, OSError):  # read-only folder, full disk, too many open files...: the system's reason
            where = f"{exc.filename}: " if exc.filename else ""
            _error(f"{where}{exc.strerror or exc}", 1)
        _error("out of memory (lower --batch / the volume size, or set $SEG2MED_MEMORY_GB to refuse such jobs up front)", 1)
    except Exception:  # not one of ours: a traceback, as before, unless it is a Ctrl-C in disguise
        if interrupt_seen():
            _error(INTERRUPTED, 130)
        raise


def _in_import(frame: object) -> bool:
    """Whether ``frame`` (the interrupted one) runs inside an import (an importlib frame below it)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: KeyboardInterrupt as Python's own handler raises it, remembered (:func:`note_interrupt`),
    because a library can swallow it or turn it into its own error (safetensors' loader: a TypeError). Inside a
    library's lazy import (torch, MONAI: the first command that needs them) it exits at once instead, as the start-up
    handler does: raised there it can be swallowed by the library's ``except:`` or abort the interpreter (torch's
    pybind11 code: "terminate called after throwing"); no output is being written while a library imports."""
    note_interrupt()
    if _in_import(frame):
        import os

        os.write(2, f"error: {INTERRUPTED}\n".encode())
        os._exit(130)
    raise KeyboardInterrupt


class Terminated(BaseException):
    """SIGTERM, raised where the program is (like KeyboardInterrupt for SIGINT), so that cleanup runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _error(message: str, code: int) -> None:
    console.print(f"[bold red]error:[/] {' '.join(message.split())}", highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()

"""Typed Python API. The CLI only parses arguments and calls these functions.

Typical use::

    import seg2med
    lv = seg2med.build_anatomy("seg.nii.gz", tissue_masks="tissue_types/", body="body/")  # TotalSegmentator outputs
    prior = seg2med.simulate_prior(lv, sequence="vibe-in", field=1.5)
    seg2med.save_prior(prior, "prior.nii.gz")
    result = seg2med.generate(lv, model="ct-demo", seed=0)  # .samples[0]: the synthetic CT (HU)
    seg2med.save_generated(result, "synthetic_ct.nii.gz")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seg2med.anatomy import LabelVolume, build_label_volume
from seg2med.anatomy import inputs as label_inputs
from seg2med.anatomy.inputs import resolve_scheme
from seg2med.checks import check_optional_seed, check_seed
from seg2med.errors import ConfigError, InputError
from seg2med.io import Volume, load_volume, read_yaml, save_volume, write_json
from seg2med.io.nifti import is_nifti_path, list_nifti, nifti_stem, sidecar_path
from seg2med.io.outputs import atomic_outputs, check_output_dir, check_output_file
from seg2med.io.sidecars import (
    GENERATED_KIND,
    check_volume_outputs,
    describe_set,
    generated_paths,
    generated_provenance,
    label_table,
    prior_sidecar,
)
from seg2med.labels import LabelScheme, canonical_scheme
from seg2med.models.registry import DEFAULT_SLICE_CORRELATION, DEFAULT_STEPS, GENERATORS

if TYPE_CHECKING:
    from seg2med.inference.generate import LoadedModel
    from seg2med.physics import ImagingSequence

log = logging.getLogger(__name__)

LabelsLike = str | Path | Volume


# --------------------------------------------------------------------------- tissue tables
def load_tissue_table(path: str | Path | None = None):
    """The default tissue property table, or the defaults overridden by a user YAML file."""
    from seg2med.labels.tissues import load_default_tissue_table, tissue_table_from_mapping

    if path is None:
        return load_default_tissue_table()
    data = read_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a tissue table must be a YAML mapping")
    return tissue_table_from_mapping(data, str(path), base=load_default_tissue_table())


# --------------------------------------------------------------------------- anatomy
def build_anatomy(
    labels: LabelsLike | Mapping[str, Volume],
    *,
    scheme: str | LabelScheme | None = None,
    tissue_masks: str | Path | Volume | Mapping[str, Volume] | None = None,
    image: str | Path | Volume | None = None,
    modality: str | None = None,
    body: str | Path | Volume | None = None,
    strict: bool = False,
    default_scheme: str = "total",
) -> LabelVolume:
    """One canonical label volume from TotalSegmentator output (file or per-class folder).

    The label scheme is ``scheme`` when given; otherwise the built-in scheme the class names belong
    to, for a multilabel file carrying its own label table (TotalSegmentator ``--ml``) or a per-class
    mask folder (``default_scheme`` on ties); otherwise ``default_scheme``. A file's own label table
    always decides which id is which class.

    The body contour comes from ``body`` (a mask file or TotalSegmentator's ``--task body``
    folder), else from ``image`` (CT or MR of the same grid, with its ``modality``), else from the
    labels (and tissue masks). Label files written by seg2med (with a ``.json`` label table beside
    them) are already canonical and are returned as they are.
    """
    ready = label_inputs.read_seg2med_labels(labels, scheme=scheme, strict=strict, tissue_masks=tissue_masks,
                                             image=image, body=body)
    if ready is not None:
        return ready
    organs = label_inputs.read_organs(labels)
    base, guessed = label_inputs.organ_scheme(organs, scheme, default=default_scheme)
    if guessed is not None:
        log.info("%s: its class names are those of scheme %r", label_inputs.source_name(organs, labels), guessed)
    tissues = label_inputs.read_tissues(tissue_masks)
    img = label_inputs.read_contour_image(image, modality)
    if img is not None:  # its threshold would be the body contour: a label map or another modality gives a wrong one
        from seg2med.data.intensity import check_fits_modality, check_is_image

        check_is_image(img, Path(img.name), "--image")
        check_fits_modality(img, Path(img.name), "--image", str(modality).lower(), f"--modality {modality}")
    body_mask = label_inputs.read_body(body)
    vol, report = build_label_volume(organs, base, tissues=tissues, image=img, modality=modality, body=body_mask,
                                     strict=strict)
    return LabelVolume(vol, canonical_scheme(base), report.to_dict())


def save_label_volume(lv: LabelVolume, path: str | Path, overwrite: bool = False, inputs: Sequence[Any] = ()) -> Path:
    """Write the label NIfTI and its JSON label table (``name.json``) beside it, as one atomic pair.

    ``overwrite`` replaces only files seg2med wrote, never one of ``inputs`` (:mod:`seg2med.io.outputs`).
    """
    out = Path(path)
    with atomic_outputs([out, sidecar_path(out)], overwrite, inputs) as (tmp_img, tmp_side):
        save_volume(lv.volume, tmp_img)
        write_json(tmp_side, describe_set(label_table(lv.scheme, lv.report), {out.name: tmp_img}))
    return out


def edit_lesion(
    labels: str | Path | Volume,
    *,
    scheme: str | None = None,
    brain: str | Path | Volume | None = None,
    insert: bool = False,
    centre_mm: Sequence[float] | None = None,
    radius: float | None = None,
    edema: float | None = None,
    core_fraction: float | None = None,
    move_mm: Sequence[float] | None = None,
    scale: float | None = None,
    seed: int = 0,
) -> LabelVolume:
    """A brain label map with a tumour inserted (``insert``: at ``centre_mm``, RAS+ millimetres, or at a random place
    deep in the brain; ``radius`` / ``edema`` mm and ``core_fraction`` fixed or drawn, seeded), the existing tumour
    moved by ``move_mm`` or scaled by ``scale`` (:mod:`seg2med.anatomy.lesion`). The map is read in ``scheme``
    (default ``brats_medddpm``; another brain-tumour scheme is put over ``brain``, a mask on its grid; in an ``aseg`` /
    ``aseg_tumor`` map a random tumour is centred in cerebral white matter, as gliomas arise). The result is in
    ``brats_medddpm`` on the input grid; its report records the edit and the compartment volumes (mL) before and
    after."""
    from seg2med.anatomy import check_known_ids
    from seg2med.anatomy.brain import BRAIN_SCHEME, brain_label_map
    from seg2med.anatomy.lesion import (compartment_volumes, insert_tumour, move_tumour, sample_tumour,
                                        scale_tumour)
    from seg2med.labels import get_scheme

    seed = check_seed(seed)
    edits = [name for name, on in (("--insert", insert), ("--move", move_mm is not None), ("--scale", scale is not None))
             if on]
    if len(edits) != 1:
        raise ConfigError(f"lesion: give one edit (--insert, --move or --scale), got {', '.join(edits) or 'none'}")
    if not insert and any(v is not None for v in (centre_mm, radius, edema, core_fraction)):
        raise ConfigError("lesion: --centre, --radius, --edema and --core-fraction go with --insert")
    vol = labels if isinstance(labels, Volume) else load_volume(labels, kind="labels")
    name = scheme or BRAIN_SCHEME
    white = None  # the cerebral white matter of an aseg / aseg_tumor map (None: none): a random tumour starts in it
    if name in ("aseg", "aseg_tumor"):
        wm_ids = [i for n, i in get_scheme(name).classes.items() if n.endswith("cerebral_white_matter")]
        white = np.isin(np.asarray(vol.array), wm_ids)
        white = white if white.any() else None
    if name != BRAIN_SCHEME:
        mask = None if brain is None else (brain if isinstance(brain, Volume) else load_volume(brain, kind="labels"))
        vol = brain_label_map(vol, name, mask)
    else:
        check_known_ids(vol, get_scheme(BRAIN_SCHEME), strict=True)  # a map of another numbering fails here
    before = compartment_volumes(vol)
    record: dict[str, Any] = {"edit": edits[0].lstrip("-"), "seed": seed}
    if insert:
        centre = None
        if centre_mm is not None:
            if len(centre_mm) != 3:
                raise ConfigError(f"lesion: --centre takes x,y,z in mm, got {list(centre_mm)}")
            centre = tuple(np.linalg.solve(vol.affine, np.array([*map(float, centre_mm), 1.0]))[:3])
        params = sample_tumour(vol, seed, centre=centre, inside=white)
        if centre is None:
            record["placed"] = "random, deep in the brain" if white is None else "random, in white matter"
        fixed = {k: float(v) for k, v in (("radius_mm", radius), ("edema_mm", edema), ("core_fraction", core_fraction))
                 if v is not None}
        from dataclasses import replace as _replace

        params = _replace(params, **fixed)
        out = insert_tumour(vol, params)
        record["tumour"] = params.to_dict()
        record["tumour"]["centre_mm"] = [float(c) for c in (vol.affine @ np.array([*params.centre, 1.0]))[:3]]
    elif move_mm is not None:
        if len(move_mm) != 3:
            raise ConfigError(f"lesion: --move takes dx,dy,dz in mm, got {list(move_mm)}")
        out = move_tumour(vol, tuple(float(v) for v in move_mm))
        record["move_mm"] = [float(v) for v in move_mm]
    else:
        out = scale_tumour(vol, float(scale))
        record["scale"] = float(scale)
    record["volumes_ml"] = {"before": before, "after": compartment_volumes(out)}
    return LabelVolume(out, get_scheme(BRAIN_SCHEME), {"source": "lesion", "lesion": record})


def crosswalk(labels: str | Path | Volume | Mapping[str, Volume] | LabelVolume, to: str,
              scheme: str | LabelScheme | None = None, strict: bool = False) -> LabelVolume:
    """A label map (TotalSegmentator output as for :func:`build_anatomy`, MAISI, AMOS, BraTS, or a seg2med label
    volume) in scheme ``to`` through the built-in crosswalk (:mod:`seg2med.labels.crosswalk`). The organ labels are
    converted as they are (no body contour is added); the result's ``report["crosswalk"]`` lists, per class present,
    what it became (same / renamed / merged / kept / dropped), its voxels and the reason. ``strict``: refuse when a
    class with voxels would be dropped."""
    from seg2med.anatomy import crosswalk_label_volume, organ_labels
    from seg2med.labels import get_scheme

    get_scheme(to)  # an unknown scheme fails before any reading
    if isinstance(labels, LabelVolume):
        lv = labels
    else:
        lv = label_inputs.read_seg2med_labels(labels, scheme=scheme, strict=strict)
        if lv is None:
            organs = label_inputs.read_organs(labels)
            base, _ = label_inputs.organ_scheme(organs, scheme, default="total")
            arr, _, ref, report = organ_labels(organs, base, base, strict=strict)
            lv = LabelVolume(ref.like(arr), base, {"source": report.source,
                                                   **({"path": str(labels)} if isinstance(labels, (str, Path)) else {})})
    return crosswalk_label_volume(lv, to, strict=strict)[0]


def make_phantom(seed: int = 0, spacing: float = 1.5, slices: int = 64, size: int = 256) -> LabelVolume:
    """A procedural torso phantom in the canonical TotalSegmentator ``total`` scheme."""
    from seg2med.anatomy import make_phantom as _make

    seed = check_seed(seed)
    vol = _make(seed=seed, spacing=spacing, slices=slices, size=size)
    return LabelVolume(vol, canonical_scheme("total"), {"source": "phantom", "seed": seed, "spacing": spacing, "slices": slices, "size": size})


# --------------------------------------------------------------------------- physics
@dataclass
class Prior:
    """A float32 prior image with the sequence that made it."""

    volume: Volume
    sequence: ImagingSequence
    metadata: dict[str, Any] = field(default_factory=dict)


def get_sequence(name: str, field: float | None = None, tr: float | None = None, te: float | None = None,
                 ti: float | None = None, flip: float | None = None, contrast_phase: str | None = None,
                 gd_dose: float | None = None, agent: str | None = None):
    """A sequence by name with optional parameter overrides (None keeps the default)."""
    from seg2med.physics import get_sequence as _get
    from seg2med.physics.sequences import sequence_class

    if contrast_phase is not None and name != "ct":
        raise ConfigError(f"--contrast-phase applies to CT (sequence ct), not to sequence {name!r}")
    if (gd_dose is not None or agent is not None) and "gd_dose" not in sequence_class(name).parameters():
        raise ConfigError(f"--gd-dose / --agent apply to the T1-weighted MR sequences (gre, mprage, t1ce), not to {name!r}")
    overrides = {k: v for k, v in {"field": field, "tr": tr, "te": te, "ti": ti, "flip": flip,
                                   "contrast_phase": contrast_phase, "gd_dose": gd_dose, "agent": agent}.items()
                 if v is not None}
    return _get(name, **overrides)


def simulate_prior(
    labels: LabelsLike | LabelVolume,
    sequence: str = "ct",
    *,
    field: float | None = None,
    tr: float | None = None,
    te: float | None = None,
    ti: float | None = None,
    flip: float | None = None,
    contrast_phase: str | None = None,
    gd_dose: float | None = None,
    agent: str | None = None,
    tissues: str | Path | None = None,
    scheme: str | LabelScheme | None = None,
    tissue_masks: str | Path | None = None,
    image: str | Path | Volume | None = None,
    modality: str | None = None,
    body: str | Path | Volume | None = None,
    seed: int | None = None,
    tissue_spread: float = 0.0,
    bias_field: float = 0.0,
    noise: float = 0.0,
    blur: float = 0.0,
    strict: bool = False,
) -> Prior:
    """Label map -> physics prior (CT HU or MR signal), float32 on the label grid.

    With ``seed`` given (or any spread > 0) the randomised twin samples
    per-tissue parameters, bias field, noise and blur; with all spreads 0 it
    equals the deterministic prior. ``contrast_phase`` (CT: ``native``, ``arterial``, ``portal_venous``)
    adds the iodinated-contrast enhancement of that phase (:mod:`seg2med.physics.contrast`); ``gd_dose`` (x the
    standard 0.1 mmol/kg of ``agent``; T1-weighted MR) the T1 shortening by gadolinium (:mod:`seg2med.physics.gadolinium`).
    """
    from seg2med.physics import RandomPrior
    from seg2med.physics import simulate_prior as _simulate
    from seg2med.physics.randomize import check_amplitudes

    seed = check_optional_seed(seed)  # every option is checked before the labels are read
    seq = get_sequence(sequence, field=field, tr=tr, te=te, ti=ti, flip=flip, contrast_phase=contrast_phase,
                       gd_dose=gd_dose, agent=agent)
    tissue_spread, bias_field, noise, blur = check_amplitudes(seq.modality, tissue_spread, bias_field, noise, blur, {
        "tissue_spread": "--tissue-spread", "bias_field": "--bias-field", "noise": "--noise", "blur": "--blur"})
    lv = labels if isinstance(labels, LabelVolume) else build_anatomy(
        labels, scheme=scheme, tissue_masks=tissue_masks, image=image, modality=modality, body=body, strict=strict
    )
    table = load_tissue_table(tissues)
    t0 = time.perf_counter()
    randomised = seed is not None or any(v > 0 for v in (tissue_spread, bias_field, noise, blur))
    if randomised:
        rp = RandomPrior(seq, tissue_spread=tissue_spread, bias_field=bias_field, noise=noise, blur=blur, seed=seed)
        arr, params = rp(lv.volume.array, lv.scheme, table, lv.volume.spacing)
    else:
        arr, params = _simulate(lv.volume.array, lv.scheme, seq, table), None
    meta = prior_sidecar(sequence=seq.to_config(), modality=seq.modality, scheme=lv.scheme.name,
                         body_contour=lv.body_contour, tissues=tissues, seed=seed, tissue_spread=tissue_spread,
                         bias_field=bias_field, noise=noise, blur=blur, sampled=params,
                         seconds=time.perf_counter() - t0)
    return Prior(lv.volume.like(np.asarray(arr, dtype=np.float32)), seq, meta)


def save_prior(prior: Prior, path: str | Path, overwrite: bool = False, inputs: Sequence[Any] = ()) -> Path:
    """Write a prior (float32 NIfTI) and its JSON sidecar, as one atomic pair (overwrite rule as
    :func:`save_label_volume`)."""
    out = Path(path)
    with atomic_outputs([out, sidecar_path(out)], overwrite, inputs) as (tmp_img, tmp_side):
        save_volume(prior.volume, tmp_img, dtype=np.float32)
        write_json(tmp_side, describe_set(prior.metadata, {out.name: tmp_img}))
    return out


# --------------------------------------------------------------------------- dataset preparation
def expand_paths(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files from a path, a folder (its NIfTI files, sorted) or a list / comma-separated string of them."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    out: list[Path] = []
    for it in items:
        for part in str(it).split(","):
            if not part:
                continue
            p = Path(part)
            if p.is_dir():
                out.extend(list_nifti(p))
            elif p.exists() and not is_nifti_path(p):
                raise InputError(f"{p}: not a NIfTI file (expected .nii or .nii.gz)")
            else:
                out.append(p)  # missing files are reported by load_volume
    return out


def pair_images_labels(images: Sequence[Path], labels: Sequence[Path]) -> list[tuple[str, Path, Path]]:
    """Pair image and label files: by identical file name when every image has a label map of its name,
    by position when no name is shared; a partial match (some names shared) is refused, as it would pair
    the others with another subject's labels."""
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label maps: they must pair one to one")
    by_name = {p.name: p for p in labels}
    if all(p.name in by_name for p in images):
        return [(nifti_stem(p), p, by_name[p.name]) for p in images]
    alone = [p for p in images if p.name not in by_name]
    if len(alone) < len(images):
        raise InputError(f"{alone[0]}: no label map of the same name among --labels, while other images have one: "
                         f"name every pair alike (or give lists in matching order with no names in common)")
    if len(images) > 1:  # one pair needs no saying
        log.info("images and label maps share no file names: paired by position")
    pairs = []
    seen: set[str] = set()
    for img, lab in zip(images, labels):
        sid = nifti_stem(img)
        if sid in seen:
            sid = f"{sid}-{len(seen)}"
        seen.add(sid)
        pairs.append((sid, img, lab))
    return pairs


@dataclass
class ContrastSubject:
    """One subject of a multi-contrast dataset: an image per contrast (file or volume) and its label map."""

    subject_id: str
    images: Mapping[str, str | Path | Volume]
    labels: str | Path | Volume | LabelVolume
    split: str | None = None  # fixed split (train / val / test); None = drawn by prepare's split fractions
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_contrasts(
    subjects: Sequence[ContrastSubject],
    out: str | Path,
    contrasts: Mapping[str, Mapping[str, Any] | str],
    *,
    scheme: str | None = None,
    tissues: str | Path | None = None,
    axes: Sequence[str] = ("axial",),
    spacing: float = 1.0,
    size: int = 256,
    mr_percentiles: tuple[float, float] = (10.0, 90.0),
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Multi-contrast training data (the brain system: T1, T1ce, T2, FLAIR): per subject the real image of every
    contrast and, from its label map, the physics prior of every contrast's sequence -> one slice dataset whose
    ``image`` / ``prior`` slices hold one channel per contrast, each normalised on its own inside the body (MR
    percentiles; BraTS images are not quantitative). ``contrasts``: name -> sequence config (or name), in channel
    order; every subject gives an image for each."""
    from seg2med.data.intensity import check_is_image
    from seg2med.data.prepare import PrepareConfig, SubjectInput
    from seg2med.data.prepare import prepare_dataset as _prepare
    from seg2med.physics import get_sequence as _get
    from seg2med.physics import sequence_from_config
    from seg2med.physics import simulate_prior as _simulate

    seed = check_seed(seed)
    table = load_tissue_table(tissues)
    if not contrasts:
        raise ConfigError("prepare: no contrasts given")
    seqs = {str(n): (_get(c) if isinstance(c, str) else sequence_from_config(c)) for n, c in contrasts.items()}
    modalities = {q.modality for q in seqs.values()}
    if len(modalities) != 1:
        raise ConfigError(f"prepare: the contrasts mix modalities ({', '.join(sorted(modalities))})")
    modality = modalities.pop()
    files = [v for s in subjects for v in (*s.images.values(), s.labels) if isinstance(v, (str, Path))]
    out = check_output_dir(out, "dataset", overwrite, [*files, tissues])
    config = PrepareConfig(modality=modality, spacing=spacing, size=size, axes=tuple(axes), scheme=scheme,
                           contrasts=[{"name": n, "sequence": q.to_config()} for n, q in seqs.items()],
                           prior_window="signal" if modality == "mr" else None,
                           mr_percentiles=tuple(mr_percentiles), split=tuple(split), split_seed=seed).validate()
    inputs = []
    for s in subjects:
        if progress:
            progress(f"priors {s.subject_id}")
        missing = [n for n in seqs if n not in s.images]
        if missing:
            raise InputError(f"subject {s.subject_id}: no image of contrast(s) {', '.join(missing)}")
        images = []
        for n in seqs:
            img = s.images[n] if isinstance(s.images[n], Volume) else load_volume(s.images[n], kind="image")
            check_is_image(img, img.name, f"the {n} image")
            images.append(img)
        lv = s.labels if isinstance(s.labels, LabelVolume) else build_anatomy(s.labels, scheme=scheme)
        priors = [lv.volume.like(_simulate(lv.volume.array, lv.scheme, q, table).astype(np.float32))
                  for q in seqs.values()]
        inputs.append(SubjectInput(subject_id=s.subject_id, image=images, prior=priors, body=lv.volume.array != 0,
                                   labels=lv.volume, split=s.split, extra=dict(s.extra)))
    return _prepare(inputs, out, config, overwrite=overwrite, inputs=[*files, tissues])


#: The brain system's contrasts in channel order and the sequences of their priors (1.5 T defaults; T2: turbo spin
#: echo at a brain TR; T1ce: the MPRAGE after a standard dose of gadobutrol)
BRAIN_CONTRASTS: dict[str, Any] = {"t1": "mprage", "t1ce": "t1ce",
                                   "t2": {"name": "space", "field": 1.5, "tr": 5000.0, "te": 100.0}, "flair": "flair"}
#: File-name endings of each contrast and of the mask in a BraTS case folder (2017-2021: _t1, _t1ce, _t2, _flair,
#: _seg; 2023: -t1n, -t1c, -t2w, -t2f, -seg; BraTS-Toolkit: _t1c, _fla)
BRATS_SUFFIXES: dict[str, tuple[str, ...]] = {"t1": ("t1", "t1n"), "t1ce": ("t1ce", "t1c"), "t2": ("t2", "t2w"),
                                              "flair": ("flair", "fla", "t2f"), "labels": ("seg",)}


def brats_cases(folder: str | Path) -> dict[str, dict[str, Path]]:
    """Case id -> {t1, t1ce, t2, flair, labels: file} of a BraTS-layout folder (one sub-folder per case, files named
    ``<case>_<contrast>.nii.gz`` or ``<case>-<contrast>.nii.gz``; see :data:`BRATS_SUFFIXES`). A case that lacks a
    contrast or its mask is a one-line error naming it."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of BraTS cases")
    cases = {}
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        found: dict[str, Path] = {}
        for f in list_nifti(case) if any(is_nifti_path(x) for x in case.iterdir()) else []:
            tail = nifti_stem(f).replace("-", "_").lower().rsplit("_", 1)[-1]
            for key, endings in BRATS_SUFFIXES.items():
                if tail in endings:
                    if key in found:
                        raise InputError(f"{case}: two files for {key} ({found[key].name}, {f.name})")
                    found[key] = f
        missing = [k for k in BRATS_SUFFIXES if k not in found]
        if missing:
            raise InputError(f"{case}: no {', '.join(missing)} file (expected names ending in "
                             f"{', '.join('_' + BRATS_SUFFIXES[k][0] for k in missing)}.nii.gz)")
        cases[case.name] = found
    if not cases:
        raise InputError(f"{root}: holds no case folders (one folder per case with its four contrasts and _seg)")
    return cases


def brats_scheme(labels: Volume) -> str:
    """The BraTS convention of a mask, from its ids: 3 and a dominant 4 -> Med-DDPM's, 4 -> BraTS 2017-2021, 3 ->
    BraTS 2023 (ids 1, 2 only: 2021)."""
    ids = set(np.unique(np.asarray(labels.array)).tolist()) - {0}
    if ids - {1, 2, 3, 4}:
        raise InputError(f"{labels.name}: ids {sorted(ids - {1, 2, 3, 4})} are not BraTS tumour labels")
    if {3, 4} <= ids:
        return "brats_medddpm"
    return "brats2023" if 3 in ids else "brats2021"


def prepare_brats(
    folder: str | Path,
    out: str | Path,
    *,
    scheme: str | None = None,
    axes: Sequence[str] = ("axial",),
    spacing: float = 1.5,
    size: int = 128,
    mr_percentiles: tuple[float, float] = (0.5, 99.5),
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """A folder of BraTS cases (:func:`brats_cases`) -> the four-contrast slice dataset of the brain system: each
    mask (``scheme``, default: read from its ids, :func:`brats_scheme`) is put over the brain of its skull-stripped
    images (:func:`seg2med.anatomy.brain.brain_label_map`), then :func:`prepare_contrasts` with
    :data:`BRAIN_CONTRASTS`. Subjects are split by case."""
    from seg2med.anatomy.brain import BRAIN_SCHEME, brain_label_map, brain_mask_from_images

    subjects = []
    for case, files in brats_cases(folder).items():
        images = {c: load_volume(files[c], kind="image") for c in BRAIN_CONTRASTS}
        mask = load_volume(files["labels"], kind="labels")
        name = scheme or brats_scheme(mask)
        labels = mask if name == BRAIN_SCHEME else brain_label_map(mask, name, brain_mask_from_images(list(images.values())))
        subjects.append(ContrastSubject(case, images, labels, extra={"mask": str(files["labels"]), "scheme": name}))
    return prepare_contrasts(subjects, out, BRAIN_CONTRASTS, scheme=BRAIN_SCHEME, axes=axes, spacing=spacing, size=size,
                             mr_percentiles=mr_percentiles, split=split, seed=seed, overwrite=overwrite,
                             progress=progress)


def prepare_dataset(
    images: str | Path | Sequence[str | Path],
    labels: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    sequence: str = "ct",
    scheme: str | None = None,
    tissue_masks: str | Path | Sequence[str | Path] | None = None,
    tissues: str | Path | None = None,
    field: float | None = None,
    tr: float | None = None,
    te: float | None = None,
    ti: float | None = None,
    flip: float | None = None,
    axes: Sequence[str] = ("axial",),
    spacing: float = 1.0,
    size: int = 256,
    mr_percentiles: tuple[float, float] = (10.0, 90.0),
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Real images + label maps -> priors -> normalised, resampled slice dataset with a manifest."""
    from seg2med.data.intensity import check_fits_modality, check_is_image
    from seg2med.data.prepare import PrepareConfig, SubjectInput
    from seg2med.data.prepare import prepare_dataset as _prepare

    seed = check_seed(seed)
    pairs = pair_images_labels(expand_paths(images), expand_paths(labels))
    # tissue-type masks: one entry (a TotalSegmentator tissue_types folder or multilabel file) per subject
    masks = [] if tissue_masks is None else [Path(t) for t in ([tissue_masks] if isinstance(tissue_masks, (str, Path)) else tissue_masks)]
    if masks and len(masks) != len(pairs):
        raise InputError(f"{len(pairs)} subjects but {len(masks)} tissue-mask entries: give one per subject")
    inputs = [*(p for _, img, lab in pairs for p in (img, lab)), *masks, tissues]
    out = check_output_dir(out, "dataset", overwrite, inputs)  # before reading any subject
    seq = get_sequence(sequence, field=field, tr=tr, te=te, ti=ti, flip=flip)
    base = resolve_scheme(scheme, default="total" if seq.modality == "ct" else "total_mr")
    config = PrepareConfig(
        spacing=spacing,
        size=size,
        axes=tuple(axes),
        modality=seq.modality,
        sequence=seq.to_config(),
        scheme=base.name,
        mr_percentiles=tuple(mr_percentiles),
        split=tuple(split),
        split_seed=seed,
    ).validate()
    subjects = []
    for i, (sid, img_path, lab_path) in enumerate(pairs):
        if progress:
            progress(f"prior {sid}")
        img = load_volume(img_path, kind="image")
        check_is_image(img, img_path, "--images")
        check_fits_modality(img, img_path, "--images", seq.modality, f"--sequence {seq.name} is {seq.modality.upper()}")
        lv = build_anatomy(lab_path, scheme=base, tissue_masks=masks[i] if masks else None, image=img, modality=seq.modality)
        prior = simulate_prior(lv, seq.name, field=field, tr=tr, te=te, ti=ti, flip=flip, tissues=tissues)
        body = lv.volume.array != 0
        labels_read = Volume(lv.volume.array, lv.volume.affine, lv.volume.header, Path(lab_path))  # the manifest names it
        subjects.append(SubjectInput(subject_id=sid, image=img, prior=prior.volume, body=body, labels=labels_read))
    return _prepare(subjects, out, config, overwrite=overwrite, progress=progress, inputs=inputs)




# --------------------------------------------------------------------------- demo
#: Display window of the demo's CT previews, HU: a soft-tissue window wide enough for fat (−100) and bone
#: edges (+600), so organs, fat and vertebrae are all told apart in one picture. MR previews use 1st–99.5th
#: percentiles (MR has no absolute scale).
DEMO_CT_WINDOW = (-400.0, 600.0)

#: the shipped four-contrast brain model the demo uses when it is there
BRAIN_DEMO = "brain-demo"


def run_demo(
    out: str | Path = "demo-out",
    *,
    labels: str | Path | None = None,
    scheme: str | None = None,
    tissue_masks: str | Path | None = None,
    body: str | Path | None = None,
    seed: int = 0,
    steps: int = 10,
    synthesize: bool = True,
    convert_ct: bool = False,
    brain: bool = False,
    device: str = "auto",
    precision: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """The embedded demo, all from ONE anatomy (the phantom, or the user's label map).

    Writes the canonical labels, the CT prior and the MR (VIBE in-phase) prior
    and, with the shipped ``ct-demo`` / ``mr-demo`` models, the synthetic CT and
    MR generated from them (DDIM, ``steps`` steps, on ``device`` in ``precision``), plus PNG
    previews in three planes (prior | synthetic). ``convert_ct``: the synthetic CT is also converted to MR
    image to image (:func:`convert` with ``mr-demo`` and the demo's labels: ``ct_to_mr.nii.gz``, ``preview_convert.png``).
    ``brain`` (with the shipped ``brain-demo``): also a brain phantom with a random tumour (seeded; ``brain_labels.nii.gz``)
    and its four contrasts (``brain_t1.nii.gz`` ... ``brain_flair.nii.gz``, ``preview_brain.png``).
    """
    from seg2med.inference import list_models
    from seg2med.inference.generate import pick_device
    from seg2med.io.preview import Panel, save_preview
    from seg2med.models.precision import resolve_precision

    if labels is None and (tissue_masks is not None or body is not None):
        raise ConfigError("--tissue-masks and --body go with --labels (the phantom has its own body and tissues)")
    seed = check_seed(seed)
    out = Path(out)
    step = progress or (lambda _msg: None)
    shipped = set(list_models()) if synthesize else set()
    plan = [("ct", "ct", "ct-demo"), ("mr", "vibe-in", "mr-demo")]
    names = {"labels": out / "labels.nii.gz"}
    for mod, seq, model in plan:
        names[f"{mod}_prior"] = out / f"{mod}_prior.nii.gz"
        if model in shipped:
            names[f"{mod}_synthetic"] = out / f"{mod}_synthetic.nii.gz"
        names[f"{mod}_preview"] = out / f"preview_{mod}.png"
    convert_ct = convert_ct and {"ct-demo", "mr-demo"} <= shipped
    if convert_ct:
        names["ct_to_mr"], names["convert_preview"] = out / "ct_to_mr.nii.gz", out / "preview_convert.png"
    brain = brain and BRAIN_DEMO in shipped
    brain_paths: dict[str, Path] = {}
    if brain:
        names["brain_labels"], names["brain_preview"] = out / "brain_labels.nii.gz", out / "preview_brain.png"
        brain_paths = generated_paths(out / "brain.nii.gz", 1, model_contrasts(BRAIN_DEMO))
        names.update({f"brain_{k}": p for k, p in brain_paths.items()})
    sidecars = [sidecar_path(p) for p in names.values() if p.name.endswith(".nii.gz")]
    models = {}
    if shipped:  # refuse what this device or the models cannot run before any work; each model is loaded once
        from seg2med.inference import load_model
        from seg2med.inference.generate import check_sampling

        dev = pick_device(device)
        precision = resolve_precision(precision, dev, inference=True)
        models = {model: load_model(model, device=dev) for _, _, model in plan if model in shipped}
        if brain:
            models[BRAIN_DEMO] = load_model(BRAIN_DEMO, device=dev)
        for lm in models.values():
            check_sampling(lm, steps, None)
    inputs = [labels, tissue_masks, body]
    for p in [*names.values(), *sidecars]:
        check_output_file(p, overwrite, inputs)
    step("anatomy")
    lv = make_phantom(seed=seed) if labels is None else build_anatomy(labels, scheme=scheme, tissue_masks=tissue_masks,
                                                                      body=body)
    save_label_volume(lv, names["labels"], overwrite=overwrite, inputs=inputs)
    for mod, seq, model in plan:
        step(f"{mod.upper()} prior")
        prior = simulate_prior(lv, seq)
        save_prior(prior, names[f"{mod}_prior"], overwrite=overwrite, inputs=inputs)
        window = DEMO_CT_WINDOW if mod == "ct" else None
        panels = [Panel(f"{mod.upper()} prior ({seq})", prior.volume, window=window)]
        if model in shipped:
            step(f"synthetic {mod.upper()} ({model})")
            result = generate(lv, seq, model=models[model], steps=steps, seed=seed, batch=8, device=device,
                              precision=precision)
            save_generated(result, names[f"{mod}_synthetic"], overwrite=overwrite, inputs=inputs)
            panels.append(Panel(f"synthetic {mod.upper()} ({model})", result.samples[0], window=window))
        save_preview(panels, names[f"{mod}_preview"], overwrite=overwrite, inputs=inputs,
                     title=f"seg2med demo: {mod.upper()} from one anatomy (prior | synthetic)")
        if mod == "ct" and model in shipped:
            ct_synthetic = result.samples[0]
    if convert_ct:
        step("convert CT -> MR (mr-demo)")
        conv = convert(ct_synthetic, "ct", "mr", model=models["mr-demo"], labels=names["labels"], steps=steps, seed=seed,
                       batch=8, device=device, precision=precision)
        save_generated(conv, names["ct_to_mr"], overwrite=overwrite, inputs=inputs)
        save_preview([Panel("CT (synthetic, ct-demo)", ct_synthetic, window=DEMO_CT_WINDOW),
                      Panel("MR converted from it (mr-demo)", conv.samples[0])], names["convert_preview"],
                     overwrite=overwrite, inputs=inputs, title="seg2med demo: image-to-image conversion CT -> MR")
    if brain:
        from seg2med.anatomy.lesion import brain_phantom
        from seg2med.labels import get_scheme

        step("brain phantom -> T1, T1ce, T2, FLAIR (brain-demo)")
        blv = LabelVolume(brain_phantom(seed=seed), get_scheme("brats_medddpm"), {"source": "brain phantom"})
        save_label_volume(blv, names["brain_labels"], overwrite=overwrite, inputs=inputs)
        res = generate(blv, model=models[BRAIN_DEMO], steps=steps, seed=seed, batch=8, device=device,
                       precision=precision)
        save_generated(res, out / "brain.nii.gz", overwrite=overwrite, inputs=inputs)
        save_preview([Panel("tumour mask", blv.volume, kind="labels"),
                      *(Panel(f"{c} (brain-demo)", res.channels[c][0]) for c in res.contrasts)], names["brain_preview"],
                     overwrite=overwrite, inputs=inputs,
                     title="seg2med demo: four contrasts from one tumour mask (1 core, 2 oedema, 3 enhancing, 4 brain)")
    return names


# --------------------------------------------------------------------------- generation
def generate(
    labels: LabelsLike | LabelVolume,
    sequence: str | None = None,
    *,
    model: str | Path | LoadedModel = "ct-demo",
    steps: int = DEFAULT_STEPS,
    sampler: str | None = None,
    seed: int = 0,
    samples: int = 1,
    batch: int = 8,
    axis: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    strength: float = 1.0,
    anchor_scale: float | None = None,
    anchor_tolerance: float | None = None,
    fov_margin: float | None = None,
    tri_planar: bool | None = None,
    slice_noise: str | None = None,
    slice_correlation: float = DEFAULT_SLICE_CORRELATION,
    contrast_phase: str | None = None,
    scheme: str | LabelScheme | None = None,
    tissue_masks: str | Path | None = None,
    body: str | Path | Volume | None = None,
    tissues: str | Path | None = None,
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
):
    """Label map -> synthetic CT / MR volume(s) on the label map's grid.

    ``model`` is a run folder, a shipped model name (``ct-demo``, ``mr-demo``) or a model already
    loaded on ``device`` (:func:`seg2med.inference.load_model`). The prior is simulated with exactly the sequence the model was trained
    with; asking for another ``sequence`` is an error. Returns a
    :class:`seg2med.inference.GenerationResult` (``.samples[0].array`` is the
    volume; ``.std`` the voxel-wise standard deviation when ``samples > 1``). ``strength`` < 1 starts
    the diffusion from the prior noised to that fraction of the schedule (SDEdit; 1 = pure noise).
    ``anchor_scale`` > 0 (mm) with ``anchor_tolerance`` (HU for CT): prior-consistency guidance, the coarse
    intensities of every step's estimate kept within the tolerance of the prior's (:mod:`seg2med.sampling.anchor`);
    ``fov_margin`` (mm): the body continued past the edge of a field of view that cuts it; ``tri_planar``: the
    whole volume denoised along another axis at each step (3D-consistent; :mod:`seg2med.sampling.planes`). None:
    the model's default (:class:`seg2med.inference.generate.Guidance`). ``slice_noise`` ``correlated``: the start noise of
    neighbouring slices correlated (``slice_correlation`` for slices one model spacing apart); ``shared``: every slice
    starts from the same noise (slice-by-slice sampling); ``independent``; None: the model's default (independent
    when its config.json ``sampling`` block has none).
    ``contrast_phase`` (CT models): simulate the prior in that phase (native, arterial, portal_venous).
    """
    from seg2med.inference import generate_volume, load_model
    from seg2med.inference.generate import LoadedModel, check_planes, check_sampling, model_sequences, pick_device, Guidance
    from seg2med.models.precision import resolve_precision

    seed = check_seed(seed)
    dev = pick_device(device)
    precision = resolve_precision(precision, dev, inference=True)  # one this device cannot run fails here
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=dev)
    model_name = lm.path.name if isinstance(model, LoadedModel) else str(model)
    check_sampling(lm, steps, sampler, samples, batch, strength)  # before reading the labels
    guidance = Guidance.of_model(lm, anchor_scale=anchor_scale, anchor_tolerance=anchor_tolerance, fov_margin=fov_margin,
                                 tri_planar=tri_planar, slice_noise=slice_noise)
    check_planes(lm, guidance.tri_planar, guidance.slice_noise, slice_correlation)
    model_sequences(lm, contrast_phase)
    trained = lm.sequence_config["name"]
    if sequence is not None and sequence != trained:
        raise ConfigError(f"model {model_name} was trained for sequence {trained!r}, not {sequence!r}")
    default_scheme = lm.data.get("scheme") or "total"
    lv = labels if isinstance(labels, LabelVolume) else build_anatomy(
        labels, scheme=scheme, default_scheme=default_scheme, tissue_masks=tissue_masks, body=body, strict=strict
    )
    lv, crosswalk_report = to_model_scheme(lv, default_scheme, strict)
    result = generate_volume(
        lv.volume, lv.scheme, lm, tissues=load_tissue_table(tissues), steps=steps, sampler=sampler, seed=seed,
        samples=samples, batch=batch, axis=axis, device=dev, precision=precision, strength=strength,
        anchor_scale=anchor_scale, anchor_tolerance=anchor_tolerance, fov_margin=fov_margin, tri_planar=tri_planar,
        slice_noise=slice_noise, slice_correlation=slice_correlation, contrast_phase=contrast_phase,
        progress=progress,
    )
    result.metadata.update(generated_provenance(model_name=model_name, scheme=lv.scheme.name,
                                                body_contour=lv.body_contour, tissues=tissues))
    result.metadata["crosswalk"] = crosswalk_report
    return result


#: ``convert --segmenter`` value that runs the installed TotalSegmentator (task total for CT, total_mr for MR)
TOTALSEGMENTATOR = "totalsegmentator"


def convert(
    image: str | Path | Volume,
    modality: str,
    to: str,
    *,
    model: str | Path = "ct-demo",
    labels: str | Path | None = None,
    segmenter: str | Path | None = None,
    scheme: str | None = None,
    strict: bool = False,
    **generate_options: Any,
):
    """An image of one modality -> a synthetic image of the other (``to``), through the anatomy, on the image's grid.

    Stages (each recorded in ``metadata["convert"]``): the label map (``labels`` given, or ``segmenter``:
    ``totalsegmentator`` when it is installed with its weights, task ``total`` / ``total_mr``; or a
    ``seg2med train-segmenter`` run), the body contour from the image itself, the crosswalk to the model's scheme,
    the model's prior and :func:`generate` (``generate_options``: steps, seed, precision ...). ``model`` must be a
    ``to`` model. Returns the :class:`~seg2med.inference.GenerationResult`.
    """
    from seg2med.inference import load_model
    from seg2med.inference.generate import LoadedModel, pick_device

    modality, to = str(modality).lower(), str(to).lower()
    for name, value in (("--modality", modality), ("--to", to)):
        if value not in ("ct", "mr"):
            raise ConfigError(f"{name} must be ct or mr, got {value!r}")
    if modality == to:
        raise ConfigError(f"--modality and --to are both {to}: convert goes from one modality to the other")
    if (labels is None) == (segmenter is None):
        raise ConfigError("convert needs the anatomy of the image: --labels L (a label map on its grid) or "
                          "--segmenter totalsegmentator|RUN")
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=pick_device(generate_options.get("device", "auto")))
    if lm.spec.modality != to:
        raise ConfigError(f"--model {model} generates {lm.spec.modality}, not {to}")
    img = load_volume(image, kind="image") if isinstance(image, (str, Path)) else image
    from seg2med.data.intensity import check_fits_modality, check_is_image

    where = Path(str(image)) if isinstance(image, (str, Path)) else Path(img.name)
    check_is_image(img, where, "--image")
    check_fits_modality(img, where, "--image", modality, f"--modality {modality}")
    if labels is not None:
        source, label_input = {"source": "given", "path": str(labels)}, labels
    elif str(segmenter).lower() == TOTALSEGMENTATOR:
        from seg2med.inference.totalseg import find_totalsegmentator

        task = "total_mr" if modality == "mr" else "total"
        label_input = find_totalsegmentator(task).segment(img)
        source, scheme = {"source": "totalsegmentator", "task": task}, scheme or task
    else:
        from seg2med.inference.segment import load_segmenter, segment_volume

        seg = load_segmenter(segmenter)
        if seg.spec.modality != modality:
            raise ConfigError(f"--segmenter {segmenter} segments {seg.spec.modality} images, not {modality}")
        label_input = segment_volume(img, seg)
        source, scheme = {"source": "segmenter", "run": str(segmenter)}, scheme or seg.spec.scheme
    ready = label_inputs.read_seg2med_labels(label_input, scheme=scheme, strict=strict)  # has its own body contour
    lv = ready or build_anatomy(label_input, scheme=scheme, image=img, modality=modality, strict=strict,
                                default_scheme="total_mr" if modality == "mr" else "total")
    if tuple(lv.volume.shape[:3]) != tuple(img.shape[:3]) or not np.allclose(lv.volume.affine, img.affine, atol=1e-4):
        raise InputError(f"{labels}: the label map is not on the grid of --image {where} (shape "
                         f"{list(lv.volume.shape[:3])} vs {list(img.shape[:3])})")
    result = generate(lv, model=lm, strict=strict, **generate_options)
    result.metadata["convert"] = {"image": str(where), "modality": modality, "to": to,
                                  "labels": {**source, "scheme": lv.report.get("scheme") or lv.scheme.name},
                                  "body_contour": lv.body_contour}
    return result


def to_model_scheme(lv: LabelVolume, target: str, strict: bool = False) -> tuple[LabelVolume, dict[str, Any] | None]:
    """``lv`` in the scheme a model was trained on (``target``), through the built-in crosswalk when its own scheme
    is another one of the same family (:func:`seg2med.anatomy.crosswalk_label_volume`; ``strict``: refuse dropping a
    class with voxels), and the crosswalk report (None: no crosswalk applied). A scheme with no crosswalk to
    ``target`` is used as it is, its classes simulated by name, with a warning."""
    from seg2med.anatomy import crosswalk_label_volume
    from seg2med.labels.crosswalk import list_crosswalks
    from seg2med.labels.schemes import base_scheme_name

    source = base_scheme_name(lv.scheme)
    if source == target:
        return lv, None
    if (source, target) not in list_crosswalks():
        log.warning("no crosswalk from label scheme %r to the model's %r: its classes are simulated by name", source,
                    target)
        return lv, None
    out, report = crosswalk_label_volume(lv, target, strict=strict)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report["counts"].items()))
    log.info("labels in scheme %r converted to the model's %r by the crosswalk: %s (classes present)", source, target,
             counts)
    return out, report


def model_contrasts(model: str | Path) -> tuple[str, ...]:
    """The contrasts a model generates (its config.json ``data.contrasts``; ``()`` for a single-contrast model), read
    without loading the weights: what :func:`check_volume_outputs` needs before any work."""
    from seg2med.data.spec import DataSpec
    from seg2med.inference import resolve_model
    from seg2med.io.checkpoints import read_checkpoint_config

    path = resolve_model(model)
    return DataSpec.from_dict(read_checkpoint_config(path).get("data", {}), source=path).contrast_names


def save_generated(result, out: str | Path, overwrite: bool = False, inputs: Sequence[Any] = ()) -> dict[str, Path]:
    """Write every sample, the std map (K > 1) and the JSON sidecar as one atomic set.

    Existing files are refused without ``overwrite``; with it, only seg2med's own are replaced (never
    one of ``inputs``), and the files of a previous run of this output that this one does not write
    (``_sample2`` after ``--samples 3``, ``_std``) are removed.
    """
    from seg2med.io.outputs import described_files

    paths = generated_paths(out, len(result.samples), result.contrasts)
    keys = list(paths)
    stale = described_files(paths["sidecar"], kind=GENERATED_KIND) if overwrite else []
    with atomic_outputs([paths[k] for k in keys], overwrite, inputs, stale=stale) as temps:
        tmp = dict(zip(keys, temps))
        if result.contrasts:  # one file per contrast (and sample, and std map)
            for c in result.contrasts:
                for k, vol in enumerate(result.channels[c]):
                    save_volume(vol, tmp[c if k == 0 else f"{c}_sample{k}"], dtype=np.float32)
                if result.channel_stds.get(c) is not None:
                    save_volume(result.channel_stds[c], tmp[f"{c}_std"], dtype=np.float32)
        else:
            for k, vol in enumerate(result.samples):
                save_volume(vol, tmp[f"sample{k}"], dtype=np.float32)
            if result.std is not None:
                save_volume(result.std, tmp["std"], dtype=np.float32)
        write_json(tmp["sidecar"], describe_set(result.metadata, {paths[k].name: tmp[k] for k in keys if k != "sidecar"}))
    return paths


# --------------------------------------------------------------------------- evaluation
def _optional_fid_weights(fid_weights: str | Path | None) -> Path | None:
    """The FID weights file when one is given (option or ``$SEG2MED_FID_WEIGHTS``), checked now; else None (no FID)."""
    import os

    from seg2med.metrics.frechet import FID_WEIGHTS_ENV, resolve_fid_weights

    return resolve_fid_weights(fid_weights) if fid_weights or os.environ.get(FID_WEIGHTS_ENV) else None


def _methods(pred: Sequence[str | Path] | Mapping[str, str | Path] | str | Path) -> dict[str, str | Path]:
    """Method name -> prediction file/folder from ``--pred`` values (``NAME=PATH`` or ``PATH``) or a mapping."""
    from seg2med.evaluation import parse_method

    if isinstance(pred, Mapping):
        return {str(k): v for k, v in pred.items()}
    specs = [pred] if isinstance(pred, (str, Path)) else list(pred)
    methods = dict(parse_method(str(s)) for s in specs)
    if len(methods) != len(specs):
        raise ConfigError("--pred: two predictions have the same method name (use NAME=PATH)")
    return methods


def evaluate(
    pred: Sequence[str | Path] | Mapping[str, str | Path] | str | Path,
    ref: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    mask: str | Path = "body",
    prior: str | Path | None = None,
    modality: str = "auto",
    metrics: Sequence[str] | None = None,
    segmenter: str | Path | None = None,
    fid_weights: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Compare synthetic volumes with real ones; write ``per_subject.csv``, ``summary.json`` and ``report.html`` into ``out``.

    ``pred`` is one file/folder, several (``NAME=PATH`` strings or a mapping
    name -> path; one per method). ``mask`` is ``body`` (labels != 0, else a
    threshold of the reference), ``none`` or a mask file/folder. ``segmenter``
    (a ``seg2med train-segmenter`` run, or ``totalsegmentator`` when that is
    installed with its weights) adds Dice/HD95 per class (needs ``labels``)
    and, for an own segmenter, the Fréchet distance in its feature space; FID is computed
    only with a local Inception weights file (``fid_weights`` or
    ``$SEG2MED_FID_WEIGHTS``). See :mod:`seg2med.evaluation`.
    """

    from seg2med.evaluation import EvalOptions, collect_cases, evaluate_cases, write_report

    methods = _methods(pred)
    mask_file = None if str(mask) in ("body", "none") else mask
    inputs = [*methods.values(), ref, labels, mask_file, prior, fid_weights,
              None if segmenter is None or str(segmenter).lower().startswith("totalsegmentator") else segmenter]
    check_output_dir(out, "evaluation", overwrite, inputs)  # before any reading or scoring
    weights = _optional_fid_weights(fid_weights)
    cases = collect_cases(methods, ref, labels=labels, mask=mask_file, prior=prior)
    seg = None
    if segmenter is not None and str(segmenter).lower() in ("totalsegmentator", "totalsegmentator-fast"):
        from seg2med.inference.totalseg import find_totalsegmentator

        task = "total_mr" if modality == "mr" else "total"
        seg = find_totalsegmentator(task, fast=str(segmenter).lower().endswith("fast"))
    elif segmenter is not None:
        from seg2med.inference.segment import load_segmenter

        seg = load_segmenter(segmenter)
    options = EvalOptions(modality=modality, mask="body" if mask_file is not None else str(mask),
                          metrics=tuple(metrics) if metrics else EvalOptions().metrics, fid_weights=weights, segmenter=seg)
    ev = evaluate_cases(cases, options, progress=progress)
    if weights is None:
        ev.notes.append("FID not computed: no Inception weights file (--fid-weights or $SEG2MED_FID_WEIGHTS); nothing is downloaded.")
    if seg is None:
        ev.notes.append("Dice / Fréchet-Seg not computed: no segmenter given (--segmenter RUN from seg2med train-segmenter).")
    return write_report(ev, out, overwrite=overwrite, inputs=inputs)


def evaluate_unpaired(
    pred: Sequence[str | Path] | Mapping[str, str | Path] | str | Path,
    labels: str | Path,
    out: str | Path,
    *,
    ref: str | Path | None = None,
    ref_labels: str | Path | None = None,
    modality: str = "auto",
    sequence: str | None = None,
    scheme: str | None = None,
    segmenter: str | Path | None = None,
    tissues: str | Path | None = None,
    fid_weights: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Judge synthetic volumes that have no same-patient real image (phantoms, composed anatomies, conversions).

    ``labels``: the label map(s) each output was made from (paired by file name). Per-organ plausibility
    (generate's quality check), re-segmentation Dice / HD95 per class against ``labels`` with ``segmenter`` (a
    ``train-segmenter`` run, ``ct-seg-demo``, or ``totalsegmentator`` when installed) beside the same segmenter on
    the real volumes ``ref`` with their ``ref_labels``, and Fréchet-Seg / FID of the outputs against ``ref`` (any
    grid, any patient). MR: ``sequence`` (a name, e.g. ``vibe-in``) or the outputs' generation sidecars give the
    tissue order. Writes ``qc.csv``, ``organs.csv``, ``dice.csv``, ``summary.json`` and ``report.html`` into ``out``
    (:mod:`seg2med.evaluation.unpaired`).
    """
    from seg2med.evaluation.report import write_unpaired_report
    from seg2med.evaluation.unpaired import UnpairedOptions, collect_unpaired
    from seg2med.evaluation.unpaired import evaluate_unpaired as run_unpaired

    methods = _methods(pred)
    seq = get_sequence(sequence).to_config() if sequence is not None else None  # an unknown name fails first
    own_segmenter = None if segmenter is None or str(segmenter).lower().startswith(TOTALSEGMENTATOR) else segmenter
    inputs = [*methods.values(), labels, ref, ref_labels, tissues, fid_weights, own_segmenter]
    check_output_dir(out, "evaluation", overwrite, inputs)  # before any reading or scoring
    weights = _optional_fid_weights(fid_weights)
    cases, real = collect_unpaired(methods, labels, ref, ref_labels)
    seg = None
    if segmenter is not None and str(segmenter).lower() in (TOTALSEGMENTATOR, "totalsegmentator-fast"):
        from seg2med.inference.totalseg import find_totalsegmentator

        if modality == "auto":
            raise ConfigError("--segmenter totalsegmentator needs --modality ct|mr (its task follows the modality)")
        seg = find_totalsegmentator("total_mr" if modality == "mr" else "total",
                                    fast=str(segmenter).lower().endswith("fast"))
    elif segmenter is not None:
        from seg2med.inference.segment import load_segmenter

        seg = load_segmenter(segmenter)
    def load_labels(path: Path, image: Volume | None, image_modality: str | None) -> LabelVolume:
        return build_anatomy(path, scheme=scheme, image=image, modality=image_modality)

    options = UnpairedOptions(load_labels=load_labels, modality=modality, sequence=seq,
                              tissues=load_tissue_table(tissues), segmenter=seg, fid_weights=weights)
    ev = run_unpaired(cases, options, real, progress=progress)
    return write_unpaired_report(ev, out, overwrite=overwrite, inputs=inputs)


def _contrast_files(folder: str | Path, what: str) -> dict[str, Path]:
    """contrast -> file of a folder holding one NIfTI per contrast (``t1.nii.gz`` ...: what generate writes)."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: {what} must be a folder with one file per contrast (t1.nii.gz, t1ce.nii.gz, ...)")
    return {nifti_stem(p): p for p in list_nifti(d)}


def evaluate_brain(
    pred: str | Path | Sequence[str | Path],
    labels: str | Path,
    out: str | Path,
    *,
    ref: str | Path | None = None,
    segmenter: str | Path | None = None,
    scheme: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Four-contrast brain outputs (``pred``: a folder with one file per contrast, as ``generate`` writes) judged against
    the mask they were made from (``labels``, ``brats_medddpm`` or ``scheme``): the segmenter's Dice per BraTS region on
    them beside its Dice on the real images (``ref``: a folder with the same contrast names), and SSIM / PSNR per
    contrast inside the brain. Writes ``summary.json``, ``regions.csv`` and ``contrasts.csv`` into ``out``."""
    import csv as _csv

    from seg2med._version import __version__
    from seg2med.anatomy.brain import BRAIN_SCHEME, brain_label_map, brain_mask_from_images
    from seg2med.evaluation.brain import evaluate_brain as _evaluate
    from seg2med.io.outputs import replace_folder
    from seg2med.labels import get_scheme

    methods = _methods(pred)  # one --pred folder ([NAME=]PATH)
    if len(methods) != 1:
        raise ConfigError("--brain takes one --pred folder and its --labels (and not --unpaired)")
    pred = next(iter(methods.values()))
    check_output_dir(out, "evaluation", overwrite, [pred, labels, ref, segmenter])
    files = _contrast_files(pred, "--pred")
    real_files = _contrast_files(ref, "--ref") if ref is not None else None
    vols = {c: load_volume(p, kind="image") for c, p in files.items()}
    lab = load_volume(labels, kind="labels")
    name = scheme or BRAIN_SCHEME
    if name != BRAIN_SCHEME:
        lab = brain_label_map(lab, name, brain_mask_from_images(list(vols.values())))
    seg, order = None, None
    if segmenter is not None:
        from seg2med.inference.segment import load_segmenter

        seg = load_segmenter(segmenter)
        order = list(seg.spec.contrast_names) or None
    real = {c: load_volume(p, kind="image") for c, p in real_files.items()} if real_files else None
    ev = _evaluate(vols, lab, get_scheme(BRAIN_SCHEME), seg, real, order)
    summary = {**ev.to_dict(), "pred": {c: str(p) for c, p in files.items()}, "labels": str(labels),
               "ref": {c: str(p) for c, p in (real_files or {}).items()} or None,
               "segmenter": None if segmenter is None else str(segmenter), "seg2med_version": __version__}
    with replace_folder(out, "evaluation", overwrite, [pred, labels, ref, segmenter]) as tmp:
        write_json(tmp / "summary.json", summary)
        with open(tmp / "regions.csv", "w", newline="") as f:
            w = _csv.writer(f)
            w.writerow(["region", "dice_synthetic", "dice_real"])
            for r, v in ev.regions.items():
                w.writerow([r, v["synthetic"], v["real"]])
        with open(tmp / "contrasts.csv", "w", newline="") as f:
            w = _csv.writer(f)
            w.writerow(["contrast", "ssim", "psnr_db"])
            for c, v in ev.contrasts.items():
                w.writerow([c, v["ssim"], v["psnr"]])
    root = Path(out)
    return {"summary": root / "summary.json", "regions": root / "regions.csv", "contrasts": root / "contrasts.csv"}


def benchmark(
    data: str | Path,
    out: str | Path,
    *,
    methods: Sequence[str] = GENERATORS,
    budget_minutes: float = 10.0,
    max_steps: int = 100_000,
    preset: str = "tiny",
    batch: int = 8,
    seed: int = 0,
    sample_steps: int = 20,
    segmenter: str | Path | None = None,
    segmenter_minutes: float = 0.0,
    fid_weights: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every method for the same time budget on the train split, generate the test split and evaluate.

    Writes ``out/benchmark.md`` (paper-Table-II-style comparison), ``out/benchmark.json``
    and ``out/report/report.html``; see :mod:`seg2med.evaluation.benchmark`.
    """

    from seg2med.evaluation.benchmark import BenchmarkConfig
    from seg2med.evaluation.benchmark import benchmark as run_benchmark

    weights = _optional_fid_weights(fid_weights)
    cfg = BenchmarkConfig(methods=tuple(methods), budget_minutes=budget_minutes, max_steps=max_steps, preset=preset, batch=batch,
                          seed=seed, sample_steps=sample_steps, segmenter_minutes=segmenter_minutes, device=device)
    return run_benchmark(data, out, cfg, segmenter=segmenter, fid_weights=weights, overwrite=overwrite, progress=progress)


__all__ = [
    "DEMO_CT_WINDOW",
    "LabelVolume",
    "Prior",
    "benchmark",
    "evaluate_unpaired",
    "build_anatomy",
    "BRAIN_CONTRASTS",
    "brats_cases",
    "prepare_brats",
    "check_volume_outputs",
    "ContrastSubject",
    "evaluate_brain",
    "edit_lesion",
    "model_contrasts",
    "prepare_contrasts",
    "convert",
    "crosswalk",
    "evaluate",
    "expand_paths",
    "generate",
    "generated_paths",
    "get_sequence",
    "load_tissue_table",
    "make_phantom",
    "pair_images_labels",
    "prepare_dataset",
    "resolve_scheme",
    "to_model_scheme",
    "run_demo",
    "save_generated",
    "save_label_volume",
    "save_prior",
    "sidecar_path",
    "simulate_prior",
]

"""One canonical label volume from organ labels, tissue types and a body contour.

Overlap rules (applied in this order, every resolved voxel is counted):

1. ``organ_over_organ`` - only for per-class mask folders, where masks may
   overlap. The class with the better rank wins; ranks come from
   :data:`PRIORITY_TIERS` (first matching tier; thin/embedded structures before
   the solid organs that contain them) and, within a tier, the lower scheme id.
2. ``tissue_over_tissue`` - only for tissue mask folders: :data:`TISSUE_PRIORITY`
   (skeletal_muscle > intermuscular_fat > torso_fat > subcutaneous_fat).
3. ``organ_over_tissue`` - any organ-scheme class beats any tissue type
   (TotalSegmentator's skeletal_muscle mask, for instance, also covers the
   autochthon and iliopsoas, and its torso_fat bleeds into organ borders).

Then unlabelled voxels inside the body contour become ``body``; voxels outside
stay 0 (air); labelled voxels outside the contour are kept and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from seg2med.anatomy.contour import body_mask_from_ct, body_mask_from_labels, body_mask_from_mr
from seg2med.errors import ConfigError, InputError
from seg2med.io.nifti import Volume, check_same_grid, embedded_label_table, label_values
from seg2med.labels.schemes import LabelScheme, canonical_scheme, get_scheme, guess_scheme, list_schemes

log = logging.getLogger(__name__)

#: Organ overlap priority: tiers (name, class-name patterns), best first. A class
#: belongs to the first tier with a matching ``fnmatch`` pattern; within a tier
#: the lower scheme id wins. Thin or embedded structures come first so that they
#: are not swallowed by the organ around them (vessels in the liver, cysts in the
#: kidney, the cord in the canal, the gallbladder in the liver bed).
PRIORITY_TIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lesion", ("necro*", "*enhancing_tumor*", "non_enhancing*")),
    ("oedema", ("*edema*",)),
    ("vessel", ("aorta", "*vena*", "*vein*", "*arter*", "brachiocephalic_*", "atrial_appendage_*")),
    ("nerve", ("spinal_cord",)),
    ("gland", ("adrenal_gland_*", "thyroid_gland", "prostate*")),
    ("cyst", ("kidney_cyst_*",)),
    ("solid_organ", ("gallbladder", "liver", "spleen", "kidney_*", "pancreas", "heart", "heart_*", "brain")),
    ("hollow_organ", ("esophagus", "trachea", "stomach", "duodenum", "small_bowel", "colon", "urinary_bladder")),
    ("lung", ("lung*",)),
    ("bone", ("vertebrae*", "intervertebral_discs", "sacrum", "rib_*", "sternum", "costal_cartilages",
              "femur_*", "hip_*", "humerus_*", "scapula_*", "clavicula_*", "skull")),
    ("muscle", ("gluteus_*", "autochthon_*", "iliopsoas_*")),
    ("other", ("*",)),
)

#: Tissue-type overlap priority, best first (names of :data:`seg2med.labels.schemes.EXTENSION_CLASSES`).
TISSUE_PRIORITY: tuple[str, ...] = ("skeletal_muscle", "intermuscular_fat", "torso_fat", "subcutaneous_fat")

#: Mask names of TotalSegmentator's body tasks (``body``, ``body_mr``); in a class-mask folder they make
#: the body contour (their union), not organs.
BODY_MASK_NAMES: tuple[str, ...] = ("body", "body_trunc", "body_extremities", "skin")

#: Scheme of a multilabel tissue-type file (TotalSegmentator task ``tissue_types``).
TISSUE_SCHEME = "tissue_types"

ORGAN_OVER_ORGAN = "organ_over_organ"
TISSUE_OVER_TISSUE = "tissue_over_tissue"
ORGAN_OVER_TISSUE = "organ_over_tissue"


# --------------------------------------------------------------------------- reports
@dataclass
class Overlap:
    """``voxels`` claimed by both ``winner`` and ``loser``, given to ``winner`` by ``rule``."""

    rule: str
    winner: str
    loser: str
    voxels: int


def _lost(overlaps: Iterable[Overlap], rule: str | None, winner: str | None, loser: str | None) -> int:
    keep = lambda value, want: want is None or value == want  # noqa: E731
    return sum(o.voxels for o in overlaps if keep(o.rule, rule) and keep(o.winner, winner) and keep(o.loser, loser))


@dataclass
class OverlapReport:
    """What :func:`labels_from_masks` resolved: overlaps, skipped unknown classes, final class sizes."""

    overlaps: list[Overlap] = field(default_factory=list)
    unknown_classes: dict[str, int] = field(default_factory=dict)
    class_voxels: dict[str, int] = field(default_factory=dict)

    def lost(self, rule: str | None = None, winner: str | None = None, loser: str | None = None) -> int:
        """Total voxels of the overlaps matching the given rule / winner / loser (None = any)."""
        return _lost(self.overlaps, rule, winner, loser)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnatomyReport:
    """What :func:`build_label_volume` did, JSON-ready through :meth:`to_dict`."""

    source: str
    scheme: str
    shape: tuple[int, ...] = ()
    overlaps: list[Overlap] = field(default_factory=list)
    unknown_ids: dict[int, int] = field(default_factory=dict)
    unknown_tissue_ids: dict[int, int] = field(default_factory=dict)
    unknown_classes: dict[str, int] = field(default_factory=dict)
    #: how classes were identified: "embedded" (ids named by the file's own label table, TotalSegmentator
    #: --ml), "mask names" (per-class mask files), "" (ids as the scheme numbers them)
    label_table: str = ""
    contour_source: str = ""
    body_voxels: int = 0
    body_filled: int = 0
    labelled_outside_body: int = 0
    outside_body_by_class: dict[str, int] = field(default_factory=dict)
    class_voxels: dict[str, int] = field(default_factory=dict)

    def lost(self, rule: str | None = None, winner: str | None = None, loser: str | None = None) -> int:
        """Total voxels of the overlaps matching the given rule / winner / loser (None = any)."""
        return _lost(self.overlaps, rule, winner, loser)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        for key in ("unknown_ids", "unknown_tissue_ids"):
            d[key] = {str(k): int(v) for k, v in d[key].items()}
        return d


# --------------------------------------------------------------------------- priority
def tier_of(name: str) -> str:
    """Name of the :data:`PRIORITY_TIERS` tier a class belongs to."""
    return PRIORITY_TIERS[_tier_index(name)][0]


def _tier_index(name: str) -> int:
    return next(i for i, (_, pats) in enumerate(PRIORITY_TIERS) if any(fnmatchcase(name, p) for p in pats))


def priority_order(scheme: LabelScheme) -> list[str]:
    """Class names of ``scheme``, the winner of any overlap first."""
    return sorted(scheme.classes, key=lambda n: (_tier_index(n), scheme.classes[n]))


# --------------------------------------------------------------------------- helpers
def _label_dtype(max_id: int) -> type:
    return np.int16 if max_id < np.iinfo(np.int16).max else np.int32


def _plural(word: str) -> str:
    return word + ("es" if word.endswith("s") else "s")


def _scheme_hint(scheme: LabelScheme, names: Iterable[str] = (), ids: Iterable[int] = ()) -> str:
    """`` (… pass --scheme X)`` when the unknown class names / ids belong to another built-in scheme."""
    names, ids = set(names), {int(i) for i in ids}
    if names:
        fits = [s for s in list_schemes() if s != scheme.name and names <= set(get_scheme(s).classes)]
        if fits:
            tissue = " or give them as --tissue-masks" if "tissue_types" in fits else ""
            return f" (they are classes of scheme {fits[0]!r}: pass --scheme {fits[0]}{tissue})"
    elif ids:
        best = guess_scheme(ids)
        if best != scheme.name and not (ids - set(get_scheme(best).classes.values())):
            return f" (its ids fit scheme {best!r}: pass --scheme {best})"
    return ""


def _unknown_text(ids: Mapping, what: str = "id", limit: int = 8) -> str:
    """``id 7 (120 voxels), …``: the ``limit`` largest by voxel count (in id order), then a count of the rest."""
    shown = sorted(sorted(ids.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])
    text = ", ".join(f"{what} {k} ({v} voxels)" for k, v in shown)
    if len(ids) > limit:
        rest = {k: v for k, v in ids.items() if (k, v) not in shown}
        text += f" and {len(rest)} more {_plural(what)} ({sum(rest.values())} voxels)"
    return text


def _handle_unknown(source: str, scheme_name: str, unknown: Mapping, strict: bool, what: str = "id",
                    hint: str = "", where: str | None = None) -> None:
    if not unknown:
        return
    where = where or f"label scheme {scheme_name!r}"
    msg = f"{source}: {_plural(what)} not in {where}: {_unknown_text(unknown, what)}{hint}"
    if strict:
        raise ConfigError(msg)
    log.warning("%s; these voxels are treated as unlabelled", msg)


def _paint(
    masks: Mapping[str, np.ndarray], order: Sequence[str], ids: Mapping[str, int], rule: str, dtype: type
) -> tuple[np.ndarray, list[Overlap]]:
    """Label array from possibly overlapping masks, painting ``order`` best first; overlaps counted."""
    names = {i: n for n, i in ids.items()}
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=dtype)
    overlaps: list[Overlap] = []
    for name in order:
        if name not in masks:
            continue
        m = masks[name]
        taken = m & (out != 0)
        if taken.any():
            winners = np.bincount(out[taken].ravel())
            overlaps += [Overlap(rule, names[int(w)], name, int(c)) for w, c in enumerate(winners) if c]
            out[m & ~taken] = ids[name]
        else:
            out[m] = ids[name]
    return out, overlaps


def _mask_arrays(masks: Mapping[str, Volume | np.ndarray], source: str) -> dict[str, np.ndarray]:
    if not masks:
        raise InputError(f"{source}: no class masks given")
    arrays = {str(n): np.asarray(getattr(v, "array", v)) != 0 for n, v in masks.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(f"{source}: class masks must be 3D arrays of one shape, got {sorted(shapes)}")
    return arrays


def _masks_source(masks: Mapping[str, Volume]) -> str:
    paths = [v.path for v in masks.values() if isinstance(v, Volume) and v.path is not None]
    if paths and len(paths) == len(masks):
        parents = {Path(p).parent for p in paths}
        if len(parents) == 1:
            return str(parents.pop())
    return "<masks>"


def _as_labels(vol: Volume) -> np.ndarray:
    arr = np.asarray(vol.array)
    if arr.ndim != 3:
        raise InputError(f"{vol.name}: expected a 3D label map, got shape {arr.shape}")
    return label_values(arr, vol.name)


def _class_counts(labels: np.ndarray, scheme: LabelScheme) -> dict[str, int]:
    counts = np.bincount(labels.ravel().astype(np.int64, copy=False))
    names = scheme.id_to_name
    return {names.get(i, str(i)): int(c) for i, c in enumerate(counts) if c and i}


# --------------------------------------------------------------------------- public API
def labels_from_masks(
    masks: Mapping[str, np.ndarray],
    scheme: LabelScheme,
    *,
    strict: bool = False,
    source: str = "<masks>",
) -> tuple[np.ndarray, OverlapReport]:
    """Integer label array (ids of ``scheme``) from per-class boolean masks.

    Overlaps are resolved with :func:`priority_order` (rule ``organ_over_organ``)
    and counted per (winner, loser) pair. A mask whose name ``scheme`` does not
    know is skipped, reported with its voxel count and logged as a warning;
    with ``strict=True`` it raises :class:`ConfigError` instead. An empty
    ``masks`` or masks of different shapes raise :class:`InputError`.
    """
    arrays = _mask_arrays(masks, source)
    unknown = {n: int(a.sum()) for n, a in arrays.items() if n not in scheme.classes}
    _handle_unknown(source, scheme.name, unknown, strict, what="class")
    dtype = _label_dtype(max(scheme.ids, default=1))
    labels, overlaps = _paint(arrays, priority_order(scheme), scheme.classes, ORGAN_OVER_ORGAN, dtype)
    return labels, OverlapReport(overlaps, unknown, _class_counts(labels, scheme))


def build_label_volume(
    organs: Volume | Mapping[str, Volume],
    scheme: LabelScheme | str,
    tissues: Volume | Mapping[str, Volume] | None = None,
    image: Volume | None = None,
    modality: str | None = None,
    body: Volume | np.ndarray | None = None,
    strict: bool = False,
) -> tuple[Volume, AnatomyReport]:
    """Merge organs, tissue types and a body contour into one canonical label volume.

    Parameters
    ----------
    organs
        Integer label :class:`Volume` in ``scheme`` ids, or ``{class name: mask Volume}``.
    scheme
        The organs' label scheme; output ids are those of ``canonical_scheme(scheme)``.
    tissues
        Tissue types: a label Volume in ``tissue_types`` ids (1 subcutaneous_fat,
        2 torso_fat, 3 skeletal_muscle) or ``{name: mask Volume}`` with names of
        :data:`TISSUE_PRIORITY`. Placed only where no organ is.
    image, modality
        Image on the organs' grid and its modality (``"ct"`` or ``"mr"``) for the
        body contour; without an image the contour comes from the labels.
    body
        A body mask (non-zero = body; e.g. TotalSegmentator ``--task body``) as a Volume on the
        organs' grid or an array of their shape; overrides ``image``. Without ``body``, ``image``
        or ``tissues`` the contour closes the labelled organs only, which misses the body wall
        and subcutaneous fat (a warning says so).
    strict
        Raise :class:`ConfigError` on ids / class names the schemes do not know
        (default: report them, warn, and treat their voxels as unlabelled).

    Returns the canonical Volume (integer dtype, the organs' affine and header)
    and an :class:`AnatomyReport`. Raises :class:`InputError` for an empty label
    map, :class:`GridMismatchError` when the inputs' grids differ.
    """
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    canon = canonical_scheme(scheme)
    dtype = _label_dtype(max(canon.ids))
    if isinstance(organs, Mapping):
        organs, tissues, body = _route_task_masks(organs, scheme, tissues, body)

    # -- organs ---------------------------------------------------------------
    if isinstance(organs, Mapping):
        source = _masks_source(organs)
        if not organs:
            raise InputError(f"{source}: no class masks given")
        vols = list(organs.values())
        ref = vols[0]
        for v in vols[1:]:
            check_same_grid(ref, v)
        arrays = _mask_arrays(organs, source)
        raw_any = np.logical_or.reduce(list(arrays.values()))
        if not raw_any.any():
            raise InputError(f"{source}: empty label map (no mask has a non-zero voxel)")
        labels, ovr = labels_from_masks(arrays, scheme, strict=strict, source=source)
        report = AnatomyReport(source, canon.name, ref.shape, list(ovr.overlaps), label_table="mask names")
        report.unknown_classes = dict(ovr.unknown_classes)
        labels = labels.astype(dtype, copy=False)
    else:
        ref, source = organs, organs.name
        raw = _as_labels(organs)
        raw_any = raw != 0
        if not raw_any.any():
            raise InputError(f"{source}: empty label map (no non-zero voxel)")
        table = embedded_label_table(organs.header)
        if table is not None:  # the file names its ids (TotalSegmentator --ml): map them by name
            labels, unknown_names, unknown = _remap_by_table(raw, table, scheme, dtype)
            hint = _scheme_hint(scheme, names=unknown_names)
            _handle_unknown(source, scheme.name, unknown_names, strict, what="class", hint=hint)
            _handle_unknown(source, scheme.name, unknown, strict, where="the file's own label table")
            report = AnatomyReport(source, canon.name, ref.shape, unknown_ids=unknown, label_table="embedded")
            report.unknown_classes = unknown_names
        else:
            unknown = scheme.unknown_ids(raw)
            _handle_unknown(source, scheme.name, unknown, strict)
            labels = np.where(np.isin(raw, list(unknown)), 0, raw).astype(dtype) if unknown else raw.astype(dtype)
            report = AnatomyReport(source, canon.name, ref.shape, unknown_ids=unknown)
    if not labels.any():
        hint = _scheme_hint(scheme, names=report.unknown_classes, ids=report.unknown_ids)
        raise InputError(f"{source}: no voxel of any class of label scheme {scheme.name!r}{hint}")

    # -- tissue types -----------------------------------------------------------
    if tissues is not None:
        tissue, tissue_any = _tissue_labels(tissues, ref, canon, strict, report, dtype)
        raw_any |= tissue_any
        lost = (tissue != 0) & (labels != 0)
        if lost.any():
            k = int(max(canon.ids)) + 1
            pairs, counts = np.unique(labels[lost].astype(np.int64) * k + tissue[lost], return_counts=True)
            report.overlaps += [
                Overlap(ORGAN_OVER_TISSUE, canon.name_of(int(p // k)), canon.name_of(int(p % k)), int(c))
                for p, c in zip(pairs, counts)
            ]
        labels = np.where(labels != 0, labels, tissue)

    # -- body contour -----------------------------------------------------------
    spacing = ref.spacing
    if modality is not None and modality.lower() not in ("ct", "mr"):
        raise ConfigError(f"unknown modality {modality!r} (expected 'ct' or 'mr')")
    if body is not None:
        if isinstance(body, Volume):
            check_same_grid(ref, body)
        mask = np.asarray(body.array if isinstance(body, Volume) else body) != 0
        if mask.shape != ref.shape[:3]:
            raise InputError(f"body mask shape {mask.shape} does not match {source} {ref.shape}")
        report.contour_source = "given"
    elif image is not None:
        check_same_grid(ref, image)
        if modality is None:
            raise ConfigError(f"{image.name}: the image's modality ('ct' or 'mr') is needed for the body contour")
        fn = body_mask_from_ct if modality.lower() == "ct" else body_mask_from_mr
        mask = fn(image.array, spacing, affine=ref.affine)
        report.contour_source = modality.lower()
    else:
        mask = body_mask_from_labels(raw_any, spacing, affine=ref.affine)
        report.contour_source = "labels"
        if tissues is None:
            log.warning("%s: no body contour (--body, --image) and no tissue masks: the body is the closed hull of "
                        "the labelled structures, without body wall or subcutaneous fat; give TotalSegmentator's "
                        "body (--task body, MR: body_mr) or tissue_types masks", source)

    fill = mask & (labels == 0)
    labels[fill] = canon.id_of("body")
    outside = (labels != 0) & ~mask
    report.body_voxels = int(mask.sum())
    report.body_filled = int(fill.sum())
    report.labelled_outside_body = int(outside.sum())
    report.outside_body_by_class = _class_counts(labels[outside], canon) if outside.any() else {}
    report.class_voxels = _class_counts(labels, canon)
    if report.labelled_outside_body:
        log.info("%s: %d labelled voxels outside the body contour (kept)", source, report.labelled_outside_body)
    return Volume(labels, ref.affine.copy(), ref.header, None), report


def _route_task_masks(
    masks: Mapping[str, Volume], scheme: LabelScheme, tissues: Volume | Mapping[str, Volume] | None,
    body: Volume | np.ndarray | None,
) -> tuple[dict[str, Volume], Volume | Mapping[str, Volume] | None, Volume | np.ndarray | None]:
    """A class-mask folder that also holds TotalSegmentator's ``tissue_types`` and ``body`` task outputs
    (several tasks written into one folder): their masks become the tissues and the body contour
    instead of unknown organ classes. Explicit ``tissues`` / ``body`` win over the folder's."""
    source = _masks_source(masks)
    tissue_names = [n for n in masks if n in TISSUE_PRIORITY and n not in scheme.classes]
    body_names = [n for n in masks if n in BODY_MASK_NAMES and n not in scheme.classes]
    organs = {n: v for n, v in masks.items() if n not in tissue_names and n not in body_names}
    if not organs:
        return dict(masks), tissues, body  # only task masks: let the caller report an empty organ map
    if tissue_names:
        if tissues is None:
            tissues = {n: masks[n] for n in tissue_names}
            log.info("%s: tissue masks %s taken as the tissue types", source, ", ".join(tissue_names))
        else:
            log.warning("%s: ignoring its tissue masks %s (tissue masks were given separately)", source,
                        ", ".join(tissue_names))
    if body_names:
        if body is None:
            ref = masks[body_names[0]]
            union = np.logical_or.reduce([np.asarray(masks[n].array) != 0 for n in body_names])
            if union.any():
                body = Volume(union, ref.affine, ref.header, ref.path)
                log.info("%s: %s taken as the body contour", source, ", ".join(body_names))
        else:
            log.warning("%s: ignoring its body masks %s (a body contour was given separately)", source,
                        ", ".join(body_names))
    return organs, tissues, body


def _remap_by_table(
    raw: np.ndarray, table: Mapping[int, str], scheme: LabelScheme, dtype: type
) -> tuple[np.ndarray, dict[str, int], dict[int, int]]:
    """Label ids named by the file's own ``table`` -> ``scheme`` ids by class name.

    Returns the remapped labels (0 where the class is not in ``scheme``), the voxel counts of
    the named classes ``scheme`` lacks, and of the ids the table does not name.
    """
    counts = np.bincount(raw.ravel()) if raw.size and int(raw.max()) < (1 << 22) else None
    if counts is not None:
        present = {int(i): int(c) for i, c in enumerate(counts) if i and c}
    else:
        ids, cnt = np.unique(raw[raw != 0], return_counts=True)
        present = {int(i): int(c) for i, c in zip(ids, cnt)}
    lut = np.zeros(max(present, default=0) + 1, dtype=dtype)
    unknown_names: dict[str, int] = {}
    unknown_ids: dict[int, int] = {}
    for i, voxels in present.items():
        name = table.get(i)
        if name is None:
            unknown_ids[i] = voxels
        elif name in scheme.classes:
            lut[i] = scheme.id_of(name)
        else:
            unknown_names[name] = unknown_names.get(name, 0) + voxels
    return lut[raw], unknown_names, unknown_ids


def _tissue_labels(
    tissues: Volume | Mapping[str, Volume],
    ref: Volume,
    canon: LabelScheme,
    strict: bool,
    report: AnatomyReport,
    dtype: type,
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue types in canonical ids (overlaps resolved, unknowns reported) and the raw non-zero mask."""
    ids = {n: canon.id_of(n) for n in TISSUE_PRIORITY}
    if isinstance(tissues, Mapping):
        source = _masks_source(tissues)
        for v in tissues.values():
            check_same_grid(ref, v)
        arrays = _mask_arrays(tissues, source)
        unknown = {n: int(a.sum()) for n, a in arrays.items() if n not in ids}
        _handle_unknown(source, "tissue types", unknown, strict, what="class")
        report.unknown_classes.update(unknown)
        tissue, overlaps = _paint(arrays, TISSUE_PRIORITY, ids, TISSUE_OVER_TISSUE, dtype)
        report.overlaps += overlaps
        return tissue, np.logical_or.reduce(list(arrays.values()))
    check_same_grid(ref, tissues)
    raw = _as_labels(tissues)
    table = embedded_label_table(tissues.header)
    if table is not None:  # its own names (e.g. tissue_4_types: intermuscular_fat 4), not assumed ids
        tissue, unknown_names, unknown = _remap_by_table(raw, table, LabelScheme("tissue types", ids), dtype)
        _handle_unknown(tissues.name, "", unknown_names, strict, what="class", where="the tissue types")
        _handle_unknown(tissues.name, "", unknown, strict, where="the file's own label table")
        report.unknown_classes.update(unknown_names)
        report.unknown_tissue_ids = unknown
        return tissue, raw != 0
    tscheme = get_scheme(TISSUE_SCHEME)
    unknown = tscheme.unknown_ids(raw)
    _handle_unknown(tissues.name, tscheme.name, unknown, strict)
    report.unknown_tissue_ids = unknown
    lut = np.zeros(max(int(raw.max()), max(tscheme.ids)) + 1, dtype=dtype)
    for name, i in tscheme.classes.items():
        lut[i] = ids.get(name, 0)
    return lut[raw], raw != 0

"""What building a label volume resolved and reports: overlaps, unknown ids / classes, class sizes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from seg2med.errors import ConfigError
from seg2med.labels.schemes import LabelScheme, get_scheme, guess_scheme, list_schemes

#: every step of building a label map logs under the one name of :mod:`seg2med.anatomy.labelmap`
log = logging.getLogger("seg2med.anatomy.labelmap")


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
    """What :func:`seg2med.anatomy.organs.labels_from_masks` resolved: overlaps, skipped unknown classes, final
    class sizes."""

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
    """What :func:`seg2med.anatomy.build_label_volume` did, JSON-ready through :meth:`to_dict`."""

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


def class_counts(labels: np.ndarray, scheme: LabelScheme) -> dict[str, int]:
    """Voxels of each class present in ``labels`` (named by ``scheme``; an id it lacks by its number)."""
    counts = np.bincount(labels.ravel().astype(np.int64, copy=False))
    names = scheme.id_to_name
    return {names.get(i, str(i)): int(c) for i, c in enumerate(counts) if c and i}


def _plural(word: str) -> str:
    return word + ("es" if word.endswith("s") else "s")


def scheme_hint(scheme: LabelScheme, names: Iterable[str] = (), ids: Iterable[int] = ()) -> str:
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


def handle_unknown(source: str, scheme_name: str, unknown: Mapping, strict: bool, what: str = "id",
                   hint: str = "", where: str | None = None) -> None:
    """Ids / class names (``what``) of ``source`` that ``where`` (default: the label scheme) lacks, with their voxel
    counts: a :class:`ConfigError` with ``strict``, else a warning (their voxels are treated as unlabelled)."""
    if not unknown:
        return
    where = where or f"label scheme {scheme_name!r}"
    msg = f"{source}: {_plural(what)} not in {where}: {_unknown_text(unknown, what)}{hint}"
    if strict:
        raise ConfigError(msg)
    log.warning("%s; these voxels are treated as unlabelled", msg)

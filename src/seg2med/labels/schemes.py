"""Label schemes: class name <-> integer id, kept as data (``resources/schemes/*.yaml``).

One tested source of truth for every class map seg2med reads or writes
(TotalSegmentator ``total`` / ``total_mr`` / ``total_v1`` / ``tissue_types``, AMOS 2022, MAISI,
BraTS 2015 / 2021 / 2023 and Med-DDPM's BraTS convention, FreeSurfer ``aseg``). Id 0 is always background.

A *canonical* scheme is an organ scheme extended with seg2med's own classes
(:data:`EXTENSION_CLASSES`): ``body`` for unlabelled soft tissue inside the body
contour and the TotalSegmentator tissue types, at ids that no public scheme uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from seg2med.errors import ConfigError

#: seg2med's own classes, appended to an organ scheme to form the canonical label volume.
EXTENSION_CLASSES: dict[str, int] = {
    "body": 200,
    "subcutaneous_fat": 201,
    "torso_fat": 202,
    "skeletal_muscle": 203,
    "intermuscular_fat": 204,
}
BACKGROUND = "background"
#: Name suffix of a scheme extended with seg2med's classes (``total+seg2med``).
CANONICAL_SUFFIX = "+seg2med"


@dataclass(frozen=True)
class LabelScheme:
    """An immutable name -> id map with its provenance."""

    name: str
    classes: Mapping[str, int]
    description: str = ""
    source: str = ""
    regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = list(self.classes.values())
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f"label scheme {self.name!r}: duplicate ids {dup}")
        if any((not isinstance(i, int)) or i <= 0 for i in ids):
            raise ConfigError(f"label scheme {self.name!r}: ids must be positive integers (0 is background)")
        for region, members in self.regions.items():
            unknown = [m for m in members if m not in self.classes]
            if unknown:
                raise ConfigError(f"label scheme {self.name!r}: region {region!r} names unknown classes {unknown}")

    # -- lookups -----------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Class names ordered by id."""
        return [n for n, _ in sorted(self.classes.items(), key=lambda kv: kv[1])]

    @property
    def ids(self) -> list[int]:
        return sorted(self.classes.values())

    @property
    def id_to_name(self) -> dict[int, str]:
        return {i: n for n, i in self.classes.items()}

    def id_of(self, name: str) -> int:
        try:
            return int(self.classes[name])
        except KeyError:
            raise ConfigError(f"label scheme {self.name!r} has no class {name!r}") from None

    def name_of(self, label_id: int) -> str:
        if int(label_id) == 0:
            return BACKGROUND
        try:
            return self.id_to_name[int(label_id)]
        except KeyError:
            raise ConfigError(f"label scheme {self.name!r} has no id {label_id}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def __len__(self) -> int:
        return len(self.classes)

    # -- derived schemes ---------------------------------------------------
    def extended(self, extra: Mapping[str, int] | None = None, name: str | None = None) -> "LabelScheme":
        """This scheme plus ``extra`` classes (default: :data:`EXTENSION_CLASSES`).

        Classes of ``extra`` whose name the scheme already has are skipped
        (the scheme's own id is kept).
        """
        extra = EXTENSION_CLASSES if extra is None else extra
        merged = dict(self.classes)
        for n, i in extra.items():
            if n not in merged:
                merged[n] = int(i)
        return LabelScheme(name or f"{self.name}{CANONICAL_SUFFIX}", merged, self.description, self.source, self.regions)

    def to_table(self) -> dict:
        """JSON-serialisable label table (written next to every label volume)."""
        return {
            "scheme": self.name,
            "description": self.description,
            "source": self.source,
            "background": 0,
            "labels": {str(i): n for i, n in sorted(self.id_to_name.items())},
        }

    @classmethod
    def from_table(cls, table: Mapping) -> "LabelScheme":
        try:
            classes = {str(n): int(i) for i, n in table["labels"].items()}
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed label table ({exc})") from None
        return cls(str(table.get("scheme", "custom")), classes, str(table.get("description", "")), str(table.get("source", "")))

    # -- checks on arrays --------------------------------------------------
    def unknown_ids(self, labels: np.ndarray) -> dict[int, int]:
        """Ids present in ``labels`` that the scheme does not define -> voxel count."""
        values, counts = np.unique(np.asarray(labels), return_counts=True)
        known = set(self.classes.values()) | {0}
        return {int(v): int(c) for v, c in zip(values, counts) if int(v) not in known}


def scheme_from_mapping(data: Mapping, origin: str) -> LabelScheme:
    """Build a scheme from parsed YAML/JSON (``name``, ``classes``: name -> id, optional ``regions``)."""
    if not isinstance(data, Mapping) or "classes" not in data or not isinstance(data["classes"], Mapping):
        raise ConfigError(f"{origin}: a label scheme needs a 'classes' mapping of name -> id")
    try:
        classes = {str(n): int(i) for n, i in data["classes"].items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: class ids must be integers") from None
    regions = {str(k): tuple(v) for k, v in (data.get("regions") or {}).items()}
    return LabelScheme(
        str(data.get("name", Path(origin).stem)),
        classes,
        str(data.get("description", "")),
        str(data.get("source", "")),
        regions,
    )


def _scheme_dir():
    return resources.files("seg2med") / "resources" / "schemes"


@lru_cache(maxsize=None)
def list_schemes() -> tuple[str, ...]:
    """Names of the built-in schemes."""
    return tuple(sorted(p.name[: -len(".yaml")] for p in _scheme_dir().iterdir() if p.name.endswith(".yaml")))


@lru_cache(maxsize=None)
def _builtin(name: str) -> LabelScheme:
    text = (_scheme_dir() / f"{name}.yaml").read_text(encoding="utf-8")
    return scheme_from_mapping(yaml.safe_load(text), f"{name}.yaml")


def get_scheme(name: str) -> LabelScheme:
    """A built-in scheme by name (files are read by ``seg2med.io`` and passed to :func:`scheme_from_mapping`)."""
    if name in list_schemes():
        return _builtin(name)
    raise ConfigError(f"unknown label scheme {name!r} (known: {', '.join(list_schemes())})")


def base_scheme_name(scheme: LabelScheme) -> str:
    """The organ scheme a canonical scheme extends (``total+seg2med`` -> ``total``); a plain scheme's own name."""
    return scheme.name[: -len(CANONICAL_SUFFIX)] if scheme.name.endswith(CANONICAL_SUFFIX) else scheme.name


def canonical_scheme(base: str | LabelScheme) -> LabelScheme:
    """The organ scheme ``base`` extended with seg2med's body and tissue-type classes."""
    scheme = get_scheme(base) if isinstance(base, str) else base
    return scheme.extended()


#: Built-in schemes of brain label maps (tumour compartments, brain anatomy): their labelled structures are the head's
#: content, so the closed hull of the labels misses no body wall or fat (no warning about a missing body contour).
BRAIN_SCHEMES = ("brats2015", "brats2021", "brats2023", "brats_medddpm", "aseg", "aseg_tumor")

#: Built-in organ schemes in the order a guess prefers them on ties.
GUESS_ORDER = ("total", "total_mr", "total_v1", "amos", "tissue_types", "brats2021", "brats2015", "brats2023",
               "brats_medddpm", "aseg", "aseg_tumor")


def guess_scheme(label_ids: Iterable[int]) -> str:
    """Best built-in organ scheme for a set of ids (fewest unknown ids; ``total`` on ties)."""
    ids = {int(i) for i in label_ids} - {0} - set(EXTENSION_CLASSES.values())
    return min(GUESS_ORDER, key=lambda s: (len(ids - set(get_scheme(s).classes.values())), GUESS_ORDER.index(s)))


def guess_scheme_by_names(names: Iterable[str], prefer: str | None = None) -> str:
    """Best built-in organ scheme for a set of class names (fewest names it lacks; on ties ``prefer``,
    then ``total``), e.g. for the label table of a TotalSegmentator multilabel file or the mask names
    of a per-class folder."""
    wanted = {str(n) for n in names} - set(EXTENSION_CLASSES)
    order = ([prefer] if prefer in GUESS_ORDER else []) + [s for s in GUESS_ORDER if s != prefer]
    return min(order, key=lambda s: (len(wanted - set(get_scheme(s).classes)), order.index(s)))

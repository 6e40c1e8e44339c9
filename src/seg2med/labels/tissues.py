"""Tissue property table: class name -> CT and MR physical properties (data in ``resources/tissues.yaml``).

A class resolves, in this order, through its entry under ``tissues:`` (values there
override its group's field by field), else the first ``group_patterns:`` regular
expression that matches its name (target: a tissue or a group), else a group of the
same name; anything else is a :class:`~seg2med.errors.ConfigError`, never a silent zero.

:meth:`TissueTable.arrays` turns a table into per-label-id lookup arrays for one label
scheme, so that a prior image is a single vectorised ``lut[labels]``.

An entry may also give ``hu_range: [lo, hi]`` (with ``hu_range_source:``): the plausible range of a CT
class's median HU over native and contrast-enhanced phases, for the quality check of generated volumes
(:meth:`TissueTable.hu_range`; a tissue without one uses its group's). It does not enter the properties.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from seg2med.errors import ConfigError
from seg2med.labels.schemes import BACKGROUND, LabelScheme

#: Field strengths (tesla) the tables provide MR values for.
FIELD_STRENGTHS: tuple[float, ...] = (1.5, 3.0)
CT_FIELDS: tuple[str, ...] = ("hu", "hu_sd")
MR_FIELDS: tuple[str, ...] = ("t1", "t2", "t2s", "pd", "ff")
PROPERTY_FIELDS: tuple[str, ...] = CT_FIELDS + MR_FIELDS
#: Scalars (0-d arrays) that :meth:`TissueTable.arrays` adds for the sequences: the fat
#: group's relaxation (fat compartment of chemical-shift sequences) and the fluid group's T1
#: (default FLAIR inversion time).
REFERENCE_FIELDS: tuple[str, ...] = ("fat_t1", "fat_t2", "fat_t2s", "fluid_t1")
FAT_GROUP = "fat"
FLUID_GROUP = "fluid"

_ENTRY_KEYS = {"group", "ct", "mr", "source", "note", "hu_range", "hu_range_source"}
_TABLE_KEYS = {"groups", "tissues", "group_patterns", "metadata", "version", "description"}


def check_field_strength(field_strength: float) -> float:
    """``field_strength`` as one of :data:`FIELD_STRENGTHS`, else :class:`ConfigError`."""
    try:
        b0 = float(field_strength)
    except (TypeError, ValueError):
        raise ConfigError(f"field strength must be a number, got {field_strength!r}") from None
    for known in FIELD_STRENGTHS:
        if math.isclose(b0, known):
            return known
    raise ConfigError(f"field strength {field_strength!r} T is not supported (known: {', '.join(map(str, FIELD_STRENGTHS))})")


@dataclass(frozen=True)
class TissueProperties:
    """Physical properties of one tissue at one field strength.

    ``hu``/``hu_sd`` in Hounsfield units, ``t1``/``t2``/``t2s`` in ms, ``pd`` proton density
    relative to water, ``ff`` proton-density fat fraction, ``source`` the literature cited.
    """

    hu: float
    hu_sd: float
    t1: float
    t2: float
    t2s: float
    pd: float
    ff: float
    source: str = ""

    def values(self) -> dict[str, float]:
        """The numeric fields as a dict (keys :data:`PROPERTY_FIELDS`)."""
        return {f: getattr(self, f) for f in PROPERTY_FIELDS}


@dataclass(frozen=True)
class HURange:
    """The plausible median HU of a CT class, ``lo``..``hi`` (native and contrast phases), and its source."""

    lo: float
    hi: float
    source: str = ""

    def __contains__(self, value: float) -> bool:
        return self.lo <= value <= self.hi


@dataclass(frozen=True)
class _Entry:
    """One parsed group or tissue entry (possibly partial)."""

    group: str | None = None
    ct: Mapping[str, float] = field(default_factory=dict)
    mr: Mapping[float, Mapping[str, float]] = field(default_factory=dict)
    source: str = ""
    hu_range: HURange | None = None

    @property
    def has_values(self) -> bool:
        return bool(self.ct) or any(self.mr.values())


# -- parsing ---------------------------------------------------------------------------
def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite number, got {value!r}")
    v = float(value)
    if name in ("t1", "t2", "t2s") and v <= 0:
        raise ConfigError(f"{where}: {name} must be > 0 ms, got {v}")
    if name in ("pd", "ff") and not 0.0 <= v <= 1.0:
        raise ConfigError(f"{where}: {name} must lie in [0, 1], got {v}")
    if name == "hu_sd" and v < 0:
        raise ConfigError(f"{where}: hu_sd must be >= 0, got {v}")
    return v


def _values(data: Any, allowed: tuple[str, ...], where: str) -> dict[str, float]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(allowed)}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} (known: {', '.join(allowed)})")
    return {k: _number(v, k, where) for k, v in data.items()}


def _hu_range(data: Mapping, where: str) -> HURange | None:
    value, source = data.get("hu_range"), data.get("hu_range_source")
    if value is None:
        if source is not None:
            raise ConfigError(f"{where}: hu_range_source without hu_range")
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{where}: hu_range must be [lo, hi] in HU, got {value!r}")
    lo, hi = (_number(v, "hu_range", where) for v in value)
    if not lo < hi:
        raise ConfigError(f"{where}: hu_range must have lo < hi, got {value!r}")
    return HURange(lo, hi, str(source or ""))


def _parse_entry(name: str, data: Any, where: str, allow_group: bool) -> _Entry:
    where = f"{where} {name!r}"
    if isinstance(data, str) and allow_group:  # shorthand ``liver: parenchyma``
        data = {"group": data}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(sorted(_ENTRY_KEYS))}")
    unknown = sorted(str(k) for k in data if k not in _ENTRY_KEYS)
    if unknown or ("group" in data and not allow_group):
        raise ConfigError(f"{where}: unknown key(s) {unknown or ['group']}")
    mr_raw = data.get("mr") or {}
    if not isinstance(mr_raw, Mapping):
        raise ConfigError(f"{where}: 'mr' must map field strength -> values")
    mr: dict[float, dict[str, float]] = {}
    for b0, vals in mr_raw.items():
        try:
            key = check_field_strength(b0)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        mr[key] = _values(vals, MR_FIELDS, f"{where} mr {b0}")
    group = data.get("group")
    return _Entry(
        group=None if group is None else str(group),
        ct=_values(data.get("ct"), CT_FIELDS, f"{where} ct"),
        mr=mr,
        source=str(data.get("source") or ""),
        hu_range=_hu_range(data, where),
    )


def _merge_entry(base: _Entry | None, new: _Entry, origin: str) -> _Entry:
    """Field-by-field merge; a new ``group`` different from the base's replaces the entry."""
    if base is None or (new.group is not None and new.group != base.group):
        return new
    mr = {b0: dict(vals) for b0, vals in base.mr.items()}
    for b0, vals in new.mr.items():
        mr.setdefault(b0, {}).update(vals)
    source = new.source or (f"{base.source} [overridden by {origin}]" if new.has_values else base.source)
    return _Entry(base.group, {**base.ct, **new.ct}, mr, source, new.hu_range or base.hu_range)


# -- the table ---------------------------------------------------------------------------
class TissueTable:
    """Groups, per-class tissues and name patterns, validated so every entry resolves completely."""

    def __init__(
        self,
        groups: Mapping[str, _Entry],
        tissues: Mapping[str, _Entry],
        patterns: Mapping[str, str],
        origin: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.origin = origin
        self.metadata = dict(metadata or {})
        self._groups = dict(groups)
        self._tissues = dict(tissues)
        self._patterns: list[tuple[re.Pattern[str], str, str]] = []
        for rx, target in patterns.items():
            try:
                compiled = re.compile(rx)
            except re.error as exc:
                raise ConfigError(f"{origin}: bad group pattern {rx!r} ({exc})") from None
            if target not in self._tissues and target not in self._groups:
                raise ConfigError(f"{origin}: group pattern {rx!r} -> unknown tissue or group {target!r}")
            self._patterns.append((compiled, rx, target))
        for name, entry in self._tissues.items():
            if entry.group is not None and entry.group not in self._groups:
                raise ConfigError(f"{origin}: tissue {name!r} names unknown group {entry.group!r}")
        for missing in (FAT_GROUP, FLUID_GROUP):
            if missing not in self._groups:
                raise ConfigError(f"{origin}: a tissue table needs a {missing!r} group")
        for kind, entries in (("group", self._groups), ("tissue", self._tissues)):
            for name in entries:
                for b0 in FIELD_STRENGTHS:
                    self._resolve_entry(name, entries[name], kind, b0)  # raises if incomplete
        self._array_cache: dict[tuple, dict[str, np.ndarray]] = {}

    # -- inspection --------------------------------------------------------------------
    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._groups)

    @property
    def tissues(self) -> tuple[str, ...]:
        return tuple(self._tissues)

    @property
    def patterns(self) -> tuple[tuple[str, str], ...]:
        """``(regex, target)`` pairs in the order they are tried."""
        return tuple((rx, target) for _, rx, target in self._patterns)

    def resolve(self, class_name: str) -> tuple[str, str]:
        """``(kind, name)`` of the entry a class uses: ``("tissue", t)`` or ``("group", g)``."""
        if class_name in self._tissues:
            return "tissue", class_name
        for compiled, _, target in self._patterns:
            if compiled.search(class_name):
                return ("tissue", target) if target in self._tissues else ("group", target)
        if class_name in self._groups:
            return "group", class_name
        raise ConfigError(
            f"no tissue properties for class {class_name!r} in tissue table {self.origin!r}: "
            "add it under 'tissues:' or match it with 'group_patterns:'"
        )

    def group_of(self, class_name: str) -> str | None:
        """Name of the group a class falls back on (None for a tissue without group)."""
        kind, name = self.resolve(class_name)
        return name if kind == "group" else self._tissues[name].group

    # -- lookups -----------------------------------------------------------------------
    def _resolve_entry(self, name: str, entry: _Entry, kind: str, b0: float) -> TissueProperties:
        group = self._groups[entry.group] if entry.group is not None else _Entry()
        values = {**group.ct, **entry.ct, **group.mr.get(b0, {}), **entry.mr.get(b0, {})}
        missing = [f for f in PROPERTY_FIELDS if f not in values]
        if missing:
            raise ConfigError(f"{self.origin}: {kind} {name!r} lacks {', '.join(missing)} at {b0:g} T")
        return TissueProperties(**values, source=entry.source or group.source)

    def hu_range(self, class_name: str) -> HURange | None:
        """The plausible CT median HU of a class: its entry's ``hu_range``, else its group's; None if neither has one."""
        kind, name = self.resolve(class_name)
        entry = (self._tissues if kind == "tissue" else self._groups)[name]
        if entry.hu_range is None and entry.group is not None:
            return self._groups[entry.group].hu_range
        return entry.hu_range

    def properties(self, class_name: str, field_strength: float) -> TissueProperties:
        """Properties of a class at 1.5 or 3 T (:class:`ConfigError` for an unknown class/field)."""
        b0 = check_field_strength(field_strength)
        kind, name = self.resolve(class_name)
        entries = self._tissues if kind == "tissue" else self._groups
        return self._resolve_entry(name, entries[name], kind, b0)

    def reference(self, field_strength: float) -> dict[str, float]:
        """Fat-group relaxation and fluid-group T1 at a field (see :data:`REFERENCE_FIELDS`)."""
        fat = self.properties(FAT_GROUP, field_strength)
        fluid = self.properties(FLUID_GROUP, field_strength)
        return {"fat_t1": fat.t1, "fat_t2": fat.t2, "fat_t2s": fat.t2s, "fluid_t1": fluid.t1}

    def arrays(self, scheme: LabelScheme, field_strength: float) -> dict[str, np.ndarray]:
        """Per-label-id lookup arrays (float64, length ``max_id + 1``) for one scheme.

        Keys :data:`PROPERTY_FIELDS`; index 0 holds ``background`` (air); ids the scheme
        does not define are NaN. Keys :data:`REFERENCE_FIELDS` are 0-d arrays. The arrays
        are fresh copies, free to modify.
        """
        b0 = check_field_strength(field_strength)
        key = (scheme.name, tuple(sorted(scheme.classes.items())), b0)
        cached = self._array_cache.get(key)
        if cached is None:
            size = max(scheme.ids, default=0) + 1
            cached = {f: np.full(size, np.nan) for f in PROPERTY_FIELDS}
            for label_id, name in [(0, BACKGROUND), *((i, n) for n, i in scheme.classes.items())]:
                props = self.properties(name, b0)
                for f in PROPERTY_FIELDS:
                    cached[f][label_id] = getattr(props, f)
            cached.update({k: np.asarray(v) for k, v in self.reference(b0).items()})
            self._array_cache[key] = cached
        return {k: v.copy() for k, v in cached.items()}

    # -- derived tables ----------------------------------------------------------------
    def merged(self, data: Mapping, origin: str) -> "TissueTable":
        """This table overridden/extended by a parsed user table (see :func:`tissue_table_from_mapping`)."""
        groups, tissues, patterns, metadata = _parse_table(data, origin)
        new_groups = dict(self._groups)
        for name, entry in groups.items():
            new_groups[name] = _merge_entry(new_groups.get(name), entry, origin)
        new_tissues = dict(self._tissues)
        for name, entry in tissues.items():
            new_tissues[name] = _merge_entry(new_tissues.get(name), entry, origin)
        new_patterns = dict(patterns)  # user patterns are tried first
        for _, rx, target in self._patterns:
            new_patterns.setdefault(rx, target)
        return TissueTable(new_groups, new_tissues, new_patterns, f"{self.origin}+{origin}", {**self.metadata, **metadata})

    def __repr__(self) -> str:
        return f"TissueTable({self.origin!r}, {len(self._groups)} groups, {len(self._tissues)} tissues, {len(self._patterns)} patterns)"


def _parse_table(data: Any, origin: str) -> tuple[dict[str, _Entry], dict[str, _Entry], dict[str, str], dict]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: a tissue table must be a mapping with 'groups', 'tissues', 'group_patterns'")
    unknown = sorted(str(k) for k in data if k not in _TABLE_KEYS)
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {unknown} (known: {', '.join(sorted(_TABLE_KEYS))})")
    sections = {}
    for key in ("groups", "tissues", "group_patterns", "metadata"):
        value = data.get(key) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{origin}: '{key}' must be a mapping")
        sections[key] = value
    groups = {str(n): _parse_entry(str(n), e, f"{origin}: group", allow_group=False) for n, e in sections["groups"].items()}
    tissues = {str(n): _parse_entry(str(n), e, f"{origin}: tissue", allow_group=True) for n, e in sections["tissues"].items()}
    patterns = {str(rx): str(target) for rx, target in sections["group_patterns"].items()}
    return groups, tissues, patterns, dict(sections["metadata"])


@lru_cache(maxsize=1)
def load_default_tissue_table() -> TissueTable:
    """The built-in table (``seg2med/resources/tissues.yaml``), parsed once."""
    text = (resources.files("seg2med") / "resources" / "tissues.yaml").read_text(encoding="utf-8")
    groups, tissues, patterns, metadata = _parse_table(yaml.safe_load(text), "tissues.yaml")
    return TissueTable(groups, tissues, patterns, "tissues.yaml", metadata)


def tissue_table_from_mapping(data: Mapping, origin: str, base: TissueTable | None = None) -> TissueTable:
    """A user table (parsed YAML/JSON) applied on top of ``base`` (default: the built-in table).

    Groups and tissues merge per entry and per field (``ct`` fields, ``mr`` fields per field
    strength); a tissue entry that names a *different* ``group`` replaces the base entry.
    New classes, groups and ``group_patterns`` extend the table (user patterns are tried first).
    """
    return (base or load_default_tissue_table()).merged(data, origin)

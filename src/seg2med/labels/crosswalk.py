"""Crosswalks between label schemes, kept as data (``resources/crosswalks/SOURCE--TARGET.yaml``).

A crosswalk says, for EVERY class of the source scheme, what it becomes in the target scheme:

* ``same`` / ``renamed``: the target class of the same structure;
* ``merged`` (``{merge: target}``): the target class of a structure that contains it (the lung lobes -> ``lung_left``, every
  ``vertebrae_*`` -> ``vertebrae``); several source classes may merge into one;
* ``kept``: the target splits it into finer classes and which one is not known (``total_mr`` ``vertebrae`` for
  ``total``): it stays a class of its own in the converted map, at the id given under ``extra_classes``;
* ``dropped``: no target class holds it (ribs for ``total_mr``), with the reason; its voxels become unlabelled.

seg2med's own classes (body 200, tissue types 201-204; :data:`~seg2med.labels.schemes.EXTENSION_CLASSES`) pass
through every crosswalk unchanged. Nothing is matched by name similarity: the tables are written by
``scripts/build_crosswalks.py`` from explicit rules and a test proves that each covers every class of its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from seg2med.errors import ConfigError
from seg2med.labels.schemes import EXTENSION_CLASSES, LabelScheme, get_scheme

KINDS = ("same", "renamed", "merged", "kept", "dropped")
SEG2MED_KIND = "seg2med class"


def _dir():
    return resources.files("seg2med") / "resources" / "crosswalks"


@lru_cache(maxsize=None)
def list_crosswalks() -> tuple[tuple[str, str], ...]:
    """``(source, target)`` of every built-in crosswalk."""
    names = sorted(p.name[: -len(".yaml")] for p in _dir().iterdir() if p.name.endswith(".yaml"))
    return tuple(tuple(n.split("--", 1)) for n in names)  # type: ignore[misc]


@dataclass(frozen=True)
class Crosswalk:
    """Source class name -> target class name (None: dropped), the kind of each and the reason of the kept and
    dropped ones; ``extra`` the ids of the kept classes in the converted map."""

    source: str
    target: str
    targets: Mapping[str, str | None]
    kinds: Mapping[str, str]
    reasons: Mapping[str, str]
    extra: Mapping[str, int]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], origin: str) -> "Crosswalk":
        try:
            source, target, classes = str(data["source"]), str(data["target"]), data["classes"]
        except (KeyError, TypeError):
            raise ConfigError(f"{origin}: a crosswalk needs source, target and classes") from None
        src, dst = get_scheme(source), get_scheme(target)
        extra = {str(k): int(v) for k, v in (data.get("extra_classes") or {}).items()}
        targets: dict[str, str | None] = {}
        kinds: dict[str, str] = {}
        reasons: dict[str, str] = {}
        for name, value in classes.items():
            name = str(name)
            if name not in src.classes:
                raise ConfigError(f"{origin}: {name!r} is not a {source} class")
            merge = isinstance(value, Mapping) and set(value) == {"merge"}
            if isinstance(value, str) or merge:
                to = str(value["merge"] if merge else value)
                if to not in dst.classes and to not in EXTENSION_CLASSES:
                    raise ConfigError(f"{origin}: {name} -> {to!r}, which is not a {target} class")
                targets[name], kinds[name] = to, "merged" if merge else "same" if to == name else "renamed"
            elif isinstance(value, Mapping) and set(value) == {"keep"}:
                if name not in extra:
                    raise ConfigError(f"{origin}: {name} is kept but has no id under extra_classes")
                targets[name], kinds[name], reasons[name] = name, "kept", str(value["keep"])
            elif isinstance(value, Mapping) and set(value) == {"drop"}:
                targets[name], kinds[name], reasons[name] = None, "dropped", str(value["drop"])
            else:
                raise ConfigError(f"{origin}: {name}: a target class name, {{merge: target}}, {{keep: why}} or "
                                  f"{{drop: why}}, got {value!r}")
        missing = [n for n in src.names if n not in targets]
        if missing:
            raise ConfigError(f"{origin}: source classes without an entry: {missing}")
        clash = sorted(set(extra.values()) & (set(dst.ids) | set(EXTENSION_CLASSES.values())))
        if clash:
            raise ConfigError(f"{origin}: extra class ids {clash} are already target or seg2med ids")
        return cls(source, target, targets, kinds, reasons, extra)

    def target_scheme(self, seg2med_classes: bool = True) -> LabelScheme:
        """The converted map's scheme: the target's classes, the kept ones and (``seg2med_classes``) seg2med's own."""
        base = get_scheme(self.target)
        return base.extended({**self.extra, **(EXTENSION_CLASSES if seg2med_classes else {})},
                             name=f"{self.target}+seg2med")

    def apply(self, labels: np.ndarray, scheme: LabelScheme, dropped_to: str | None = None,
              ) -> tuple[np.ndarray, LabelScheme, list[dict[str, Any]]]:
        """``labels`` in ``scheme`` (the source scheme, possibly with seg2med's classes) -> the labels in
        :meth:`target_scheme`, that scheme, and one report row per class present (voxels, kind, target, reason).
        The voxels of dropped classes become unlabelled, or class ``dropped_to`` (``body`` inside a body contour).
        A class outside the source scheme that the target holds by name (kept by an earlier crosswalk) passes."""
        arr = np.asarray(labels)
        dst = self.target_scheme(seg2med_classes=any(n in scheme.classes for n in EXTENSION_CLASSES))
        ids, counts = np.unique(arr, return_counts=True)
        lut = {}
        rows = []
        for i, n in zip(ids.tolist(), counts.tolist()):
            if i == 0:
                continue
            name = scheme.id_to_name.get(int(i))
            if name is None:
                raise ConfigError(f"label id {i} is not a class of scheme {scheme.name!r}")
            if name in self.targets:
                tgt, kind = self.targets[name], self.kinds[name]
            elif name in EXTENSION_CLASSES:
                tgt, kind = name, SEG2MED_KIND
            elif name in dst.classes:  # kept as an extra class by an earlier crosswalk, and a target class
                tgt, kind = name, "same"
            else:
                raise ConfigError(f"class {name!r} of {scheme.name!r} is not a {self.source} class")
            lut[int(i)] = dst.id_of(tgt) if tgt is not None else dst.id_of(dropped_to) if dropped_to else 0
            rows.append({"class": name, "id": int(i), "voxels": int(n), "kind": kind, "target": tgt or dropped_to,
                         "target_id": lut[int(i)] or None, "reason": self.reasons.get(name, "")})
        out = np.zeros(arr.shape, dtype=np.uint8 if max(dst.ids) < 256 else np.uint16)
        for i, j in lut.items():
            if j:
                out[arr == i] = j
        return out, dst, rows


@lru_cache(maxsize=None)
def get_crosswalk(source: str, target: str) -> Crosswalk:
    """The built-in crosswalk ``source`` -> ``target``; ConfigError naming the ones that exist otherwise."""
    if (source, target) not in list_crosswalks():
        targets = sorted(t for s, t in list_crosswalks() if s == source)
        known = f"from {source}: to {', '.join(targets)}" if targets else f"none from {source}"
        raise ConfigError(f"no crosswalk from label scheme {source!r} to {target!r} ({known})")
    text = (_dir() / f"{source}--{target}.yaml").read_text(encoding="utf-8")
    return Crosswalk.from_mapping(yaml.safe_load(text), f"{source}--{target}.yaml")


def summary_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Classes per kind of a report."""
    out: dict[str, int] = {}
    for r in rows:
        out[r["kind"]] = out.get(r["kind"], 0) + 1
    return out


__all__ = ["Crosswalk", "KINDS", "SEG2MED_KIND", "get_crosswalk", "list_crosswalks", "summary_counts"]

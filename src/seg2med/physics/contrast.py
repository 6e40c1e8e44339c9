"""Contrast phases of CT: iodinated-contrast enhancement per tissue (data in ``resources/contrast_phases.yaml``).

The tissue table holds native (non-contrast) HU. A contrast phase adds, per class, the enhancement
(HU) of that phase: from the class's own entry, else the first matching name pattern, else its
tissue-table group, else none. :func:`enhancement_array` gives it per label id for a scheme, the
way :meth:`seg2med.labels.TissueTable.arrays` gives the tissue properties.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from seg2med.errors import ConfigError
from seg2med.labels.schemes import BACKGROUND, LabelScheme
from seg2med.labels.tissues import TissueTable

NATIVE = "native"
PHASES: tuple[str, ...] = (NATIVE, "arterial", "portal_venous")


def check_phase(phase: str) -> str:
    """``phase`` (``portal-venous`` is read as ``portal_venous``) if known; a :class:`ConfigError` otherwise."""
    p = str(phase).lower().replace("-", "_")
    if p not in PHASES:
        raise ConfigError(f"unknown contrast phase {phase!r} (known: {', '.join(PHASES)})")
    return p


@dataclass(frozen=True)
class ContrastTable:
    """Enhancement in HU per phase: by class name, name pattern and tissue group."""

    classes: dict[str, dict[str, float]]
    patterns: tuple[tuple[re.Pattern, dict[str, float]], ...]
    groups: dict[str, dict[str, float]]

    def enhancement(self, class_name: str, phase: str, group: str | None) -> float:
        """HU added to ``class_name`` (tissue-table ``group``) in ``phase``; 0 for the native phase."""
        phase = check_phase(phase)
        if phase == NATIVE:
            return 0.0
        if class_name in self.classes:
            return self.classes[class_name].get(phase, 0.0)
        for rx, values in self.patterns:
            if rx.search(class_name):
                return values.get(phase, 0.0)
        return self.groups.get(group or "", {}).get(phase, 0.0)


def _values(entry: Any, where: str) -> dict[str, float]:
    if not isinstance(entry, dict):
        raise ConfigError(f"contrast_phases.yaml: {where} must be a mapping of phase -> HU")
    out = {}
    for k, v in entry.items():
        if k == "source":
            continue
        phase = check_phase(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or abs(v) > 1000:
            raise ConfigError(f"contrast_phases.yaml: {where}.{k} must be a number of HU within +-1000, got {v!r}")
        out[phase] = float(v)
    return out


@lru_cache(maxsize=1)
def load_contrast_table() -> ContrastTable:
    """The built-in table (``seg2med/resources/contrast_phases.yaml``), parsed once."""
    data = yaml.safe_load((resources.files("seg2med") / "resources" / "contrast_phases.yaml").read_text(encoding="utf-8"))
    return ContrastTable(
        {str(k): _values(v, f"classes.{k}") for k, v in (data.get("classes") or {}).items()},
        tuple((re.compile(str(k)), _values(v, f"patterns.{k}")) for k, v in (data.get("patterns") or {}).items()),
        {str(k): _values(v, f"groups.{k}") for k, v in (data.get("groups") or {}).items()},
    )


def enhancement_array(scheme: LabelScheme, tissues: TissueTable, phase: str) -> np.ndarray:
    """Enhancement (HU, float64) per label id of ``scheme`` (length ``max_id + 1``; 0 for background)."""
    table = load_contrast_table()
    out = np.zeros(max(scheme.ids, default=0) + 1)
    for name, label_id in scheme.classes.items():
        if name != BACKGROUND:
            out[label_id] = table.enhancement(name, phase, tissues.group_of(name))
    return out

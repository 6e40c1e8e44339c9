"""Gadolinium contrast in MR (T1ce): relaxation-rate enhancement per tissue (data in ``resources/gadolinium.yaml``).

A gadolinium-based agent at concentration ``C`` (mmol/L of tissue) adds to the longitudinal relaxation rate
linearly: ``1/T1 = 1/T1₀ + r1·C`` (fast-exchange limit; r1 the agent's relaxivity in L·mmol⁻¹·s⁻¹ at the field
strength; T2 shortening is not modelled, see the table's header). The tissue table holds pre-contrast T1/T2/T2*; this module gives the
per-class concentration a few minutes after a standard dose (0.1 mmol/kg), by class name, name pattern or
tissue-table group (as :mod:`seg2med.physics.contrast` does for iodine in CT), and the agents' relaxivities.
A sequence's ``gd_dose`` scales the concentrations (1 = standard dose, 0 = pre-contrast).

Units: concentrations in mmol/L (mM), relaxivities in L/(mmol·s), relaxation times in ms.
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
from seg2med.labels.tissues import TissueTable, check_field_strength

#: The highest concentration (mM) the table may give: undiluted blood plasma right after a triple dose is ~5 mM.
MAX_CONCENTRATION = 10.0


@dataclass(frozen=True)
class GadoliniumTable:
    """Agents' relaxivities per field strength and tissue concentrations at the standard dose."""

    agents: dict[str, dict[float, float]]  # agent -> field -> r1
    default_agent: str
    classes: dict[str, float]
    patterns: tuple[tuple[re.Pattern, float], ...]
    groups: dict[str, float]

    def concentration(self, class_name: str, group: str | None) -> float:
        """mM in ``class_name`` (tissue-table ``group``) at the standard dose; 0 where no entry applies."""
        if class_name in self.classes:
            return self.classes[class_name]
        for rx, value in self.patterns:
            if rx.search(class_name):
                return value
        return self.groups.get(group or "", 0.0)

    def relaxivity(self, agent: str, field: float) -> float:
        """r1 of ``agent`` at ``field`` tesla, L/(mmol·s)."""
        return self.agents[check_agent(agent)][check_field_strength(field)]


def _number(value: Any, where: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or not 0 <= value <= high:
        raise ConfigError(f"gadolinium.yaml: {where} must be a number in [0, {high:g}], got {value!r}")
    return float(value)


def _concentration(entry: Any, where: str) -> float:
    value = entry.get("mM") if isinstance(entry, dict) else entry
    return _number(value, f"{where}.mM", MAX_CONCENTRATION)


@lru_cache(maxsize=1)
def load_gadolinium_table() -> GadoliniumTable:
    """The built-in table (``seg2med/resources/gadolinium.yaml``), parsed and checked once."""
    data = yaml.safe_load((resources.files("seg2med") / "resources" / "gadolinium.yaml").read_text(encoding="utf-8"))
    agents: dict[str, dict[float, float]] = {}
    for name, entry in (data.get("agents") or {}).items():
        per_field = {}
        for key, value in entry.items():
            if key == "source":
                continue
            b0 = check_field_strength(float(key))
            per_field[b0] = _number(value.get("r1") if isinstance(value, dict) else None, f"agents.{name}.{key}.r1",
                                    100.0)
        agents[str(name)] = per_field
    default = str(data.get("default_agent", ""))
    if default not in agents:
        raise ConfigError(f"gadolinium.yaml: default_agent {default!r} is not one of the agents")
    return GadoliniumTable(
        agents, default,
        {str(k): _concentration(v, f"classes.{k}") for k, v in (data.get("classes") or {}).items()},
        tuple((re.compile(str(k)), _concentration(v, f"patterns.{k}")) for k, v in (data.get("patterns") or {}).items()),
        {str(k): _concentration(v, f"groups.{k}") for k, v in (data.get("groups") or {}).items()},
    )


def list_agents() -> tuple[str, ...]:
    return tuple(load_gadolinium_table().agents)


def check_agent(agent: str) -> str:
    """``agent`` (lower case) if the table knows it; a :class:`ConfigError` listing the known ones otherwise."""
    name = str(agent).lower()
    known = load_gadolinium_table().agents
    if name not in known:
        raise ConfigError(f"unknown gadolinium agent {agent!r} (known: {', '.join(known)})")
    return name


def concentration_array(scheme: LabelScheme, tissues: TissueTable) -> np.ndarray:
    """Concentration (mM at the standard dose, float64) per label id of ``scheme`` (0 for background)."""
    table = load_gadolinium_table()
    out = np.zeros(max(scheme.ids, default=0) + 1)
    for name, label_id in scheme.classes.items():
        if name != BACKGROUND:
            out[label_id] = table.concentration(name, tissues.group_of(name))
    return out


def shortened(time_ms: Any, concentration_mM: Any, relaxivity: float) -> np.ndarray:
    """Relaxation time (ms) with the agent: ``1000 / (1000/T₀ + r·C)`` (rates in 1/s; vectorised)."""
    t0 = np.asarray(time_ms, dtype=np.float64)
    return 1000.0 / (1000.0 / t0 + relaxivity * np.asarray(concentration_mM, dtype=np.float64))

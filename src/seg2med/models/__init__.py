"""Networks and noise schedules (MONAI): presets, configs and builders; the method registry (:mod:`.registry`).

The names below load torch and MONAI on first use (PEP 562), so that importing
:mod:`seg2med.models.registry` (the CLI's help texts) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PRESETS", "ModelConfig", "SchedulerConfig", "build_model", "build_scheduler", "count_parameters", "for_inference"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("seg2med.models.config"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""seg2med: label maps -> physics-based priors -> synthetic CT / MR.

The public Python API lives in :mod:`seg2med.api` and is re-exported here.
"""

from seg2med._version import __version__

#: The API names re-exported here, imported on first use (PEP 562): ``import seg2med`` stays light, so that
#: the console script starts (and can report an interrupt) before numpy, torch and MONAI are loaded.
_API = (
    "LabelVolume", "Prior", "benchmark", "build_anatomy", "convert", "crosswalk", "evaluate", "generate", "get_sequence", "load_tissue_table",
    "make_phantom", "prepare_dataset", "resolve_scheme", "run_demo", "save_generated", "save_label_volume",
    "save_prior", "simulate_prior", "evaluate_unpaired", "evaluate_brain", "edit_lesion", "prepare_brats",
    "prepare_contrasts",
)


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module("seg2med.api"), name)
    try:  # a subpackage, as an eager package would have it after importing the API (seg2med.api, seg2med.io...)
        return importlib.import_module(f"seg2med.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"seg2med.{name}":  # the module exists but lacks a dependency: say that
            raise
        raise AttributeError(f"module 'seg2med' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]  # noqa: PLE0604 - the lazily imported API names

"""seg2med: label maps -> physics-based priors -> synthetic CT / MR.

The public Python API lives in :mod:`seg2med.api` and is re-exported here.
"""

from seg2med._version import __version__

from seg2med.api import (
    LabelVolume,
    Prior,
    benchmark,
    build_anatomy,
    evaluate,
    generate,
    get_sequence,
    load_tissue_table,
    make_phantom,
    prepare_dataset,
    resolve_scheme,
    run_demo,
    save_label_volume,
    save_generated,
    save_prior,
    simulate_prior,
)

__all__ = [
    "LabelVolume",
    "Prior",
    "__version__",
    "benchmark",
    "build_anatomy",
    "evaluate",
    "generate",
    "get_sequence",
    "load_tissue_table",
    "make_phantom",
    "prepare_dataset",
    "resolve_scheme",
    "run_demo",
    "save_label_volume",
    "save_generated",
    "save_prior",
    "simulate_prior",
]

"""Label schemes and tissue property tables (pure data; no torch, no file writing)."""

from seg2med.labels.schemes import (
    BACKGROUND,
    EXTENSION_CLASSES,
    LabelScheme,
    canonical_scheme,
    get_scheme,
    guess_scheme,
    guess_scheme_by_names,
    list_schemes,
    scheme_from_mapping,
)
from seg2med.labels.tissues import (
    FIELD_STRENGTHS,
    PROPERTY_FIELDS,
    REFERENCE_FIELDS,
    TissueProperties,
    TissueTable,
    check_field_strength,
    load_default_tissue_table,
    tissue_table_from_mapping,
)

__all__ = [
    "BACKGROUND",
    "EXTENSION_CLASSES",
    "LabelScheme",
    "canonical_scheme",
    "get_scheme",
    "guess_scheme",
    "guess_scheme_by_names",
    "list_schemes",
    "scheme_from_mapping",
    "FIELD_STRENGTHS",
    "PROPERTY_FIELDS",
    "REFERENCE_FIELDS",
    "TissueProperties",
    "TissueTable",
    "check_field_strength",
    "load_default_tissue_table",
    "tissue_table_from_mapping",
]

"""File input/output: the only layer that touches the file system.

Everything else receives and returns in-memory :class:`Volume` objects.
"""

from seg2med.io.files import (
    atomic_write,
    read_json,
    read_yaml,
    write_json,
    write_text,
)
from seg2med.io.outputs import atomic_outputs, check_output_dir, check_output_file, written_by_seg2med
from seg2med.io.nifti import (
    Volume,
    check_same_grid,
    embedded_label_table,
    is_nifti_path,
    list_nifti,
    load_volume,
    nifti_stem,
    save_volume,
)

__all__ = [
    "Volume",
    "atomic_outputs",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "check_same_grid",
    "embedded_label_table",
    "is_nifti_path",
    "list_nifti",
    "load_volume",
    "nifti_stem",
    "read_json",
    "read_yaml",
    "save_volume",
    "write_json",
    "write_text",
    "written_by_seg2med",
]

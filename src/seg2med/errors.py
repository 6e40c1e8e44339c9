"""Exception types shared by every layer.

Every error a user can cause (bad file, bad option, mismatched grids...) is a
:class:`Seg2MedError`. The CLI prints its message as one line and exits with
``exit_code``; nothing else is caught there, so programming errors keep their
traceback.
"""

from __future__ import annotations


class Seg2MedError(Exception):
    """Base class of all user-facing errors (one-line message, exit code != 0)."""

    exit_code = 2


class InputError(Seg2MedError):
    """An input file or folder is missing, unreadable or invalid."""


class GridMismatchError(InputError):
    """Two volumes that must share a voxel grid do not."""


class OutputExistsError(Seg2MedError):
    """An output path exists and ``overwrite`` was not given."""


class ConfigError(Seg2MedError):
    """An unknown scheme, sequence, option value or a malformed config file."""


class MissingDependencyError(Seg2MedError, ImportError):
    """An optional package a feature needs is not installed (the message names the install command)."""


class BudgetError(ConfigError):
    """An input or option would need more memory than the configured budget (``$SEG2MED_MEMORY_GB``)."""

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


# --------------------------------------------------------------------------- Ctrl-C a library swallowed
_interrupt_seen = False


def note_interrupt() -> None:
    """Record that SIGINT arrived (the CLI's handler calls this before raising KeyboardInterrupt)."""
    global _interrupt_seen
    _interrupt_seen = True


def clear_interrupt() -> None:
    """Forget a recorded SIGINT (the start of a CLI call)."""
    global _interrupt_seen
    _interrupt_seen = False


def interrupt_seen() -> bool:
    """Whether SIGINT arrived during this CLI call."""
    return _interrupt_seen


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived, even when a library caught the first one.

    Lazy imports of torch and MONAI run ``try/except`` blocks that can swallow a KeyboardInterrupt (a
    Ctrl-C in the first seconds of ``generate`` then went on for minutes); the long loops (sampling
    steps, training steps) call this, so such a Ctrl-C still ends the run within one step.
    """
    if _interrupt_seen:
        raise KeyboardInterrupt

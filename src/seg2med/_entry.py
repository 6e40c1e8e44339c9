"""The console script: imports the CLI under its own SIGINT handler, so that Ctrl-C while the heavy libraries
load (numpy, torch, MONAI: a second or more) is one ``error: interrupted`` line too, not a traceback, and is
never lost: a KeyboardInterrupt raised inside a library's import can be swallowed by its ``except:``
clauses (seen: a SIGINT during start-up under load left ``generate`` running), so the handler exits at once
(nothing has been read or written yet)."""

from __future__ import annotations

import os
import signal
import sys

STARTING = "error: interrupted (while starting; nothing was written)\n"


def _interrupted_while_starting(signum: int, frame: object) -> None:
    os.write(2, STARTING.encode())
    os._exit(130)


def main() -> None:
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from seg2med.cli import main as cli_main
    except KeyboardInterrupt:  # a SIGINT handler of the caller's, or one raised before ours was set
        sys.stderr.write(STARTING)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    try:
        cli_main()
    finally:  # the command is over: a Ctrl-C / SIGTERM during interpreter shutdown no longer fails a finished run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

"""The console script: imports the CLI inside a guard, so that Ctrl-C while the heavy libraries load
(numpy, torch, MONAI: a second or more) is one ``error: interrupted`` line too, not a traceback."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    try:
        from seg2med.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (while starting; nothing was written)\n")
        sys.exit(130)
    try:
        cli_main()
    finally:  # the command is over: a Ctrl-C / SIGTERM during interpreter shutdown no longer fails a finished run
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

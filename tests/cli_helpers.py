"""Run the console entry point in-process and capture exit code and output."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys, monkeypatch) -> CliResult:
    from seg2med.cli import main

    monkeypatch.setattr(sys, "argv", ["seg2med", *[str(a) for a in args]])
    code = 0
    try:
        main()
    except SystemExit as exc:  # typer/click and our error path exit this way
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    cap = capsys.readouterr()
    return CliResult(code, cap.out, cap.err)

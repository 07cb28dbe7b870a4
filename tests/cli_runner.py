"""Run the real `tnstore` entry point in-process (fast: no interpreter start, no torch import per call)."""
from __future__ import annotations

import sys


def run_cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """`tnstore ARGS` through `tnstore.cli.app.main`; returns (exit code, stdout, stderr)."""
    from tnstore.cli.app import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["tnstore", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err

"""`tnstore stats ...` (filled in by the statistics work)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass

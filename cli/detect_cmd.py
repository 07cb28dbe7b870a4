"""`tnstore detect` and `tnstore neurons` (filled in by the detection work)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass

"""`tnstore report STORE --out report.html`: one self-contained HTML file of the store (tnstore.report)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tnstore.cli.options import ResultsOpt, StoreArg, store_at


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)


def report_cmd(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[Optional[str], typer.Option("--title", help="Heading of the report.")] = None,
    results: ResultsOpt = None,
) -> None:
    """Write every figure, the key tables and the provenance of the store into one HTML file that opens offline."""
    from tnstore.report import build

    result = build(store_at(store, results), out, title)
    typer.echo(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB, {result.figures} figures, "
               f"{len(result.missing)} analyses not in the store) in {result.seconds:.1f} s")

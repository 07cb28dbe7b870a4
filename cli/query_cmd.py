"""`tnstore info` and `tnstore sql`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tnstore.cli.options import FormatOpt, ResultsOpt, StoreArg


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("sql")(sql)


def info(store: StoreArg, results: ResultsOpt = None) -> None:
    """What a store holds: model, runs, sentences per language/split, arrays and tables."""
    from tnstore.cli.info import describe
    from tnstore.store.store import Store

    typer.echo(describe(Store.open(store, mode="r", results=results).info()))


def sql(
    store: StoreArg,
    query: str = typer.Argument(..., help="SQL over the store's tables (each table is a view of the same name)."),
    fmt: FormatOpt = "table",
    out: Optional[Path] = typer.Option(None, "--out", help="Write the result to a .parquet or .csv file instead."),
    max_rows: int = typer.Option(50, "--max-rows", help="Rows shown by --format table."),
    results: ResultsOpt = None,
) -> None:
    """Run SQL against a store; queries/*.sql are examples to copy."""
    from tnstore.cli.parsing import choice
    from tnstore.cli.render import render, write_result
    from tnstore.store.store import Store

    choice(fmt, ("table", "csv", "json"), "--format")
    result = Store.open(store, mode="r", results=results).query(query)
    if out is not None:
        write_result(result, out)
        typer.echo(f"wrote {result.num_rows} rows to {out}")
        return
    typer.echo(render(result, fmt, max_rows), nl=False)

"""`tnstore info` and `tnstore sql`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tnstore.cli.options import StoreArg
from tnstore.errors import TnstoreError


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("sql")(sql)


def info(store: StoreArg) -> None:
    """What a store holds: model, runs, sentences per language/split, arrays and tables."""
    from tnstore.store.inspect import describe_store

    typer.echo(describe_store(store))


def sql(
    store: StoreArg,
    query: str = typer.Argument(..., help="SQL over the store's tables (each table is a view of the same name)."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the result to a .parquet or .csv file instead."),
    max_rows: int = typer.Option(50, "--max-rows", help="Rows shown by --format table."),
) -> None:
    """Run SQL against a store; queries/*.sql are examples to copy."""
    from tnstore.store.render import render, write_result
    from tnstore.store.store import Store

    if fmt not in ("table", "csv", "json"):
        raise TnstoreError(f"--format {fmt!r} is not one of table, csv, json")
    result = Store.open(store).sql(query)
    if out is not None:
        write_result(result, out)
        typer.echo(f"wrote {result.num_rows} rows to {out}")
        return
    typer.echo(render(result, fmt, max_rows), nl=False)

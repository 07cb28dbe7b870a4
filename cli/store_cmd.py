"""`tnstore verify` and `tnstore export`: checking a store file by file, and writing a smaller copy of it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tnstore.cli.options import StoreArg


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.command("export")(export)


def verify(
    store: StoreArg,
    fast: bool = typer.Option(False, "--fast", help="Presence and sizes only (reads no file)."),
) -> None:
    """Check every file against the store's catalogs: exit 0 if sound, else one line per damaged file and exit 1."""
    from tnstore.store.verify import render, verify as run_verify

    report = run_verify(store, fast=fast)
    typer.echo(render(report))
    raise typer.Exit(0 if report.ok else 1)


def export(
    store: StoreArg,
    out: Path = typer.Argument(..., help="The new store's folder (must not exist, or be empty)."),
    arrays: Optional[str] = typer.Option(None, "--arrays", help="Arrays to copy, e.g. hidden,resid_pre_mlp "
                                         "(default: all the store has)."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate over `sentences` picking the rows "
                                        "to copy (default: every row); rows are renumbered from 0."),
    tables: str = typer.Option("all", "--tables", help="Analysis tables to copy: all | none | a comma list "
                               "(model, runs and sentences always)."),
) -> None:
    """Write a smaller, valid store: some arrays, rows and tables of STORE (local or remote)."""
    from tnstore.store.export import export as run_export

    names = None if arrays is None else [a.strip() for a in arrays.split(",") if a.strip()]
    chosen: object = tables if tables in ("all", "none") else [t.strip() for t in tables.split(",") if t.strip()]
    typer.echo(run_export(store, out, arrays=names, where=where, tables=chosen).describe())

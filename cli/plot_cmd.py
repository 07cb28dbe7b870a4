"""`tnstore plot STORE NAME|all|--list`: the paper's figures from a store's tables (tnstore.figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tnstore.cli.options import ResultsOpt, StoreArg, store_at

NAME_HELP = "Figure to draw (see --list), or `all` for every figure the store can draw."
LAYERS_HELP = ("Layers to draw: A:B (B excluded) or 0,4,8. Latent figures count hidden indices (0 = embeddings, "
               "l = output of layer l), neuron figures 0-based decoder layers.")


def register(app: typer.Typer) -> None:
    app.command("plot")(plot_cmd)


def plot_cmd(
    store: StoreArg,
    name: Annotated[Optional[str], typer.Argument(help=NAME_HELP, show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the figures, the tables each reads and whether "
                                                       "this store has them.")] = False,
    layers: Annotated[Optional[str], typer.Option("--layers", help=LAYERS_HELP)] = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="Transfer-neuron type(s): 1, 2 or 1,2.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the figure files (created if missing).")] = Path("."),
    fmt: Annotated[str, typer.Option("--format", help="png | pdf | svg")] = "png",
    results: ResultsOpt = None,
) -> None:
    """Draw a figure of the paper from the store's tables: PNG by default, one file per analysis group."""
    from tnstore.errors import TnstoreError

    store = store_at(store, results)

    if list_:
        if name is not None:
            raise TnstoreError("give either --list or a figure name, not both")
        _list(store)
        return
    if name is None:
        raise TnstoreError("name a figure (see `tnstore plot STORE --list`) or `all`")
    from tnstore.cli.parsing import index_list, numbers
    from tnstore.figures.output import plot

    result = plot(store, name, out, fmt, layers=index_list(layers),
                  types=None if type_ is None else numbers(type_, "--type", int))
    for path in result.written:
        typer.echo(f"wrote {path}")
    for line in result.skipped:
        typer.echo(f"skipped {line}")


def _list(store: object) -> None:
    from tnstore.figures.registry import status
    from tnstore.store.store import open_store

    rows = status(open_store(store, mode="r")).to_pylist()
    width = max(len(r["figure"]) for r in rows)
    for r in rows:
        head = f"{r['figure']:<{width}}  {'ready  ' if r['ready'] else 'missing'}  {r['paper']:<27}"
        tail = (f"{r['tables']} ({r['rows']} rows)" if r["ready"]
                else f"{r['tables']}: make it with `{r['make_it_with']}`")
        typer.echo(f"{head}  {tail}")
        typer.echo(f"{'':<{width}}  {r['shows']}")
    ready = sum(r["ready"] for r in rows)
    where = getattr(store, "label", store)
    typer.echo(f"{ready} of {len(rows)} figures can be drawn; `tnstore plot {where} all --out DIR` draws them")

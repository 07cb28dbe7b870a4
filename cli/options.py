"""Options every command group shares, declared once; and how the library's argument names read as flags."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

StoreArg = Annotated[str, typer.Argument(help="Store directory, or a store's URL (http(s)://, s3://: read-only).")]
ResultsOpt = Annotated[Optional[Path], typer.Option(
    "--results", help="Local folder for the tables this command writes, for a store that cannot be written (a "
                      "remote one): reads see them on top of the store's; give later commands the same folder.")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for another writer to finish (default: refuse).")]
SplitOpt = Annotated[str, typer.Option("--split", help="Only sentences of this split; `all` for any split.")]
FormatOpt = Annotated[str, typer.Option("--format", help="table | csv | json")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", help="Run the streaming pass on a dask.distributed cluster: tcp://HOST:PORT of a running "
                        "scheduler, or local:N for N worker processes on this machine. Workers read the store by "
                        "its path (a shared filesystem).")]

# The selection contract's default predicates (tnstore.store.selection), spelled out for --help without importing
# it; tests/tiny_models/test_cli_help.py checks they match.
PLAIN = "ablation IS NULL"
PLAIN_PARALLEL = "kind = 'parallel' AND ablation IS NULL"


def where_option(default: str, what: str = "the sentences") -> object:
    """A --where option whose library default is `default` (None is passed through: the library applies it)."""
    return typer.Option("--where", help=f"SQL predicate over `sentences` picking {what}; replaces the default "
                                              f"({default}). A sentence captured twice counts once.")


WhereOpt = Annotated[Optional[str], where_option(PLAIN)]
ParallelWhereOpt = Annotated[Optional[str], where_option(PLAIN_PARALLEL)]

# Library argument -> the flag a CLI user typed, where the two are not simply `--` + dashes.
FLAGS = {"wait_seconds": "--wait", "families": "--family", "type": "--type", "ablate": "--ablate",
         "fmt": "--format", "k": "--k", "types": "--type", "out_dir": "--out", "all_layers": "--all-layers"}


def flag_for(arg: str) -> str:
    return FLAGS.get(arg, "--" + arg.replace("_", "-"))


def store_at(store: str, results: Optional[Path]) -> object:
    """The store argument as the library takes it: a path or URL, or the Store opened with its results folder."""
    if results is None:
        return store
    from tnstore.store.store import Store

    return Store.open(store, results=results)

"""The `tnstore` command. Every subcommand is a thin shell over a library function.

Problems a user can fix (TnstoreError) end as one line on stderr and exit code 2; an ArgumentError names the
flag the user typed. A damaged store is a TnstoreError too (DamagedStoreError, raised by the Store's reads, names
the file and `tnstore verify`); an unexpected I/O error still ends in one line. `tnstore verify` alone exits 1 for
a damaged store (its report is the output, not an error). Command modules import only typer at import time,
so `tnstore --help` starts fast.
"""
from __future__ import annotations

import sys

import tnstore  # noqa: F401  (sets the thread environment before torch or numpy is imported anywhere)
import typer

from tnstore.cli import (
    capture_cmd, detect_cmd, eval_cmd, latent_cmd, plot_cmd, query_cmd, replay_cmd, report_cmd, stats_cmd,
    store_cmd,
)
from tnstore.cli.options import flag_for
from tnstore.errors import ArgumentError, TnstoreError

app = typer.Typer(
    name="tnstore",
    help="Activation store with SQL analytics for the Transfer Neurons Hypothesis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
capture_cmd.register(app)
query_cmd.register(app)
detect_cmd.register(app)
stats_cmd.register(app)
latent_cmd.register(app)
replay_cmd.register(app)
plot_cmd.register(app)
report_cmd.register(app)
eval_cmd.register(app)
store_cmd.register(app)


def main() -> None:
    try:
        app()
    except ArgumentError as exc:
        typer.echo(f"error: {exc.rendered(flag_for)}", err=True)
        sys.exit(2)
    except TnstoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (OSError, EOFError) as exc:
        # A file the Store did not expect to fail (a disk error, a file vanishing under a reader): one line too.
        typer.echo(f"error: {_oneline(exc)}; if a store is damaged, `tnstore verify STORE` lists its files", err=True)
        sys.exit(2)


def _oneline(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    main()

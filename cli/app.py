"""The `tnstore` command. Every subcommand is a thin shell over a library function.

Problems a user can fix (TnstoreError) end as one line on stderr and exit code 2; an ArgumentError names the
flag the user typed. Command modules import only typer at import time, so `tnstore --help` starts fast.
"""
from __future__ import annotations

import sys

import tnstore  # noqa: F401  (sets the thread environment before torch or numpy is imported anywhere)
import typer

from tnstore.cli import (capture_cmd, detect_cmd, eval_cmd, latent_cmd, plot_cmd, query_cmd, replay_cmd, report_cmd,
                         stats_cmd)
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


def main() -> None:
    try:
        app()
    except ArgumentError as exc:
        typer.echo(f"error: {exc.rendered(flag_for)}", err=True)
        sys.exit(2)
    except TnstoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""`tnstore replay STORE --sets A,B ...` and `tnstore replay cross-lingual STORE ...`: thin shells over
tnstore.capture.replay.replay and tnstore.analysis.crossling.cross_lingual."""
from __future__ import annotations

import shlex
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from tnstore.cli.options import ResultsOpt, StoreArg, WaitOpt, store_at

DEFAULT = "run"


class _DefaultToRun(TyperGroup):
    """`tnstore replay STORE ...` means `tnstore replay run STORE ...`: a first argument that is not a subcommand
    (nor an option) is the store of the default command."""

    def parse_args(self, ctx, args):  # noqa: ANN001 (click's signature)
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = [DEFAULT] + list(args)
        return super().parse_args(ctx, args)


replay_app = typer.Typer(
    cls=_DefaultToRun, no_args_is_help=True,
    help="Re-run sentences already captured plain in the store with neuron sets deactivated (method §5): "
         "`tnstore replay STORE --sets A,B [--split test] [--langs ja] [--kind parallel|nonparallel]`; "
         "`tnstore replay cross-lingual STORE --type 1` for App. I. Options: `tnstore replay run --help`.")

PositionsOpt = Annotated[str, typer.Option(
    "--positions", help="last: zero α at each sentence's last token (the authors' hidden-state, kNN and similarity "
    "runs); all: at every position.")]
LangsHelp = "Languages to replay, e.g. ja,it (default: every language but English)."
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="Default: the store's own model; another spec must hold the same weights.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Compute dtype: float32 | bfloat16 | float16.")]
StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage-dtype", help="Stored dtype: float16 | float32 (default: the store's).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1)]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]


def register(app: typer.Typer) -> None:
    app.add_typer(replay_app, name="replay")


def _names(text: Optional[str], flag: str) -> Optional[list[str]]:
    from tnstore.cli.parsing import names

    return names(text, flag)


def _command() -> str:
    return shlex.join(["tnstore"] + sys.argv[1:])


@replay_app.command(DEFAULT)
def run(
    store: StoreArg,
    sets: str = typer.Option(..., "--sets", help="Neuron sets to deactivate, one replay each: transfer-neuron "
                             "set_ids or neuron_sets names, e.g. SET,RANDOM (see `tnstore neurons list`)."),
    split: str = typer.Option("test", "--split", help="Replay sentences of this split (`all`: any)."),
    langs: Optional[str] = typer.Option(None, "--langs", help=LangsHelp),
    kind: str = typer.Option("parallel", "--kind", help="parallel | nonparallel | mono | all."),
    where: Optional[str] = typer.Option(None, "--where", help="Extra SQL predicate over `sentences` (plain captures "
                                        "only are replayed)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="The first N sentences of each language, in row order."),
    positions: PositionsOpt = "last",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    storage_dtype: StorageOpt = None,
    batch_size: BatchOpt = 32,
    chunk_rows: int = typer.Option(256, "--chunk-rows", min=1, help="Rows per Zarr chunk; the unit a resumed "
                                   "replay restarts from."),
    wait: WaitOpt = 0.0,
    quiet: QuietOpt = False,
) -> None:
    """Replay plain sentences with each set deactivated; each becomes a condition of the same sentences."""
    from tnstore.capture.replay import replay

    result = replay(store, _names(sets, "--sets"), split=split, langs=_names(langs, "--langs"), kind=kind,
                    where=where, limit=limit, positions=positions, model=model, device=device, dtype=dtype,
                    storage_dtype=storage_dtype, batch_size=batch_size, chunk_rows=chunk_rows, wait_seconds=wait,
                    progress=not quiet, command=_command())
    for line in result.describe():
        typer.echo(line)


@replay_app.command("cross-lingual")
def cross_lingual_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    type_: int = typer.Option(..., "--type", help="1 or 2: whose transfer-neuron sets to deactivate."),
    langs: Optional[str] = typer.Option(None, "--langs", help="L1 = L2 languages, e.g. ja,nl,ko,it (default: every "
                                        "language with a set of that type)."),
    split: str = typer.Option("test", "--split", help="Sentences of this split."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Hidden index to report (default: the output of "
                                        "each set's last candidate layer, as the paper)."),
    all_layers: bool = typer.Option(False, "--all-layers", help="Every hidden index 0..L."),
    top: Optional[int] = typer.Option(None, "--top", help="Pick each language's set by its top-n when several "
                                      "are stored."),
    limit: Optional[int] = typer.Option(None, "--limit", help="The first N sentences of each language."),
    positions: PositionsOpt = "last",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    storage_dtype: StorageOpt = None,
    batch_size: BatchOpt = 32,
    wait: WaitOpt = 0.0,
    quiet: QuietOpt = False,
) -> None:
    """App. I: cos(C_L2, C_L2 with L1's transfer neurons deactivated) for every L1 x L2; writes
    crossling_deactivation and prints the paper's matrix (Tab. 21-23)."""
    from tnstore.analysis.crossling import cross_lingual
    from tnstore.cli.render import render

    result = cross_lingual(store_at(store, results), type=type_, langs=_names(langs, "--langs"), split=split, layer=layer,
                           all_layers=all_layers, top=top, positions=positions, limit=limit, model=model,
                           device=device, dtype=dtype, storage_dtype=storage_dtype, batch_size=batch_size,
                           wait_seconds=wait, progress=not quiet, command=_command())
    for line in result.replay.describe():
        typer.echo(line)
    typer.echo("sets: " + ", ".join(f"{l1} {set_id}" for l1, set_id in result.sets.items()))
    typer.echo("sentences per input language (plain and replayed): "
               + ", ".join(f"{l2} {n}" for l2, n in result.counts.items()))
    typer.echo(f"cos(C_L2, C_L2 with L1's Type-{result.type} TNs deactivated at positions {result.positions}); rows: "
               "L1 (set_lang), columns: input L2; the diagonal is Same")
    for index in result.hidden_indices:
        typer.echo(f"hidden index {index}:")
        typer.echo(render(result.matrix(index), "table", 100), nl=False)
    typer.echo(f"wrote {result.table_arrow.num_rows} rows to crossling_deactivation")

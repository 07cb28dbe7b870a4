"""`tnstore detect` and `tnstore neurons random|import|export|list`: thin shells over tnstore.analysis.detect /
neurons."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tnstore.cli.options import FormatOpt, ResultsOpt, SchedulerOpt, SplitOpt, StoreArg, WaitOpt, WhereOpt, store_at

SHOWN = 5  # top neurons printed after a detection

neurons_app = typer.Typer(name="neurons", help="Named neuron sets: random baselines, sets from and to files, and what "
                          "is stored.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)
    app.add_typer(neurons_app, name="neurons")


def detect(
    store: StoreArg,
    results: ResultsOpt = None,
    type_: int = typer.Option(
        ..., "--type", help="1: L2 -> shared space (early layers); 2: shared space -> L2 (late layers)."),
    lang: str = typer.Option(..., "--lang", help="The L2, as stored in sentences.lang (e.g. ja)."),
    top: int = typer.Option(1000, "--top", help="How many top-scoring neurons form the set."),
    layers: Optional[str] = typer.Option(
        None, "--layers", help="Candidate decoder layers A:B, 0-based, B excluded (default: the paper's split: the "
        "first round(L*20/32) layers, rounded half up, for Type-1; the rest for Type-2)."),
    split: SplitOpt = "train",
    where: WhereOpt = None,
    dist: str = typer.Option("cosine", "--dist", help="cosine | euclidean (negative distance: closer is better)."),
    wait: WaitOpt = 0.0,
    scheduler: SchedulerOpt = None,
) -> None:
    """Score every candidate neuron (Eq. 7-9) and store the ranked top-n transfer neurons."""
    from tnstore.analysis.detect import detect as run_detect
    from tnstore.cli.parsing import layer_range, scheduler as parse_scheduler

    result = run_detect(store_at(store, results), type=type_, lang=lang, top=top, layers=layer_range(layers), split=split, where=where,
                        dist=dist, wait_seconds=wait, scheduler=parse_scheduler(scheduler))
    s = result.settings
    pairs = f", {result.n_pairs} en-{s.lang} pairs" if s.type == 1 else ""
    typer.echo(
        f"Type-{s.type} transfer neurons for {s.lang}: top {result.ranking_arrow.num_rows} of {result.n_candidates} "
        f"candidates (layers {s.layer_start}:{s.layer_end} of {result.n_layers}, {s.dist}, split {s.split}: "
        f"{result.n_sentences} {s.lang} sentences{pairs}) in {result.seconds:.1f} s")
    typer.echo(f"set_id {s.set_id}  (tables transfer_neurons, neuron_scores, centroids)")
    typer.echo("  rank  layer  neuron  score")
    for row in result.ranking_arrow.slice(0, SHOWN).to_pylist():
        typer.echo(f"  {row['rank']:>4}  {row['layer']:>5}  {row['neuron']:>6}  {row['score']:.6g}")


@neurons_app.command("random")
def neurons_random(
    store: StoreArg,
    results: ResultsOpt = None,
    like: str = typer.Option(..., "--like", help="The transfer-neuron set to mimic: type=1,lang=ja "
                             "[,split=..,dist=..,layers=A:B,top=N,set=SET_ID]."),
    top: Optional[int] = typer.Option(None, "--top", help="Pick the set with this top-n when several match."),
    seed: int = typer.Option(42, "--seed", help="Random seed (same seed, same set; 42 as the authors)."),
    match_layers: bool = typer.Option(False, "--match-layers", help="Draw the set's count in each of its layers "
                                      "(default: anywhere in its candidate layers)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the stored set (default "
                                       "random_<set_id>_seed<seed>, + _matched with --match-layers)."),
    wait: WaitOpt = 0.0,
) -> None:
    """Store a random baseline: as many neurons as the set, from its candidate layers, excluding its neurons."""
    from tnstore.analysis.neurons import random_baseline
    from tnstore.cli.parsing import like as parse_like

    drawn = random_baseline(store_at(store, results), parse_like(like), top=top, seed=seed, name=name,
                            match_layers=match_layers, wait_seconds=wait)
    where = "the same count in each of its layers" if drawn.match_layers else \
        f"layers {drawn.layer_start}:{drawn.layer_end}"
    typer.echo(f"stored {len(drawn.layers)} random neurons from {where} (excluding {drawn.like_set_id}, seed "
               f"{drawn.seed}) as neuron set {drawn.name}")


@neurons_app.command("import")
def neurons_import(
    store: StoreArg,
    results: ResultsOpt = None,
    file: Path = typer.Argument(..., help="CSV or Parquet file with integer columns layer (0-based decoder layer) "
                                "and neuron; other columns are ignored."),
    name: str = typer.Option(..., "--name", help="Name of the stored set (used by --sets, --conditions, --ablate)."),
    lang: Optional[str] = typer.Option(None, "--lang", help="The language the set belongs to (recorded with it)."),
    type_: Optional[int] = typer.Option(None, "--type", help="1 or 2, if it is a transfer-neuron set (recorded)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Candidate layers A:B for random baselines "
                                         "(default: the layers the set spans)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a stored set of the same name."),
    wait: WaitOpt = 0.0,
) -> None:
    """Store a neuron set from a file, checked against the model's shape (duplicates and unknown neurons refused)."""
    import numpy as np

    from tnstore.analysis.neurons import import_set
    from tnstore.cli.parsing import layer_range

    got = import_set(store_at(store, results), file, name, lang=lang, type=type_, layers=layer_range(layers),
                     replace=replace, wait_seconds=wait)
    per_layer = ", ".join(f"{int(l)}: {int(n)}" for l, n in zip(*np.unique(got.layers, return_counts=True)))
    typer.echo(f"stored {len(got.layers)} neurons from {got.source} as neuron set {got.name} (digest {got.digest}; "
               f"per layer {per_layer})")


@neurons_app.command("export")
def neurons_export(
    store: StoreArg,
    results: ResultsOpt = None,
    name: str = typer.Argument(..., help="A neuron set name or transfer-neuron set_id (see `tnstore neurons list`)."),
    out: Path = typer.Option(..., "--out", help="File to write: .csv or .parquet."),
) -> None:
    """Write a stored set to a file (layer, neuron; rank and score for a transfer-neuron set)."""
    from tnstore.analysis.neurons import export_set

    got = export_set(store_at(store, results), name, out)
    typer.echo(f"wrote {got.n} neurons of {got.name} ({got.origin}, digest {got.digest}) to {got.path}")


@neurons_app.command("list")
def neurons_list(store: StoreArg, fmt: FormatOpt = "table", results: ResultsOpt = None) -> None:
    """Stored neuron sets: transfer-neuron sets from detect and named sets (random baselines)."""
    from tnstore.analysis.neurons import list_sets
    from tnstore.cli.parsing import choice
    from tnstore.cli.render import render

    choice(fmt, ("table", "csv", "json"), "--format")
    typer.echo(render(list_sets(store_at(store, results)).arrow(), fmt, max_rows=1000), nl=False)

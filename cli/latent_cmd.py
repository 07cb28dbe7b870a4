"""`tnstore latent ...`: the latent-space analyses of method §3 (App. B, C, E). Each command writes its table and
prints a per-layer summary; the work is in tnstore.analysis.latent, the figures (--figure) in tnstore.figures."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tnstore.cli.options import (PLAIN, PLAIN_PARALLEL, ResultsOpt, SchedulerOpt, SplitOpt, StoreArg, WaitOpt, store_at,
                                 where_option)

if TYPE_CHECKING:
    from tnstore.analysis.latent import LatentResult

LAYERS_HELP = ("Hidden indices to compute: A:B (B excluded) or 0,8,16 (0 = embeddings, l = output of layer l); "
               "default all.")
LANG_HELP = "The L2 of the en-L2 pairs (default: every language with the pairs it needs)."
FIGURE_HELP = "Also draw the result into this image file (.png, .pdf, .svg)."

# The options every latent command shares, declared once.
GroupWhereOpt = Annotated[Optional[str], where_option(PLAIN_PARALLEL)]
PairWhereOpt = Annotated[Optional[str], where_option(PLAIN, "the sentences pairs are formed from (pairs = en and "
                                                              "L2 rows with the same pair_id and split)")]
LayersOpt = Annotated[Optional[str], typer.Option("--layers", help=LAYERS_HELP)]
FigureOpt = Annotated[Optional[Path], typer.Option("--figure", help=FIGURE_HELP)]
LangOpt = Annotated[Optional[str], typer.Option("--lang", help=LANG_HELP)]
ConditionsOpt = Annotated[Optional[str], typer.Option(
    "--conditions", help="Compare conditions in one table: none (plain) and neuron-set names, e.g. none,SET,RANDOM: "
    "the non-English side as replayed with the set deactivated (tnstore replay), English always plain; the summary "
    "shows them side by side with each one's difference to none.")]
PositionsOpt = Annotated[Optional[str], typer.Option(
    "--positions", help="last | all: which replays a --conditions set reads, where it was replayed at both.")]

latent_app = typer.Typer(help="Latent-space analyses (§3): PCA, dimensionality, centroids, mutual k-NN, "
                              "pair similarity, linear probe, trajectory.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(latent_app, name="latent")


def _check(figure: Optional[Path]) -> None:
    if figure is not None:
        from tnstore.figures.output import check_figure_path

        check_figure_path(figure)


def _report(result: "LatentResult") -> None:
    from tnstore.cli.render import render

    for note in result.notes:
        typer.echo(note)
    typer.echo(render(result.summary_arrow, "table", 1000), nl=False)
    ids = ", ".join(result.analysis_ids)
    typer.echo(f"wrote {result.table_arrow.num_rows} rows to {result.table_name} (analysis_id {ids})")


def _layers(text: Optional[str]) -> Optional[list[int]]:
    from tnstore.cli.parsing import index_list

    return index_list(text)


def _conditions(text: Optional[str]) -> Optional[list[str]]:
    from tnstore.cli.parsing import names

    return names(text, "--conditions")


def _figure(store: Path, result: "LatentResult", figure: Optional[Path], name: str, **options: object) -> None:
    """Draw this run's rows as figure type `name` of tnstore.figures (the same figure `tnstore plot` draws)."""
    if figure is None:
        return
    from tnstore.figures.output import draw_table, save
    from tnstore.store.store import Store

    model = str(Store.open(store, mode="r").model_facts.get("model_spec", "?"))
    typer.echo(f"figure: {save(draw_table(name, result.table_arrow, model, **options), figure)}")


@latent_app.command("pca")
def pca_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    where: GroupWhereOpt = None,
    split: SplitOpt = "train",
    layers: LayersOpt = None,
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """PCA of the last-token hidden states of all selected languages together, per layer; writes latent_pca."""
    _check(figure)
    from tnstore.analysis.latent import pca

    result = pca(store_at(store, results), where=where, split=split, layers=_layers(layers),
                 conditions=_conditions(conditions), positions=positions, wait_seconds=wait)
    _report(result)
    _figure(store, result, figure, "pca")


@latent_app.command("dims")
def dims_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    thresholds: str = typer.Option("0.9,0.95,0.99", "--thresholds", help="Cumulative σ² shares to reach."),
    center: bool = typer.Option(False, "--center/--raw", help="Subtract each language's mean first "
                                "(default --raw: the raw matrix's singular values, as the paper)."),
    where: GroupWhereOpt = None,
    split: SplitOpt = "train",
    layers: LayersOpt = None,
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Per layer and language: how many singular values explain each share of Σσ²; writes latent_dims."""
    _check(figure)
    from tnstore.analysis.latent import dims
    from tnstore.cli.parsing import numbers

    result = dims(store_at(store, results), numbers(thresholds, "--thresholds"), where=where, split=split,
                  layers=_layers(layers), center=center, conditions=_conditions(conditions), positions=positions,
                  wait_seconds=wait)
    _report(result)
    _figure(store, result, figure, "dims")


@latent_app.command("centroids")
def centroids_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    where: GroupWhereOpt = None,
    split: SplitOpt = "train",
    layers: LayersOpt = None,
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
    scheduler: SchedulerOpt = None,
) -> None:
    """Per layer, cosine similarity between language centroids; writes latent_centroid_cos."""
    _check(figure)
    from tnstore.analysis.latent import centroids
    from tnstore.cli.parsing import scheduler as parse_scheduler

    result = centroids(store_at(store, results), where=where, split=split, layers=_layers(layers),
                       conditions=_conditions(conditions), positions=positions, wait_seconds=wait,
                       scheduler=parse_scheduler(scheduler))
    _report(result)
    _figure(store, result, figure, "centroids")


@latent_app.command("knn")
def knn_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    k: str = typer.Option("5,10", "--k", help="Neighbourhood sizes, e.g. 5,10."),
    lang: LangOpt = None,
    tie_seed: int = typer.Option(0, "--tie-seed", help="Seed of the random order of equal similarities (identical "
                                 "states), drawn separately per side."),
    where: PairWhereOpt = None,
    split: SplitOpt = "train",
    layers: LayersOpt = None,
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Mutual k-NN alignment of en and L2 states of parallel pairs, per layer (App. E); writes latent_knn."""
    _check(figure)
    from tnstore.analysis.latent import knn
    from tnstore.cli.parsing import numbers

    result = knn(store_at(store, results), numbers(k, "--k", int), lang=lang, where=where, split=split,
                 layers=_layers(layers), conditions=_conditions(conditions), positions=positions, tie_seed=tie_seed,
                 wait_seconds=wait)
    _report(result)
    _figure(store, result, figure, "knn")


@latent_app.command("similarity")
def similarity_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    lang: LangOpt = None,
    where: PairWhereOpt = None,
    split: SplitOpt = "train",
    layers: LayersOpt = None,
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Mean cos(en, L2) of parallel vs non-parallel pairs, hidden states and activations (App. C.1)."""
    _check(figure)
    from tnstore.analysis.latent import similarity

    result = similarity(store_at(store, results), lang=lang, where=where, split=split, layers=_layers(layers),
                        conditions=_conditions(conditions), positions=positions, wait_seconds=wait)
    _report(result)
    _figure(store, result, figure, "similarity")


@latent_app.command("probe")
def probe_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    lang: LangOpt = None,
    folds: int = typer.Option(10, "--folds", help="Stratified cross-validation folds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold shuffle."),
    where: PairWhereOpt = None,
    split: SplitOpt = "train",
    layers: LayersOpt = None,
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Logistic-regression probe: parallel vs non-parallel pairs from concatenated (h_en, h_L2) (App. C.2)."""
    _check(figure)
    from tnstore.analysis.latent import probe

    result = probe(store_at(store, results), lang=lang, where=where, split=split, layers=_layers(layers), folds=folds,
                   seed=seed, conditions=_conditions(conditions), positions=positions, wait_seconds=wait)
    _report(result)
    _figure(store, result, figure, "probe")


@latent_app.command("trajectory")
def trajectory_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    lang: str = typer.Option("en", "--lang", help="Language whose centroid trajectory is measured."),
    middle: Optional[int] = typer.Option(None, "--middle", help="Middle layer m (default round(L*10/32), at least 2)."),
    where: GroupWhereOpt = None,
    split: SplitOpt = "train",
    conditions: ConditionsOpt = None,
    positions: PositionsOpt = None,
    figure: FigureOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """How straight the centroid moves to the middle layer: cos(C^l - C^(l-1), C^m - C^1) (App. B)."""
    _check(figure)
    from tnstore.analysis.latent import trajectory

    result = trajectory(store_at(store, results), lang=lang, middle=middle, where=where, split=split,
                        conditions=_conditions(conditions), positions=positions, wait_seconds=wait)
    _report(result)
    _figure(store, result, figure, "trajectory")

"""`tnstore stats ...`: the nature of transfer neurons (method.md §6). Each command writes its table and prints
the paper-style summary; the work is in tnstore.analysis.stats."""
from __future__ import annotations

from typing import Optional

import typer

from tnstore.cli.options import ResultsOpt, SchedulerOpt, SplitOpt, StoreArg, WhereOpt, store_at

SETS_HELP = "SQL predicate over `transfer_neurons` picking the sets to use (default: all)."

stats_app = typer.Typer(help="Correlation ratio, significance, overlap and language-specific neurons (§6).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(stats_app, name="stats")


@stats_app.command("corr-ratio")
def corr_ratio_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    label: str = typer.Option("language", "--label", help="language | family | sql"),
    family: str = typer.Option("en,nl,it:ja,ko", "--family", help="Families for --label family, e.g. en,nl,it:ja,ko."),
    label_sql: Optional[str] = typer.Option(None, "--label-sql",
                                            help="For --label sql: SQL expression over sentences giving each group "
                                                 "(NULL leaves a sentence out)."),
    split: SplitOpt = "train",
    where: WhereOpt = None,
    sets: Optional[str] = typer.Option(None, "--sets", help=SETS_HELP),
    all_neurons: bool = typer.Option(False, "--all-neurons",
                                     help="Also η² and ANOVA of every neuron (no Mann-Whitney)."),
    scheduler: SchedulerOpt = None,
) -> None:
    """η², one-way ANOVA and Mann-Whitney U of transfer neurons against a label; writes tn_corr_ratio."""
    from tnstore.analysis.stats import corr_ratio
    from tnstore.cli.parsing import families, scheduler as parse_scheduler
    from tnstore.cli.render import render

    if label_sql and label == "language":
        label = "sql"
    result = corr_ratio(store_at(store, results), label=label, families=families(family) if label == "family" else
                        (("en", "nl", "it"), ("ja", "ko")), label_sql=label_sql, where=where, split=split,
                        sets=sets, all_neurons=all_neurons, progress=True, scheduler=parse_scheduler(scheduler))
    typer.echo(f"sentences per group: {_counts(result.group_counts)}  (--where {result.where} --split {result.split})")
    typer.echo(render(result.summary_arrow, "table", 200), nl=False)
    spec = f" {result.label.spec}" if result.label.spec else ""
    typer.echo(f"wrote {result.rows} rows to tn_corr_ratio (label {result.label.kind}{spec}); "
               f"group stats {result.stats_id} {'reused' if result.reused_stats else 'computed'}")


@stats_app.command("jaccard")
def jaccard_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    type_: int = typer.Option(..., "--type", help="Transfer-neuron type, 1 or 2."),
    top: int = typer.Option(1000, "--top", help="Compare the top-N neurons of each set."),
    by_layer: bool = typer.Option(False, "--by-layer", help="Also print the per-layer Jaccard index."),
    sets: Optional[str] = typer.Option(None, "--sets", help=SETS_HELP),
) -> None:
    """Jaccard index of top-N sets for every language pair, overall and per layer; writes tn_jaccard."""
    from tnstore.analysis.stats import jaccard
    from tnstore.cli.render import render

    result = jaccard(store_at(store, results), type_, top, sets)
    typer.echo(render(result.overall_arrow, "table", 200), nl=False)
    if by_layer:
        typer.echo("\nper layer (Jaccard; empty where neither set has neurons in the layer)")
        typer.echo(render(result.by_layer_arrow, "table", 1000), nl=False)
    typer.echo(f"wrote {result.table.num_rows} rows to tn_jaccard (type {type_}, top {top})")


@stats_app.command("lang-neurons")
def lang_neurons_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    thresholds: str = typer.Option("0.1,0.25,0.5", "--thresholds", help="η² thresholds to count neurons above."),
    split: SplitOpt = "train",
    where: WhereOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """η² of every neuron against each language vs the rest (App. H.3); writes lang_neurons, prints counts."""
    from tnstore.analysis.stats import lang_neurons
    from tnstore.cli.parsing import numbers, scheduler as parse_scheduler
    from tnstore.cli.render import render

    result = lang_neurons(store_at(store, results), numbers(thresholds, "--thresholds"), where, split, progress=True,
                          scheduler=parse_scheduler(scheduler))
    typer.echo(f"sentences per language: {_counts(result.group_counts)}")
    typer.echo("neurons with η² above the threshold, per layer (columns: language vs the rest)")
    typer.echo(render(result.counts_arrow, "table", 10_000), nl=False)
    typer.echo(f"wrote {result.rows} rows to lang_neurons; group stats {result.stats_id} "
               f"{'reused' if result.reused_stats else 'computed'}")


@stats_app.command("groups")
def groups_cmd(
    store: StoreArg,
    results: ResultsOpt = None,
    group_by: str = typer.Option("lang", "--group-by", help="SQL expression over sentences giving each group."),
    split: SplitOpt = "train",
    where: WhereOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Only the streaming pass: per-group sums of every neuron into group_stats, for your own SQL (queries/eta2.sql)."""
    from tnstore.analysis.stats import groups
    from tnstore.cli.parsing import scheduler as parse_scheduler

    result = groups(store_at(store, results), group_by, where, split, progress=True, scheduler=parse_scheduler(scheduler))
    typer.echo(f"sentences per group: {_counts(result.group_counts)}")
    typer.echo(f"group stats {result.stats_id} {'already stored' if result.reused else 'written to group_stats'}")


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{group}={n}" for group, n in counts.items())

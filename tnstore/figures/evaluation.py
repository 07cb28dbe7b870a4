"""Figures of the downstream evaluation (method §7, App. J): MKQA F1 with and without deactivation (Fig. 7,
40-42), its mean change per condition (Tab. 3, 24-28), multiple-choice accuracy and the language of open-ended
outputs, pure functions from the `eval_*` tables' rows. Every row carries `condition` (`none` = plain)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from tnstore.errors import TnstoreError
from tnstore.figures import frames, style
from tnstore.figures.neurons import _grouped_bars
from tnstore.figures.style import PLAIN, Meta

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.figure import Figure

ID_COLUMNS = ("example_id", "question_id", "item_id", "qid", "id")
THRESHOLDS = (0.5, 0.8)


def _settings(df: "pl.DataFrame") -> str:
    """What the title says of the run's settings: where the neurons were deactivated, how many new tokens."""
    facts = []
    positions = frames.single(df, "positions")
    if positions:
        facts.append(f"deactivated at {positions} positions")
    tokens = frames.single(df, "max_new_tokens")
    if tokens:
        facts.append(f"{tokens} new tokens")
    return ", ".join(facts)


def _question_id(df: "pl.DataFrame", table: str) -> str:
    column = frames.first_column(df, *ID_COLUMNS)
    if column is None:
        raise TnstoreError(f"{table} has no question id column ({', '.join(ID_COLUMNS)})")
    return column


def paired_f1(table: Any) -> "pl.DataFrame":
    """eval_qa rows -> one row per (question, lang, deactivated condition): f1_base (condition none) and f1."""
    import polars as pl

    df = frames.frame(table, ["lang", "f1"], "eval_qa")
    qid = _question_id(df, "eval_qa")
    base = df.filter(pl.col("condition") == PLAIN).select(qid, "lang", pl.col("f1").alias("f1_base"))
    if base.is_empty():
        raise TnstoreError("eval_qa has no rows of condition none (no deactivation) to compare with; run "
                           "`tnstore eval qa` with --conditions none,...")
    keep = [c for c in ("positions", "max_new_tokens", "split") if c in df.columns]
    other = df.filter(pl.col("condition") != PLAIN).select(qid, "lang", "condition", "f1", *keep)
    if other.is_empty():
        raise TnstoreError("eval_qa has only condition none; run `tnstore eval qa` with a neuron set in "
                           "--conditions to compare")
    return other.join(base, on=[qid, "lang"], how="inner")


def f1_change(table: Any, thresholds: Sequence[float] = THRESHOLDS) -> "pl.DataFrame":
    """Mean F1 change from `none` per (lang, condition) over the questions whose plain F1 is above each
    threshold (Tab. 3): lang, condition, threshold, n, f1_base, f1, delta_f1."""
    import polars as pl

    pairs = paired_f1(table)
    parts = [pairs.filter(pl.col("f1_base") > t)
             .group_by("lang", "condition")
             .agg(pl.len().alias("n"), pl.col("f1_base").mean(), pl.col("f1").mean(),
                  (pl.col("f1") - pl.col("f1_base")).mean().alias("delta_f1"))
             .with_columns(pl.lit(float(t)).alias("threshold"))
             for t in thresholds]
    out = pl.concat(parts).select("lang", "condition", "threshold", "n", "f1_base", "f1", "delta_f1")
    order = {c: i for i, c in enumerate(style.condition_order(out["condition"].to_list()))}
    langs = {lang: i for i, lang in enumerate(style.lang_order(out["lang"].to_list()))}
    return out.sort(pl.col("threshold"), pl.col("lang").replace_strict(langs, default=99),
                    pl.col("condition").replace_strict(order, default=99))


@style.styled
def qa_scatter(table: Any, meta: Meta = Meta()) -> "Figure":
    """Per-question MKQA F1 without (x) and with (y) each condition's neurons deactivated, coloured by
    language, a panel per condition (Fig. 7, 40-42). table: eval_qa rows (question id, lang, condition, f1)."""
    import numpy as np
    import polars as pl

    pairs = paired_f1(table)
    conditions = [c for c in style.condition_order(pairs["condition"].to_list())]
    n_rows, n_cols = style.grid_shape(len(conditions), 3)
    fig, axes = style.grid(n_rows, n_cols, sharex=True, sharey=True, panel=(3.0, 3.0))
    flat = [ax for row in axes for ax in row]
    # Identical F1 values (0, 1, 0.5, ...) are common: a small fixed jitter keeps the overlapping points visible.
    rng = np.random.default_rng(0)
    for ax, condition in zip(flat, conditions):
        here = pairs.filter(pl.col("condition") == condition)
        for lang in style.lang_order(here["lang"].to_list()):
            mine = here.filter(pl.col("lang") == lang)
            jitter = rng.uniform(-0.012, 0.012, size=(2, mine.height))
            ax.scatter(mine["f1_base"].to_numpy() + jitter[0], mine["f1"].to_numpy() + jitter[1], s=9, alpha=0.5,
                       linewidths=0, color=style.lang_color(lang), label=style.lang_label(lang))
        ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=0.9)
        ax.set_xlim(-0.04, 1.04), ax.set_ylim(-0.04, 1.04)
        ax.set_aspect("equal")
        style.panel_title(ax, f"deactivated: {condition}", 8)
        ax.set_xlabel("F1, no deactivation (none)")
        ax.set_ylabel("F1, deactivated")
    style.hide_unused(flat[len(conditions):])
    style.suptitle(fig, "MKQA token F1 per question, plain vs deactivated (Fig. 7, 40–42)", meta,
                   frames.single(pairs, "split"), [PLAIN] + conditions,
                   style.describe_n(pairs.group_by("lang", "condition").len()["len"].to_list(),
                                    "questions per language"),
                   ", ".join(filter(None, [_settings(pairs), "jittered ±0.012"])))
    style.legend(fig, flat, "language")
    return fig


@style.styled
def qa_change(table: Any, meta: Meta = Meta()) -> "Figure":
    """Mean F1 change from `none` per language and condition over questions whose plain F1 > 0.5 / > 0.8
    (Tab. 3, 24-28), a panel per threshold. table: eval_qa rows."""
    import polars as pl

    change = f1_change(table)
    # Every threshold gets its panel, also when no question clears it (a small model may answer none right):
    # the panel says so instead of the figure failing or silently losing a panel.
    thresholds = list(THRESHOLDS)
    conditions = style.condition_order(paired_f1(table)["condition"].to_list())
    fig, axes = style.grid(1, len(thresholds), sharey=True, panel=(4.0, 2.8))
    for c, threshold in enumerate(thresholds):
        ax = axes[0][c]
        here = change.filter(pl.col("threshold") == threshold)
        ax.set_title(f"questions with plain F1 > {threshold:g}")
        if c == 0:
            ax.set_ylabel("mean F1 change from none")
        if here.height == 0:
            ax.text(0.5, 0.5, f"no question has plain F1 > {threshold:g}", ha="center", va="center",
                    transform=ax.transAxes, color="0.35")
            ax.set_xticks([])
            continue
        langs = style.lang_order(here["lang"].to_list())
        series = []
        for condition in conditions:
            mine = here.filter(pl.col("condition") == condition)
            by_lang = {r["lang"]: r["delta_f1"] for r in mine.iter_rows(named=True)}
            series.append((condition, [by_lang.get(lang, 0.0) for lang in langs]))
        counts = {r["lang"]: r["n"] for r in here.iter_rows(named=True)}
        _grouped_bars(ax, [f"{lang}\n(n={counts.get(lang, 0)})" for lang in langs], series,
                      [style.series_color(i) for i in range(len(series))])
        ax.axhline(0, color="0.3", linewidth=0.8)
    style.suptitle(fig, "MKQA F1 change under deactivation (Tab. 3, 24–28)", meta, None, [PLAIN] + conditions,
                   extra=_settings(frames.frame(table)))
    style.legend(fig, axes[0], "deactivated")
    return fig


def _overall(df: "pl.DataFrame") -> "pl.DataFrame":
    """Rows of a per-subject summary that stand for all subjects (subject null / all / overall), if any."""
    import polars as pl

    if "subject" not in df.columns:
        return df
    overall = df.filter(pl.col("subject").is_null() | pl.col("subject").is_in(["*", "all", "overall", "__all__"]))
    return overall if overall.height else df


@style.styled
def mc_accuracy(table: Any, meta: Meta = Meta()) -> "Figure":
    """Multiple-choice accuracy per language and condition (MMLU-ProX, Tab. 29-37).
    table: eval_mc_summary rows (lang, condition, accuracy; per subject: the overall rows)."""
    df = frames.frame(table, ["lang"], "eval_mc_summary")
    value = frames.first_column(df, "accuracy", "acc", "mean_accuracy")
    if value is None:
        raise TnstoreError("eval_mc_summary has no accuracy column")
    return _condition_bars(_overall(df), value, meta, "accuracy", "Multiple-choice accuracy under deactivation "
                           "(MMLU-ProX, Tab. 29–37)", limit=1.0)


@style.styled
def gen_language(table: Any, meta: Meta = Meta()) -> "Figure":
    """Share of open-ended outputs in the prompt's language per language and condition (Tab. 38-41).
    table: eval_gen_metrics rows (lang, condition and a share column, or per-output detected languages)."""
    import polars as pl

    df = frames.frame(table, ["lang"], "eval_gen_metrics")
    share = frames.first_column(df, "expected_lang_share", "share_expected_lang", "lang_match_rate",
                                "in_expected_lang", "lang_match")
    if share is None:
        detected = frames.first_column(df, "detected_lang", "output_lang", "langid")
        if detected is None:
            raise TnstoreError("eval_gen_metrics has no column telling the output's language")
        df = df.with_columns((pl.col(detected) == pl.col("lang")).cast(pl.Float64).alias("in_expected_lang"))
        share = "in_expected_lang"
    df = df.with_columns(pl.col(share).cast(pl.Float64))
    return _condition_bars(df, share, meta, "share of outputs in the prompt's language",
                           "Language of open-ended generations under deactivation (Tab. 38–41)", limit=1.0)


def _condition_bars(df: "pl.DataFrame", value: str, meta: Meta, ylabel: str, what: str,
                    limit: float | None = None) -> "Figure":
    import polars as pl

    means = df.group_by("lang", "condition").agg(pl.col(value).mean())
    langs = style.lang_order(means["lang"].to_list())
    conditions = style.condition_order(means["condition"].to_list())
    fig, axes = style.grid(1, 1, panel=(max(3.6, 0.9 * len(langs) * max(1, len(conditions)) / 2), 2.8))
    ax = axes[0][0]
    series = []
    for condition in conditions:
        by_lang = dict(means.filter(pl.col("condition") == condition).select("lang", value).iter_rows())
        series.append((condition, [by_lang.get(lang, 0.0) for lang in langs]))
    _grouped_bars(ax, [style.lang_label(lang) for lang in langs], series,
                  [style.series_color(i) for i in range(len(series))])
    if limit is not None:
        ax.set_ylim(0, limit)
    ax.set_ylabel(ylabel)
    style.suptitle(fig, what, meta, frames.single(df, "split"), conditions)
    style.legend(fig, [ax], "condition")
    return fig

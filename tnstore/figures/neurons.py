"""Figures of the transfer neurons and their statistics (method §4, §6.1, App. H), pure functions from the rows
of `transfer_neurons`, `tn_jaccard`, the tn_summary query of `tn_corr_ratio` and the lang_neurons query to a
matplotlib Figure. Layers are 0-based decoder layers, as these tables store them; a panel per type."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.figures import frames, style
from tnstore.figures.style import Meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TYPE_NAMES = {1: "Type-1 (L2 → shared)", 2: "Type-2 (shared → L2)"}
ETA2_READING = ((0.1, "some"), (0.25, "moderate"), (0.5, "strong"))


def _types(df, types: Sequence[int] | None, table: str) -> list[int]:
    found = frames.values(df, "type")
    if types is None:
        return found
    chosen = [t for t in found if t in set(types)]
    if not chosen:
        raise ArgumentError("types", f"{table} has no rows of {{arg}} {','.join(map(str, types))}; it has type "
                                     f"{', '.join(map(str, found))}")
    return chosen


def _layer_filter(df, layers: Sequence[int] | None, column: str = "layer"):
    import polars as pl

    return df if layers is None else df.filter(pl.col(column).is_in(list(layers)))


@style.styled
def tn_layers(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None,
              types: Sequence[int] | None = None) -> "Figure":
    """How many of each language's top-n transfer neurons sit in each decoder layer, a panel per type
    (Fig. 6, 32, 33). table: transfer_neurons rows (set_id, lang, type, top, layer, layer_start, layer_end);
    every candidate layer of a set is drawn, the empty ones at 0."""
    import polars as pl

    df = frames.frame(table, ["set_id", "lang", "type", "top", "layer", "layer_start", "layer_end", "split"],
                      "transfer_neurons")
    chosen = _types(df, types, "transfer_neurons")
    fig, axes = style.grid(1, len(chosen), sharey=True, panel=(4.4, 2.9))
    tops = []
    for c, type_ in enumerate(chosen):
        ax = axes[0][c]
        sets = df.filter(pl.col("type") == type_)
        described = _set_labels(sets)
        for (set_id, label, lang, dash) in described:
            one = sets.filter(pl.col("set_id") == set_id)
            start, end = int(one["layer_start"][0]), int(one["layer_end"][0])
            counts = dict(one.group_by("layer").len().iter_rows())
            x = [layer for layer in range(start, end) if layers is None or layer in layers]
            ax.plot(x, [counts.get(layer, 0) for layer in x], dash, marker="o", color=style.lang_color(lang),
                    label=label)
            tops.append(int(one["top"][0]))
        ax.set_title(TYPE_NAMES.get(type_, f"type {type_}"))
        style.layer_axis(ax)
        if c == 0:
            ax.set_ylabel("transfer neurons in the layer")
    axes[0][0].set_ylim(bottom=0)  # after every panel is drawn: the shared y range covers them all
    style.suptitle(fig, "Where the top-n transfer neurons sit (Fig. 6, 32, 33)", meta,
                             frames.single(df, "split"), (), style.describe_n(tops, "neurons per set (top-n)"))
    style.layer_label(fig, "layer")
    style.legend(fig, axes[0], "set")
    return fig


def _set_labels(sets) -> list[tuple[str, str, str, str]]:
    """(set_id, legend label, lang, line style) per set: the language, plus what tells two sets of the same
    language apart (top, split, distance, candidate layers) where the panel holds several."""
    import polars as pl

    info = sets.select("set_id", "lang", "top", "split", "dist", "layer_start", "layer_end").unique()
    rank = {lang: i for i, lang in enumerate(style.lang_order(info["lang"].to_list()))}
    out, seen = [], {}
    for row in sorted(info.iter_rows(named=True), key=lambda r: (rank[r["lang"]], r["set_id"])):
        same = info.filter(pl.col("lang") == row["lang"])
        label = style.lang_label(row["lang"])
        if same.height > 1:
            differ = [f"{col} {row[col]}" for col in ("top", "split", "dist") if same[col].n_unique() > 1]
            if same.select("layer_start", "layer_end").unique().height > 1:
                differ.append(f"layers {row['layer_start']}-{row['layer_end']}")
            label += " (" + (", ".join(differ) or row["set_id"]) + ")"
        k = seen[row["lang"]] = seen.get(row["lang"], -1) + 1
        out.append((row["set_id"], label, row["lang"], ("-", "--", ":", "-.")[k % 4]))
    return out


@style.styled
def jaccard_layers(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None,
                   types: Sequence[int] | None = None) -> "Figure":
    """Jaccard index of two languages' top-n sets per decoder layer, one line per language pair, a panel per
    type (Fig. 8, 34, 35). table: tn_jaccard rows with layer not null (type, top, lang_a, lang_b, layer,
    jaccard); a layer where neither set has neurons is a gap."""
    import numpy as np
    import polars as pl

    df = frames.frame(table, ["type", "top", "lang_a", "lang_b", "layer", "jaccard"], "tn_jaccard")
    df = _layer_filter(df.filter(pl.col("layer").is_not_null()), layers)
    if df.is_empty():
        raise ArgumentError("layers", "tn_jaccard has no per-layer rows for these {arg}")
    chosen = _types(df, types, "tn_jaccard")
    # Pairs as the paper names them (ja–it, not it–ja), in its language order.
    rank = {lang: i for i, lang in enumerate(style.lang_order(df["lang_a"].to_list() + df["lang_b"].to_list()))}
    pairs = sorted({(a, b) for a, b in df.select("lang_a", "lang_b").iter_rows()},
                   key=lambda p: sorted((rank[p[0]], rank[p[1]])))
    fig, axes = style.grid(1, len(chosen), sharey=True, panel=(4.4, 2.9))
    for c, type_ in enumerate(chosen):
        ax = axes[0][c]
        here = df.filter(pl.col("type") == type_)
        span = range(int(here["layer"].min()), int(here["layer"].max()) + 1)
        for i, (a, b) in enumerate(pairs):
            pair = here.filter((pl.col("lang_a") == a) & (pl.col("lang_b") == b))
            if pair.is_empty():
                continue
            by_layer = dict(pair.select("layer", "jaccard").iter_rows())
            y = np.array([by_layer.get(layer, np.nan) for layer in span], dtype=float)
            first, second = sorted((a, b), key=rank.get)
            ax.plot(list(span), y, marker="o", color=style.series_color(i), label=f"{first}–{second}")
        ax.set_title(TYPE_NAMES.get(type_, f"type {type_}"))
        style.layer_axis(ax)
        if c == 0:
            ax.set_ylabel("Jaccard index |A∩B| / |A∪B|")
        ax.set_ylim(0, 1.02)
    style.suptitle(fig, "Overlap of two languages' transfer neurons per layer (Fig. 8, 34, 35)", meta,
                             frames.single(df, "split"), (),
                             style.describe_n(df["top"].to_list(), "neurons per set (top-n)"))
    style.layer_label(fig, "layer")
    style.legend(fig, axes[0], "language pair")
    return fig


@style.styled
def jaccard_matrix(table: Any, meta: Meta = Meta(), types: Sequence[int] | None = None) -> "Figure":
    """The overall Jaccard index of every language pair's top-n sets as a matrix, a panel per type (Tab. 2,
    7-9). table: tn_jaccard rows with layer null."""
    import numpy as np
    import polars as pl

    df = frames.frame(table, ["type", "top", "lang_a", "lang_b", "layer", "jaccard"], "tn_jaccard")
    df = df.filter(pl.col("layer").is_null())
    if df.is_empty():
        raise TnstoreError("tn_jaccard has no overall rows (layer null)")
    chosen = _types(df, types, "tn_jaccard")
    langs = style.lang_order(df["lang_a"].to_list() + df["lang_b"].to_list())
    at = {lang: i for i, lang in enumerate(langs)}
    side = 0.5 * len(langs) + 1.2
    fig, axes = style.grid(1, len(chosen), panel=(side, side), legend_width=1.0)
    image = None
    for c, type_ in enumerate(chosen):
        ax = axes[0][c]
        matrix = np.full((len(langs), len(langs)), np.nan)
        np.fill_diagonal(matrix, 1.0)
        for row in df.filter(pl.col("type") == type_).iter_rows(named=True):
            i, j = at[row["lang_a"]], at[row["lang_b"]]
            matrix[i, j] = matrix[j, i] = row["jaccard"]
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        _annotate(ax, matrix, 0.0, 1.0)
        ax.set_xticks(range(len(langs)), langs), ax.set_yticks(range(len(langs)), langs)
        ax.grid(False), ax.tick_params(length=0)
        ax.set_title(TYPE_NAMES.get(type_, f"type {type_}"))
    style.colorbar(fig, image, axes, "Jaccard index")
    style.suptitle(fig, "Overlap of the top-n transfer-neuron sets (Tab. 2, 7–9)", meta,
                             frames.single(df, "split"), (),
                             style.describe_n(df["top"].to_list(), "neurons per set (top-n)"))
    return fig


def _annotate(ax, matrix, vmin: float, vmax: float, fmt: str = "{:.2f}") -> None:
    import numpy as np

    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if not np.isnan(matrix[i, j]):
                dark = (matrix[i, j] - vmin) / max(1e-9, vmax - vmin) < 0.6
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "black")


def _grouped_bars(ax, groups: list[str], series: list[tuple[str, list[float]]], colors: list[str]) -> None:
    import numpy as np

    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, ((label, heights), color) in enumerate(zip(series, colors)):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label, color=color)
    ax.set_xticks(x, groups)
    ax.grid(axis="x", visible=False)


def _label_name(row: dict) -> str:
    label, spec = row.get("label"), row.get("label_spec")
    return f"{label} label" + (f" ({spec})" if spec else "")


@style.styled
def tn_eta2(table: Any, meta: Meta = Meta(), types: Sequence[int] | None = None) -> "Figure":
    """Mean η² of each set's top 10 / 100 / 1000 transfer neurons against the label, a panel per type, a row per
    label (Tab. 1, 4-6, 10-12). table: queries/tn_summary.sql rows (label, label_spec, lang, type, eta2_top10,
    eta2_top100, eta2_top1000, n_tn); dotted lines at the readings 0.1 / 0.25 / 0.5."""
    return _summary_bars(table, meta, types, [("eta2_top10", "top 10"), ("eta2_top100", "top 100"),
                                              ("eta2_top1000", "top 1000")],
                         "mean η²",
                         "Correlation ratio η² of transfer neurons with the label (Tab. 1, 4–6, 10–12)",
                         reading=True)


@style.styled
def tn_significance(table: Any, meta: Meta = Meta(), types: Sequence[int] | None = None) -> "Figure":
    """Share of each set's transfer neurons with one-way ANOVA p < 0.05, and also η² > 0.1 / > 0.25, a panel per
    type, a row per label (Fig. 39, Tab. 13-20). table: queries/tn_summary.sql rows (sig, sig_eta2_gt_0_1,
    sig_eta2_gt_0_25)."""
    return _summary_bars(table, meta, types, [("sig", "p < 0.05"), ("sig_eta2_gt_0_1", "p < 0.05, η² > 0.1"),
                                              ("sig_eta2_gt_0_25", "p < 0.05, η² > 0.25")],
                         "share of the set", "Share of statistically significant transfer neurons (Fig. 39)",
                         share=True)


def _summary_bars(table: Any, meta: Meta, types, columns: list[tuple[str, str]], ylabel: str, what: str,
                  reading: bool = False, share: bool = False) -> "Figure":
    import polars as pl

    df = frames.frame(table, ["label", "lang", "type", "n_tn"] + [c for c, _ in columns], "tn_summary")
    if "label_spec" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias("label_spec"))
    chosen = _types(df, types, "tn_corr_ratio")
    labels = sorted(df.select("label", "label_spec").unique().rows(named=True),
                    key=lambda r: (r["label"] != "language", r["label"], r["label_spec"] or ""))
    largest = int(df["n_tn"].max())
    # A "top 1000" bar of a 100-neuron set would repeat its "top 100" bar: show the ranks the sets reach.
    columns = [(c, name) for c, name in columns if not name.startswith("top ") or int(name[4:]) <= largest] \
        or [(columns[0][0], f"all {largest}")]
    fig, axes = style.grid(len(labels), len(chosen), sharey=True, panel=(4.0, 2.6))
    for r, label in enumerate(labels):
        for c, type_ in enumerate(chosen):
            ax = axes[r][c]
            here = df.filter((pl.col("type") == type_) & (pl.col("label") == label["label"])
                             & pl.col("label_spec").eq_missing(label["label_spec"]))
            langs = style.lang_order(here["lang"].to_list())
            series = []
            for column, name in columns:
                by_lang = {row["lang"]: row[column] for row in here.iter_rows(named=True)}
                series.append((name, [by_lang.get(lang) if by_lang.get(lang) is not None else 0.0
                                      for lang in langs]))
            _grouped_bars(ax, [style.lang_label(lang) for lang in langs], series,
                          [style.series_color(i) for i in range(len(series))])
            if reading:
                for level, _ in ETA2_READING:
                    ax.axhline(level, color="0.45", linestyle=":", linewidth=0.9)
            if share:
                ax.set_ylim(0, 1.0)
            style.panel_title(ax, f"{TYPE_NAMES.get(type_, f'type {type_}')}\n{_label_name(label)}", 8)
            if c == 0:
                ax.set_ylabel(ylabel)
    n_sets = style.describe_n(df["n_tn"].to_list(), "neurons per set")
    extra = "dotted: η² 0.1 some, 0.25 moderate, 0.5 strong" if reading else ""
    style.suptitle(fig, what, meta, frames.single(df, "split"), (), n_sets, extra)
    style.legend(fig, [ax for row in axes for ax in row], "neurons")
    return fig


@style.styled
def lang_neurons(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """Language-specific neurons: per decoder layer, how many neurons have η² above each threshold against
    "this language vs the rest", a panel per threshold (Fig. 36-38). table: queries/lang_neurons.sql rows
    (lang, threshold, layer, n_neurons)."""
    import polars as pl

    df = _layer_filter(frames.frame(table, ["lang", "threshold", "layer", "n_neurons"], "lang_neurons"), layers)
    if df.is_empty():
        raise ArgumentError("layers", "lang_neurons has no rows for these {arg}")
    thresholds = frames.values(df, "threshold")
    fig, axes = style.grid(1, len(thresholds), panel=(3.6, 2.8))
    for c, threshold in enumerate(thresholds):
        ax = axes[0][c]
        here = df.filter(pl.col("threshold") == threshold)
        for lang in style.lang_order(here["lang"].to_list()):
            mine = here.filter(pl.col("lang") == lang).sort("layer")
            ax.plot(mine["layer"].to_numpy(), mine["n_neurons"].to_numpy(), marker="o",
                    color=style.lang_color(lang), label=style.lang_label(lang))
        ax.set_title(f"η² > {threshold:g}")
        style.layer_axis(ax)
        ax.set_ylim(bottom=0)
        if c == 0:
            ax.set_ylabel("neurons (language vs the rest)")
    style.suptitle(fig, "Language-specific neurons per layer (Fig. 36–38)", meta,
                             frames.single(df, "split"), ())
    style.layer_label(fig, "layer")
    style.legend(fig, axes[0], "language")
    return fig

"""Figures of the latent-space analyses (method §3, App. B, C, E; deactivated conditions App. G), each a pure
function from one analysis's rows of a `latent_*` table to a matplotlib Figure.

Layers are hidden indices (0 = embeddings, l = output of decoder layer l), as the tables store them. Where the
table has a `condition` column with several values (plain `none`, a deactivated neuron set, a baseline), the
conditions are drawn side by side: one row of panels per condition, on shared axes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.figures import frames, style
from tnstore.figures.style import Meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PCA_PANELS = 8
HEATMAP_PANELS = 6


def _indices(available: Sequence[int], layers: Sequence[int] | None, at_most: int, table: str) -> list[int]:
    if layers is None:
        return style.spread(available, at_most)
    chosen = sorted(set(layers) & set(available))
    if not chosen:
        raise ArgumentError("layers", f"{table} has no hidden index among {{arg}} {','.join(map(str, layers))}; "
                                      f"it has {_span(available)}")
    return chosen


def _span(values: Sequence[int]) -> str:
    values = sorted(values)
    return f"{values[0]}..{values[-1]}" if len(values) > 2 else ", ".join(map(str, values))


def _filter_layers(df, layers: Sequence[int] | None, table: str, column: str = "hidden_index"):
    import polars as pl

    if layers is None:
        return df
    kept = df.filter(pl.col(column).is_in(list(layers)))
    if kept.is_empty():
        raise ArgumentError("layers", f"{table} has no {column.replace('_', ' ')} among {{arg}} "
                                      f"{','.join(map(str, layers))}; it has {_span(frames.values(df, column))}")
    return kept


@style.styled
def pca(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """PC1/PC2 scatter per hidden index, one colour per language (Fig. 2, 16, 17; deactivated: Fig. 28, 29).

    table: latent_pca rows of one analysis (hidden_index, lang, pc1, pc2, evr1, evr2, n; optional condition).
    layers: hidden indices to draw (default: up to 8, evenly spaced, first and last included)."""
    df = frames.frame(table, ["hidden_index", "lang", "pc1", "pc2", "evr1", "evr2", "n"], "latent_pca")
    conditions = frames.conditions(df)
    at_most = PCA_PANELS if len(conditions) == 1 else 5
    indices = _indices(frames.values(df, "hidden_index"), layers, at_most, "latent_pca")
    langs = style.lang_order(df["lang"].to_list())
    if len(conditions) == 1:
        n_rows, n_cols = style.grid_shape(len(indices), 4)
        cells = [(conditions[0], index) for index in indices]
    else:
        n_rows, n_cols = len(conditions), len(indices)
        cells = [(c, index) for c in conditions for index in indices]
    fig, axes = style.grid(n_rows, n_cols, panel=(2.5, 2.3), row_titles=_row_titles(conditions))
    flat = [ax for row in axes for ax in row]
    parts = df.partition_by(["condition", "hidden_index"], as_dict=True)
    for ax, (condition, index) in zip(flat, cells):
        here = parts.get((condition, index))
        if here is None:
            ax.set_title(f"hidden index {index}: not computed", fontsize=7.5)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        _scatter_languages(ax, here, langs)
        style.panel_title(ax, f"hidden index {index}\nPC1 {here['evr1'][0]:.0%}, PC2 {here['evr2'][0]:.0%}", 7.5)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlabel("PC1", fontsize=7), ax.set_ylabel("PC2", fontsize=7)
        ax.grid(False)
    style.hide_unused(flat[len(cells):])
    style.language_handles(fig, langs)
    style.suptitle(fig, "PCA of last-token hidden states, all languages together (Fig. 2, 16, 17)", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n"].to_list(), "sentences per layer"))
    return fig


@style.styled
def dims(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """Dimensions k reaching each σ² share per hidden index, one line per language, a panel per threshold
    (Fig. 3, 13). table: latent_dims rows of one analysis (lang, hidden_index, threshold, k, n, d, centered)."""
    import polars as pl

    df = _filter_layers(frames.frame(table, ["lang", "hidden_index", "threshold", "k", "n"], "latent_dims"),
                        layers, "latent_dims")
    conditions = frames.conditions(df)
    thresholds = frames.values(df, "threshold")
    fig, axes = style.grid(len(conditions), len(thresholds), sharey=True, sharex=True,
                           row_titles=_row_titles(conditions))
    for r, condition in enumerate(conditions):
        for c, threshold in enumerate(thresholds):
            ax = axes[r][c]
            here = df.filter((pl.col("condition") == condition) & (pl.col("threshold") == threshold))
            _language_lines(ax, here, "k")
            style.panel_title(ax, f"share of Σσ² ≥ {threshold:g}")
            style.layer_axis(ax)
    style.ylabel(fig, axes, "dimensions k")
    for row in axes:
        for ax in row:
            ax.yaxis.get_major_locator().set_params(integer=True)
    centered = frames.single(df, "centered")
    extra = "" if centered is None else ("each language centred" if centered else "raw matrix (as the paper)")
    style.suptitle(fig, "Dimensionality of each language's states (Fig. 3, 13)", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n"].to_list(), "sentences per language"), extra)
    style.layer_label(fig, "hidden")
    style.legend(fig, [ax for row in axes for ax in row], "language")
    return fig


@style.styled
def centroids(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """Cosine similarity of language centroids as a heatmap per hidden index (Fig. 14, 15; deactivated:
    Fig. 26, 27, 30, 31). table: latent_centroid_cos rows (hidden_index, lang_a, lang_b, cosine, n_a)."""
    import numpy as np

    df = frames.frame(table, ["hidden_index", "lang_a", "lang_b", "cosine", "n_a"], "latent_centroid_cos")
    conditions = frames.conditions(df)
    indices = _indices(frames.values(df, "hidden_index"), layers,
                       HEATMAP_PANELS if len(conditions) == 1 else 4, "latent_centroid_cos")
    langs = style.lang_order(df["lang_a"].to_list() + df["lang_b"].to_list())
    at = {lang: i for i, lang in enumerate(langs)}
    if len(conditions) == 1:
        n_rows, n_cols = style.grid_shape(len(indices), 3)
        cells = [(conditions[0], index) for index in indices]
    else:
        n_rows, n_cols = len(conditions), len(indices)
        cells = [(c, index) for c in conditions for index in indices]
    side = 0.42 * len(langs) + 1.0
    fig, axes = style.grid(n_rows, n_cols, panel=(side, side), legend_width=0.9, row_titles=_row_titles(conditions))
    flat = [ax for row in axes for ax in row]
    shown = df.filter(df["hidden_index"].is_in(indices))
    off = shown.filter(shown["lang_a"] != shown["lang_b"])["cosine"]
    low = float(off.min()) if off.len() else 0.0
    vmin = max(-1.0, min(low, 0.99))
    parts = df.partition_by(["condition", "hidden_index"], as_dict=True)
    image = None
    for ax, (condition, index) in zip(flat, cells):
        matrix = np.full((len(langs), len(langs)), np.nan)
        here = parts.get((condition, index))
        for row in (here.iter_rows(named=True) if here is not None else ()):
            matrix[at[row["lang_a"]], at[row["lang_b"]]] = row["cosine"]
        image = ax.imshow(matrix, vmin=vmin, vmax=1.0, cmap="viridis")
        for i in range(len(langs)):
            for j in range(len(langs)):
                if not np.isnan(matrix[i, j]):
                    dark = (matrix[i, j] - vmin) / max(1e-9, 1.0 - vmin) < 0.6
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")
        ax.set_xticks(range(len(langs)), langs), ax.set_yticks(range(len(langs)), langs)
        ax.grid(False)
        ax.tick_params(length=0)
        label = f"hidden index {index}" if here is not None else f"hidden index {index}: not computed"
        style.panel_title(ax, label, 8)
    style.hide_unused(flat[len(cells):])
    if image is not None:
        style.colorbar(fig, image, axes, "cosine of centroids")
    style.suptitle(fig, "Cosine similarity of language centroids (Fig. 14, 15)", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n_a"].to_list(), "sentences per language"))
    return fig


@style.styled
def knn(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """Mutual k-NN alignment of en and each L2 per hidden index, a panel per k (Fig. 4, 18, 19).
    table: latent_knn rows (lang, hidden_index, k, score, n_pairs)."""
    import polars as pl

    df = _filter_layers(frames.frame(table, ["lang", "hidden_index", "k", "score", "n_pairs"], "latent_knn"),
                        layers, "latent_knn")
    conditions = frames.conditions(df)
    ks = frames.values(df, "k")
    fig, axes = style.grid(len(conditions), len(ks), sharey=True, sharex=True, row_titles=_row_titles(conditions))
    for r, condition in enumerate(conditions):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            _language_lines(ax, df.filter((pl.col("condition") == condition) & (pl.col("k") == k)), "score")
            style.panel_title(ax, f"k = {k}")
            style.layer_axis(ax)
    style.ylabel(fig, axes, "mutual k-NN score")
    style.suptitle(fig, "Mutual k-NN alignment of en and L2 states of parallel pairs (Fig. 4, 18, 19)", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n_pairs"].to_list(), "pairs"))
    style.layer_label(fig, "hidden")
    style.legend(fig, [ax for row in axes for ax in row], "en vs")
    return fig


@style.styled
def similarity(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None,
               array_name: str = "hidden") -> "Figure":
    """Mean cos(en, L2) of parallel (solid) and non-parallel (dashed) pairs with ±1 std bands, a panel per L2
    (hidden states: Fig. 10, 5, 20-25; activations α: Fig. 11). table: latent_pair_similarity rows."""
    import polars as pl
    from matplotlib.lines import Line2D

    df = frames.frame(table, ["lang", "array_name", "hidden_index", "kind", "mean_cos", "std_cos", "n_pairs"],
                      "latent_pair_similarity")
    df = _filter_layers(df.filter(pl.col("array_name") == array_name), layers, "latent_pair_similarity")
    if df.is_empty():
        raise TnstoreError(f"latent_pair_similarity has no rows for {array_name}")
    conditions = frames.conditions(df)
    langs = [lang for lang in style.lang_order(df["lang"].to_list())]
    fig, axes = style.grid(len(conditions), len(langs), sharey=True, sharex=True, row_titles=_row_titles(conditions))
    for r, condition in enumerate(conditions):
        for c, lang in enumerate(langs):
            ax = axes[r][c]
            color = style.lang_color(lang)
            for kind, dash in (("parallel", "-"), ("nonparallel", "--")):
                here = df.filter((pl.col("condition") == condition) & (pl.col("lang") == lang)
                                 & (pl.col("kind") == kind)).sort("hidden_index")
                if here.is_empty():
                    continue
                x = here["hidden_index"].to_numpy()
                mean, std = here["mean_cos"].to_numpy(), here["std_cos"].fill_null(0.0).to_numpy()
                ax.plot(x, mean, dash, color=color, marker="o" if kind == "parallel" else None)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15 if kind == "parallel" else 0.08,
                                linewidth=0)
            style.panel_title(ax, f"en–{lang}")
            style.layer_axis(ax)
    style.ylabel(fig, axes, "mean cos(en, L2) ± 1 std")
    what = "hidden states" if array_name == "hidden" else "MLP activations α"
    figs = "Fig. 10; deactivated Fig. 5, 20–25" if array_name == "hidden" else "Fig. 11"
    style.suptitle(fig, f"Similarity of en–L2 pairs, {what}: parallel vs non-parallel ({figs})", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n_pairs"].to_list(), "pairs per kind"))
    handles = [Line2D([], [], color="0.3", linestyle="-", marker="o", label="parallel pairs"),
               Line2D([], [], color="0.3", linestyle="--", label="non-parallel pairs")]
    handles += [Line2D([], [], color=style.lang_color(lang), label=style.lang_label(lang)) for lang in langs]
    style.layer_label(fig, "hidden")
    fig.legend(handles=handles, loc="outside right upper", frameon=False, title="pairs / L2")
    return fig


@style.styled
def probe(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """Cross-validated accuracy (± std over folds) of the parallel vs non-parallel probe per hidden index
    (Fig. 12). table: latent_probe rows (lang, hidden_index, accuracy, accuracy_std, n_parallel, folds)."""
    import polars as pl

    df = _filter_layers(frames.frame(table, ["lang", "hidden_index", "accuracy", "accuracy_std", "n_parallel"],
                                     "latent_probe"), layers, "latent_probe")
    conditions = frames.conditions(df)
    fig, axes = style.grid(1, len(conditions), sharey=True, panel=(4.2, 2.8))
    for c, condition in enumerate(conditions):
        ax = axes[0][c]
        _language_lines(ax, df.filter(pl.col("condition") == condition), "accuracy", band="accuracy_std")
        ax.axhline(0.5, color="0.4", linestyle=":", linewidth=1, label="chance (0.5)")
        ax.set_ylim(0.4, 1.02)
        if len(conditions) > 1:
            style.panel_title(ax, style.condition_label(condition))
        style.layer_axis(ax)
        if c == 0:
            ax.set_ylabel("CV accuracy ± 1 std")
    folds = frames.single(df, "folds")
    style.suptitle(fig, "Linear separability of parallel vs non-parallel pairs (Fig. 12)", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n_parallel"].to_list(), "pairs per class"),
                             f"{folds}-fold CV" if folds else "")
    style.layer_label(fig, "hidden")
    style.legend(fig, [ax for row in axes for ax in row], "en vs")
    return fig


@style.styled
def trajectory(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None) -> "Figure":
    """cos(T^l, P) of each language's centroid steps against its path to the middle layer (Fig. 9).
    table: latent_trajectory rows (lang, hidden_index, cos_to_path, middle, n)."""
    import polars as pl

    df = _filter_layers(frames.frame(table, ["lang", "hidden_index", "cos_to_path", "middle", "n"],
                                     "latent_trajectory"), layers, "latent_trajectory")
    conditions = frames.conditions(df)
    fig, axes = style.grid(1, len(conditions), sharey=True, panel=(4.2, 2.8))
    for c, condition in enumerate(conditions):
        ax = axes[0][c]
        _language_lines(ax, df.filter(pl.col("condition") == condition), "cos_to_path")
        ax.axhline(0.0, color="0.4", linewidth=0.8)
        if len(conditions) > 1:
            style.panel_title(ax, style.condition_label(condition))
        style.layer_axis(ax)
        if c == 0:
            ax.set_ylabel("cos(C^l − C^(l−1), C^m − C^1)")
    middles = frames.values(df, "middle")
    style.suptitle(fig, "Trajectory linearity of the centroid towards the middle layer (Fig. 9)", meta,
                             frames.single(df, "split"), conditions,
                             style.describe_n(df["n"].to_list(), "sentences"),
                             "m = " + ", ".join(map(str, middles)))
    style.layer_label(fig, "hidden")
    style.legend(fig, [ax for row in axes for ax in row], "language")
    return fig


def _scatter_languages(ax, df, langs: Sequence[str]) -> None:
    """All languages' points in one scatter, in a fixed shuffled order, so no language hides the others by
    being drawn last; each point in its language's colour."""
    import numpy as np
    from matplotlib.colors import to_rgba

    df = df.filter(df["lang"].is_in(list(langs)))
    order = np.random.default_rng(0).permutation(df.height)
    colors = np.array([to_rgba(style.lang_color(lang)) for lang in df["lang"].to_list()])[order]
    size = 6 if df.height <= 2000 else 3
    ax.scatter(df["pc1"].to_numpy()[order], df["pc2"].to_numpy()[order], s=size, c=colors, alpha=0.55,
               linewidths=0, rasterized=True)


def _row_titles(conditions: Sequence[str]) -> list[str] | None:
    """A heading per row of panels when conditions are drawn side by side (one row each)."""
    return [style.condition_label(c) for c in conditions] if len(conditions) > 1 else None


def _language_lines(ax, df, value: str, band: str | None = None) -> None:
    """One line per language of `value` against hidden_index (± `band` shaded), in the language's colour."""
    import polars as pl

    for lang in style.lang_order(df["lang"].to_list()):
        here = df.filter(pl.col("lang") == lang).sort("hidden_index")
        x, y = here["hidden_index"].to_numpy(), here[value].to_numpy()
        color = style.lang_color(lang)
        ax.plot(x, y, marker="o", color=color, label=style.lang_label(lang))
        if band is not None:
            spread = here[band].fill_null(0.0).to_numpy()
            ax.fill_between(x, y - spread, y + spread, color=color, alpha=0.15, linewidth=0)

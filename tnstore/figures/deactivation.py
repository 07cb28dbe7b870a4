"""Figure of the cross-lingual deactivation experiment (method §5, App. I, Tab. 21-23): the L1 x L2 matrix of
cos(C_L2, C_L2 with L1's transfer neurons deactivated), a pure function of `crossling_deactivation` rows."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from tnstore.errors import ArgumentError
from tnstore.figures import frames, style
from tnstore.figures.neurons import TYPE_NAMES, _annotate, _types
from tnstore.figures.style import Meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@style.styled
def crossling(table: Any, meta: Meta = Meta(), layers: Sequence[int] | None = None,
              types: Sequence[int] | None = None) -> "Figure":
    """A heatmap per (type, hidden index): rows = the language L1 whose set is deactivated, columns = the input
    language L2, cell = cos(C_L2^l, C_L2^(l, -L1 TN)); the diagonal is L1 = L2 ("Same").

    table: crossling_deactivation rows (type, input_lang, set_lang, hidden_index, cosine, split)."""
    import numpy as np
    import polars as pl

    df = frames.frame(table, ["type", "input_lang", "set_lang", "hidden_index", "cosine"], "crossling_deactivation")
    if layers is not None:
        df = df.filter(pl.col("hidden_index").is_in(list(layers)))
        if df.is_empty():
            raise ArgumentError("layers", "crossling_deactivation has no hidden index among {arg}")
    chosen = _types(df, types, "crossling_deactivation")
    cells = [(t, i) for t in chosen for i in frames.values(df.filter(pl.col("type") == t), "hidden_index")]
    inputs = style.lang_order(df["input_lang"].to_list())
    sets = style.lang_order(df["set_lang"].to_list())
    side = 0.5 * max(len(inputs), len(sets)) + 1.4
    n_rows, n_cols = style.grid_shape(len(cells), 3)
    fig, axes = style.grid(n_rows, n_cols, panel=(side, side), legend_width=1.0)
    flat = [ax for row in axes for ax in row]
    vmin = float(df["cosine"].min())
    vmax = max(float(df["cosine"].max()), vmin + 1e-6)
    image = None
    for ax, (type_, index) in zip(flat, cells):
        here = df.filter((pl.col("type") == type_) & (pl.col("hidden_index") == index))
        matrix = np.full((len(sets), len(inputs)), np.nan)
        for row in here.iter_rows(named=True):
            matrix[sets.index(row["set_lang"]), inputs.index(row["input_lang"])] = row["cosine"]
        image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap="viridis")
        _annotate(ax, matrix, vmin, vmax, "{:.3f}")
        ax.set_xticks(range(len(inputs)), inputs), ax.set_yticks(range(len(sets)), sets)
        ax.set_xlabel("input language L2"), ax.set_ylabel("deactivated set of L1")
        ax.grid(False), ax.tick_params(length=0)
        ax.set_title(f"{TYPE_NAMES.get(type_, f'type {type_}')}\nhidden index {index}", fontsize=8)
    style.hide_unused(flat[len(cells):])
    style.colorbar(fig, image, axes, "cos(C_L2, C_L2 with L1's TNs off)")
    style.suptitle(fig, "Cross-lingual deactivation: the L2 centroid with L1's transfer neurons off "
                             "(App. I, Tab. 21–23)", meta, frames.single(df, "split"), ())
    return fig

"""`tnstore stats lang-neurons`: η² of every neuron against each language vs the rest (paper App. H.3)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pyarrow as pa

from tnstore.analysis.stats.core import (
    DEFAULT_SPLIT, compute_group_stats, eta2_table, params, query, run_sql, select_sentences,
)
from tnstore.analysis.stats.labels import language_label
from tnstore.compute.cluster import SchedulerLike, check_scheduler
from tnstore.errors import ArgumentError
from tnstore.store.frames import to_polars
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl

PAPER_THRESHOLDS = (0.1, 0.25, 0.5)


@dataclass(frozen=True)
class LangNeuronsResult:
    """What a lang-neurons run wrote, and the neuron counts per threshold and layer, one column per language
    (`counts`, Polars; `counts_arrow` as Arrow)."""

    stats_id: str
    group_counts: dict[str, int]
    rows: int
    reused_stats: bool
    counts_arrow: pa.Table

    @property
    def counts(self) -> "pl.DataFrame":
        return to_polars(self.counts_arrow)


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    """Sorted distinct η² thresholds, each in [0, 1)."""
    try:
        values = sorted({float(v) for v in thresholds})
    except (TypeError, ValueError):
        values = []
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise ArgumentError("thresholds", f"{{arg}} {thresholds!r}: give η² values in [0, 1), e.g. 0.1, 0.25, 0.5")
    return values


def lang_neurons(store: "str | Path | Store", thresholds: Sequence[float] = PAPER_THRESHOLDS,
                 where: str | None = None, split: str = DEFAULT_SPLIT, progress: bool = False,
                 scheduler: "SchedulerLike" = None) -> LangNeuronsResult:
    """App. H.3: η², F and p of every neuron for every selected language (vs the rest); writes lang_neurons and
    counts the neurons above each threshold per layer. scheduler: run the streaming pass on a dask.distributed
    cluster (see `tnstore.stats.groups`)."""
    thresholds = check_thresholds(thresholds)
    scheduler = check_scheduler(scheduler)
    store = open_store(store)
    sel = select_sentences(store, "lang", where, split)
    label = language_label(sel, sel.groups)
    gs = compute_group_stats(store, sel, progress=progress, scheduler=scheduler)
    eta = eta2_table(store, gs, label.label_map())
    table = pa.table({
        "stats_id": pa.array([gs.stats_id] * eta.num_rows, pa.string()),
        "where_sql": pa.array([sel.where] * eta.num_rows, pa.string()),
        "split": pa.array([sel.split] * eta.num_rows, pa.string()),
        "lang": eta.column("label_id"), "layer": eta.column("layer"), "neuron": eta.column("neuron"),
        "n": eta.column("n"), "eta2": eta.column("eta2"), "anova_f": eta.column("anova_f"),
        "anova_p": eta.column("anova_p"),
    })
    with store.writing("stats lang-neurons"):
        if gs.table is not None:
            store.write_rows("group_stats", gs.table)
        store.write_rows("lang_neurons", table)
    return LangNeuronsResult(gs.stats_id, sel.counts(), table.num_rows, gs.table is None,
                             count_table(store, sel.where, sel.split, thresholds))


def count_table(store: Store, where: str, split: str, thresholds: list[float]) -> pa.Table:
    """queries/lang_neurons.sql pivoted for reading: one row per (threshold, layer), one column per language."""
    con = store.connection.cursor()
    try:
        counts = run_sql(con, query("lang_neurons", params=params(where_sql=where, split=split,
                                                                  thresholds=thresholds)))
        con.register("counts", counts)
        return run_sql(con, "PIVOT counts ON lang USING first(n_neurons) GROUP BY threshold, layer "
                            "ORDER BY threshold, layer")
    finally:
        con.close()

"""`tnstore stats lang-neurons`: η² of every neuron against each language vs the rest (paper App. H.3)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tnstore.analysis.stats import (
    DEFAULT_WHERE, compute_group_stats, eta2_table, params, query, run_sql, select_sentences, short_hash,
)
from tnstore.analysis.stats_labels import language_label
from tnstore.errors import TnstoreError
from tnstore.store.store import Store

PAPER_THRESHOLDS = (0.1, 0.25, 0.5)


@dataclass(frozen=True)
class LangNeuronsResult:
    """What a lang-neurons run wrote, and the counts per language, threshold and layer (columns = languages)."""

    stats_id: str
    group_counts: dict[str, int]
    rows: int
    reused_stats: bool
    counts: pa.Table


def parse_thresholds(text: str) -> list[float]:
    """'0.1,0.25,0.5' -> [0.1, 0.25, 0.5]; each in [0, 1)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise TnstoreError(f"--thresholds {text!r}: give comma-separated η² values in [0, 1), e.g. 0.1,0.25,0.5")
    return sorted(set(values))


def lang_neurons(store_path: str | Path, thresholds: list[float] = list(PAPER_THRESHOLDS),
                 where: str = DEFAULT_WHERE, progress: bool = False) -> LangNeuronsResult:
    """η², F and p of every neuron for every selected language (vs the rest); writes lang_neurons."""
    store = Store.open(store_path)
    sel = select_sentences(store, "lang", where)
    label = language_label(sel, sel.groups)
    gs = compute_group_stats(store, sel, progress=progress)
    eta = eta2_table(store, gs, label.label_map())
    table = pa.table({
        "stats_id": pa.array([gs.stats_id] * eta.num_rows, pa.string()),
        "where_sql": pa.array([where] * eta.num_rows, pa.string()),
        "lang": eta.column("label_id"), "layer": eta.column("layer"), "neuron": eta.column("neuron"),
        "n": eta.column("n"), "eta2": eta.column("eta2"), "anova_f": eta.column("anova_f"),
        "anova_p": eta.column("anova_p"),
    })
    with store.writing("stats lang-neurons"):
        if gs.table is not None:
            store.write_part("group_stats", gs.part_key, gs.table)
        store.write_part("lang_neurons", "ln-" + short_hash(where), table)
    return LangNeuronsResult(gs.stats_id, sel.counts(), table.num_rows, gs.table is None,
                             count_table(store, where, thresholds))


def count_table(store: Store, where: str, thresholds: list[float]) -> pa.Table:
    """queries/lang_neurons.sql pivoted for reading: one row per (threshold, layer), one column per language."""
    con = store.connect()
    try:
        counts = run_sql(con, query("lang_neurons", params=params(where_sql=where, thresholds=thresholds)))
        con.register("counts", counts)
        return run_sql(con, "PIVOT counts ON lang USING first(n_neurons) GROUP BY threshold, layer "
                            "ORDER BY threshold, layer")
    finally:
        con.close()

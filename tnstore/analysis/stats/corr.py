"""`tnstore stats corr-ratio`: η², one-way ANOVA and Mann-Whitney U of transfer neurons against a label (§6.1).

η² and F come from group_stats through queries/eta2.sql; Mann-Whitney U needs ranks, so the transfer neurons'
activations are gathered during the same streaming pass and tested with scipy.stats.mannwhitneyu.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

from tnstore.analysis.stats.core import (
    DEFAULT_SPLIT, GroupStats, Selection, analysis_connection, compute_group_stats, eta2_table, params,
    query, run_sql, select_sentences,
)
from tnstore.analysis.stats.labels import (
    PAPER_FAMILIES, Label, check_families, family_label, grouping_for, language_label, sql_label,
)
from tnstore.compute.cluster import SchedulerLike, check_scheduler
from tnstore.errors import ArgumentError, SqlError, TnstoreError
from tnstore.store.frames import to_polars
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl

MWU_COLUMNS = 512


@dataclass(frozen=True)
class CorrRatioResult:
    """What a corr-ratio run wrote (`rows` rows of tn_corr_ratio) and its paper-style summary (Polars;
    `summary_arrow` as Arrow): per set, mean η² of the top 10/100/1000 and the significant shares."""

    label: Label
    where: str
    split: str
    stats_id: str
    group_counts: dict[str, int]
    rows: int
    reused_stats: bool
    summary_arrow: pa.Table

    @property
    def summary(self) -> "pl.DataFrame":
        return to_polars(self.summary_arrow)


def corr_ratio(store: "str | Path | Store", label: str = "language",
               families: Sequence[Sequence[str]] = PAPER_FAMILIES, label_sql: str | None = None,
               where: str | None = None, split: str = DEFAULT_SPLIT, sets: str | None = None,
               all_neurons: bool = False, progress: bool = False, scheduler: "SchedulerLike" = None) -> CorrRatioResult:
    """η², ANOVA F/p and Mann-Whitney p of every transfer neuron against a label (every neuron too with
    `all_neurons`); writes tn_corr_ratio (and group_stats).

    label: "language" (each set's own language vs the rest), "family" (`families`, e.g. (("en", "nl", "it"),
    ("ja", "ko"))) or "sql" (the groups of `label_sql`, a SQL expression over sentences).
    where, split: the sentences (tnstore.store.selection; where None = plain captures).
    sets: a SQL predicate over transfer_neurons picking the sets (default all); a re-run for some sets replaces
    only their rows.
    scheduler: run the streaming pass on a dask.distributed cluster (see `tnstore.stats.groups`).
    """
    scheduler = check_scheduler(scheduler)
    store = open_store(store)
    grouping = grouping_for(label, label_sql)
    if label == "family":
        families = check_families(families)  # a malformed value fails before any work
    tns = read_tn_sets(store, sets)
    if tns.num_rows == 0 and not all_neurons:
        raise ArgumentError("all_neurons", "no transfer-neuron sets" + (f" match sets {sets!r}" if sets else
                                                                        " in the store")
                            + "; run `tnstore detect` first, or pass {arg}")
    sel = select_sentences(store, grouping, where, split)
    lab = _build_label(label, sel, families, label_sql, tns, all_neurons)
    tns = _with_label_ids(tns, lab)
    pairs = _unique_pairs(tns)
    binary = any(p is not None for p in lab.positive.values())
    gs = compute_group_stats(store, sel, gather=pairs if binary and len(pairs) else None, progress=progress,
                             scheduler=scheduler)
    neurons = None if all_neurons else pa.table({"layer": pairs[:, 0], "neuron": pairs[:, 1]})
    eta = eta2_table(store, gs, lab.label_map(), neurons)
    mwu = _mann_whitney(lab, sel, tns, pairs, gs)
    table = _result_table(store, gs, lab, tns, eta, mwu, all_neurons)
    with store.writing("stats corr-ratio"):
        if gs.table is not None:
            store.write_rows("group_stats", gs.table)
        store.write_rows("tn_corr_ratio", table)
    return CorrRatioResult(lab, sel.where, sel.split, gs.stats_id, sel.counts(), table.num_rows, gs.table is None,
                           summarize(store, lab, sel.where, sel.split))


def read_tn_sets(store: Store, sets: str | None) -> pa.Table:
    """(set_id, lang, type, rank, layer, neuron) of the transfer-neuron sets that `sets` (SQL) picks."""
    sql = ("SELECT set_id, lang, type, rank, layer, neuron FROM transfer_neurons"
           + (f" WHERE ({sets})" if sets else "") + " ORDER BY set_id, rank")
    try:
        tns = store.query(sql)
    except SqlError as exc:
        raise ArgumentError("sets", f"{{arg}} {sets!r} is not valid SQL over transfer_neurons: {exc.reason}") from None
    _check_neurons_exist(store, tns)
    return tns


def _check_neurons_exist(store: Store, tns: pa.Table) -> None:
    n_layers, d_mlp = int(store.model_facts["n_layers"]), int(store.model_facts["d_mlp"])
    layer, neuron = tns.column("layer").to_numpy(), tns.column("neuron").to_numpy()
    bad = (layer < 0) | (layer >= n_layers) | (neuron < 0) | (neuron >= d_mlp)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TnstoreError(f"transfer_neurons set {tns.column('set_id')[i]} names layer {layer[i]} neuron {neuron[i]}, "
                           f"outside this store's model ({n_layers} layers × {d_mlp} neurons)")


def _build_label(kind: str, sel: Selection, families: list[list[str]], label_sql: str | None, tns: pa.Table,
                 all_neurons: bool) -> Label:
    if kind == "family":
        return family_label(sel, families)
    if kind == "sql":
        return sql_label(sel, label_sql or "")
    targets = set(tns.column("lang").to_pylist())
    if all_neurons:
        targets |= set(sel.groups)
    return language_label(sel, sorted(targets))


def _with_label_ids(tns: pa.Table, lab: Label) -> pa.Table:
    """Each transfer neuron's label: its own language's for the language label, the single label otherwise."""
    if lab.kind == "language":
        ids = tns.column("lang")
    else:
        (only,) = lab.assignments
        ids = pa.array([only] * tns.num_rows, pa.string())
    return tns.append_column("label_id", ids)


def _unique_pairs(tns: pa.Table) -> np.ndarray:
    """(K, 2) distinct (layer, neuron) of the sets, sorted."""
    if tns.num_rows == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.stack([tns.column("layer").to_numpy(), tns.column("neuron").to_numpy()], axis=1).astype(np.int64)
    return np.unique(pairs, axis=0)


def _mann_whitney(lab: Label, sel: Selection, tns: pa.Table, pairs: np.ndarray, gs: GroupStats) -> pa.Table:
    """(label_id, layer, neuron, mwu_p) for the transfer neurons of every binary label."""
    out: dict[str, list] = {"label_id": [], "layer": [], "neuron": [], "mwu_p": []}
    if gs.gathered is None:
        return pa.table(out, schema=_MWU_SCHEMA)
    for label_id, positive in lab.positive.items():
        if positive is None:
            continue
        mine = _unique_pairs(tns.filter(pc.equal(tns.column("label_id"), label_id)))
        if not len(mine):
            continue
        columns = _column_index(pairs, mine)
        groups = lab.label_groups(label_id, sel)
        p = mann_whitney_p(gs.gathered[:, columns], groups, positive)
        out["label_id"] += [label_id] * len(mine)
        out["layer"] += mine[:, 0].tolist()
        out["neuron"] += mine[:, 1].tolist()
        out["mwu_p"] += [None if np.isnan(v) else float(v) for v in p]
    return pa.table(out, schema=_MWU_SCHEMA)


_MWU_SCHEMA = pa.schema([("label_id", pa.string()), ("layer", pa.int64()), ("neuron", pa.int64()),
                         ("mwu_p", pa.float64())])


def mann_whitney_p(values: np.ndarray, groups: np.ndarray, positive: str) -> np.ndarray:
    """Two-sided Mann-Whitney U p-value of each column of `values` (N, K): rows in `positive` vs the other rows
    that have a group (None = left out). scipy's defaults: method 'auto', continuity correction, tie correction."""
    inside = groups == positive
    outside = np.array([g is not None for g in groups]) & ~inside
    p = np.empty(values.shape[1])
    # A few hundred columns at a time: scipy's ranking makes several float64 copies of what it is given.
    for start in range(0, values.shape[1], MWU_COLUMNS):
        cols = values[:, start : start + MWU_COLUMNS].astype(np.float64)  # scipy computes U in the input's precision
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant columns: p is NaN, stored as NULL
            p[start : start + MWU_COLUMNS] = sps.mannwhitneyu(cols[inside], cols[outside], axis=0).pvalue
    return p


def _column_index(pairs: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index into the rows of sorted `pairs` (K, 2) of each row of `wanted` (M, 2)."""
    keys = pairs[:, 0] * (1 << 32) + pairs[:, 1]
    return np.searchsorted(keys, wanted[:, 0] * (1 << 32) + wanted[:, 1])


def _result_table(store: Store, gs: GroupStats, lab: Label, tns: pa.Table, eta: pa.Table,
                  mwu: pa.Table, all_neurons: bool) -> pa.Table:
    """The tn_corr_ratio rows: one per transfer neuron (and one per neuron and label with `all_neurons`)."""
    positive = pa.table({"label_id": list(lab.positive), "positive": list(lab.positive.values())},
                        schema=pa.schema([("label_id", pa.string()), ("positive", pa.string())]))
    settings = {"stats_id": gs.stats_id, "label": lab.kind, "label_spec": lab.spec, "where_sql": gs.where,
                "split": gs.split}
    sql = _TN_ROWS
    if all_neurons:
        sql += "\nUNION ALL\n" + _ALL_NEURON_ROWS
        settings["language_label"] = lab.kind == "language"
    sql += "\nORDER BY set_id, rank, lang, layer, neuron"
    with analysis_connection(store, gs, tn=tns, eta=eta, mwu=mwu, positives=positive) as con:
        return run_sql(con, sql, settings)


# Glue, not analysis: attach the η² rows (queries/eta2.sql) and Mann-Whitney p-values to the transfer neurons.
_TN_ROWS = """
SELECT $stats_id AS stats_id, $label AS label, $label_spec AS label_spec, $where_sql AS where_sql, $split AS split,
       p.positive,
       t.set_id, t.lang, t.type, t.rank, t.layer, t.neuron, e.n, e.k AS n_groups, e.eta2, e.anova_f,
       e.df_between, e.df_within, e.anova_p, m.mwu_p
FROM tn t
JOIN eta e ON e.label_id = t.label_id AND e.layer = t.layer AND e.neuron = t.neuron
JOIN positives p ON p.label_id = t.label_id
LEFT JOIN mwu m ON m.label_id = t.label_id AND m.layer = t.layer AND m.neuron = t.neuron
"""
_ALL_NEURON_ROWS = """
SELECT $stats_id, $label, $label_spec, $where_sql, $split, p.positive,
       NULL, CASE WHEN $language_label THEN e.label_id END, NULL, NULL, e.layer, e.neuron, e.n, e.k, e.eta2,
       e.anova_f, e.df_between, e.df_within, e.anova_p, NULL
FROM eta e
JOIN positives p ON p.label_id = e.label_id
"""


def summarize(store: Store, lab: Label, where: str, split: str) -> pa.Table:
    """queries/tn_summary.sql for this run's rows of tn_corr_ratio."""
    return store.query(query("tn_summary", params=params(label=lab.kind, label_spec=lab.spec, where_sql=where,
                                                         split=split)))

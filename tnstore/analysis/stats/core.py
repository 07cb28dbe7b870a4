"""Shared core of the §6 statistics: which sentences in which groups, the group_stats pass, η² and ANOVA in SQL.

A statistic runs on the sentences `split` and `where` select (the selection contract of tnstore.store.selection:
a sentence captured twice counts once, a group may not mix ablations), grouped by a SQL expression over
`sentences` (`lang` for the language and family labels). One streaming pass (tnstore.kernels.group_stats) turns
them into per-group sums stored as `group_stats`; queries/eta2.sql derives η², F and the degrees of freedom from
that table for any label that merges groups, and scipy adds the F test's p-value (DuckDB has no F distribution).
"""
from __future__ import annotations

import hashlib
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

from tnstore.compute.cluster import SchedulerLike, check_scheduler
from tnstore.errors import ArgumentError, TnstoreError
from tnstore.kernels.group_stats import GroupMoments, gather_columns, group_moments
from tnstore.queries import load
from tnstore.store import selection as S
from tnstore.store.store import Store, open_store

# Plain captures only: replay captures with neurons deactivated (sentences.ablation) are other activations.
DEFAULT_WHERE = S.PLAIN
DEFAULT_SPLIT = "train"
ARRAY = "mlp_act"
# Accumulators take 3 × 8 bytes per (group, layer, neuron); refuse groupings that would not fit comfortably.
MAX_ACCUMULATOR_BYTES = 4 << 30


@dataclass(frozen=True)
class Selection:
    """The sentences a statistic runs on.

    rows: (N,) ascending store rows; codes: (N,) index into `groups` (sorted group values) of each row.
    """

    grouping: str
    where: str
    split: str
    rows: np.ndarray
    codes: np.ndarray
    groups: list[str]

    def counts(self) -> dict[str, int]:
        """Sentences per group."""
        return dict(zip(self.groups, np.bincount(self.codes, minlength=len(self.groups)).tolist()))

    def describe(self) -> str:
        return f"where {self.where!r}, split {self.split}"


def select_sentences(store: Store, grouping: str, where: str | None, split: str = DEFAULT_SPLIT,
                     grouping_arg: str = "label_sql") -> Selection:
    """The sentences `where` and `split` select (one row per sentence), grouped by the SQL expression `grouping`;
    rows whose group is NULL are left out, and a group may not mix ablations."""
    sel = S.select(store, S.make_scope(where, split, DEFAULT_WHERE))
    codes, groups = S.group_codes(store, sel, grouping, arg=grouping_arg)
    keep = codes >= 0
    if not keep.any():
        raise ArgumentError(grouping_arg, f"{{arg}} {grouping!r} is NULL for every sentence {sel.scope.describe()} "
                                          "selects; it must give each sentence its group")
    sel, codes = sel.subset(keep), codes[keep]
    S.check_one_condition(sel, by=np.asarray(groups, dtype=object)[codes], what="group")
    return Selection(grouping, sel.scope.where, sel.scope.split, sel.rows, codes,
                     [g for g in groups])


# ------------------------------------------------------------------------------------------------ group stats
@dataclass(frozen=True)
class GroupStats:
    """One selection's group_stats: `table` is None when the store already holds exactly these statistics.

    gathered: (N, K) activations of the neurons asked for (None if none were asked for).
    """

    stats_id: str
    grouping: str
    where: str
    split: str
    table: pa.Table | None
    gathered: np.ndarray | None


def compute_group_stats(store: Store, sel: Selection, gather: np.ndarray | None = None,
                        progress: bool = False, scheduler: "SchedulerLike" = None) -> GroupStats:
    """The group_stats of `sel`, reusing the stored ones if nothing changed; gathers `gather` (K, 2) on the way.

    scheduler: run the streaming pass as chunk tasks on a dask.distributed cluster (tnstore.compute.cluster)."""
    n_layers = int(store.model_facts["n_layers"])
    d_mlp = int(store.model_facts["d_mlp"])
    _check_accumulator_size(sel, n_layers, d_mlp)
    stats_id = "gs-" + short_hash(ARRAY, sel.grouping, sel.where, sel.split, sel.rows.tobytes(),
                                  sel.codes.tobytes(), *sel.groups, store.model_facts.get("fingerprint", ""))
    held = store.sql("SELECT count(*) FROM group_stats WHERE stats_id = ?", [stats_id]).scalar()
    if held == len(sel.groups) * n_layers * d_mlp:
        gathered = None
        if gather is not None and len(gather) and scheduler is None:
            gathered = gather_columns(store, sel.rows, gather, array=ARRAY)
        elif gather is not None and len(gather):  # the same reads, on the cluster (their sums are dropped)
            _, gathered = group_moments(store, sel.rows, sel.codes, len(sel.groups), np.unique(gather[:, 0]),
                                        array=ARRAY, gather=gather, scheduler=scheduler)
        return GroupStats(stats_id, sel.grouping, sel.where, sel.split, None, gathered)
    with _progress(len(sel.rows) * n_layers, progress) as tick:
        moments, gathered = group_moments(store, sel.rows, sel.codes, len(sel.groups), range(n_layers),
                                          array=ARRAY, gather=gather, on_block=tick, scheduler=scheduler)
    return GroupStats(stats_id, sel.grouping, sel.where, sel.split, moments_table(stats_id, sel, moments), gathered)


@dataclass(frozen=True)
class GroupsResult:
    """What `groups` did: the group_stats stats_id, sentences per group, and whether the store held them already."""

    stats_id: str
    group_counts: dict[str, int]
    reused: bool


def groups(store: "str | Path | Store", group_by: str = "lang", where: str | None = None,
           split: str = DEFAULT_SPLIT, progress: bool = False, scheduler: "SchedulerLike" = None) -> GroupsResult:
    """Compute and write group_stats: per group of the SQL expression `group_by` over sentences, per layer and
    neuron, the count, shift and shifted sums of mlp_act over the sentences `where` and `split` select.

    scheduler: `tnstore.Scheduler.at("tcp://HOST:PORT")`, `tnstore.Scheduler.local(N)` or a distributed.Client:
    the pass runs as chunk tasks there, its workers reading the store by its path; None: in this process."""
    scheduler = check_scheduler(scheduler)
    store = open_store(store)
    sel = select_sentences(store, group_by, where, split, grouping_arg="group_by")
    gs = compute_group_stats(store, sel, progress=progress, scheduler=scheduler)
    if gs.table is not None:
        with store.writing("stats groups"):
            store.write_rows("group_stats", gs.table)
    return GroupsResult(gs.stats_id, sel.counts(), gs.table is None)


def moments_table(stats_id: str, sel: Selection, m: GroupMoments) -> pa.Table:
    """The group_stats rows of `m` (G × L × D rows, group-major, then layer, then neuron)."""
    g, n_layers, d = m.sum.shape
    size = g * n_layers * d
    group_index = np.repeat(np.arange(g, dtype=np.int32), n_layers * d)
    return pa.table({
        "stats_id": pa.DictionaryArray.from_arrays(np.zeros(size, dtype=np.int32), [stats_id]),
        "array_name": pa.DictionaryArray.from_arrays(np.zeros(size, dtype=np.int32), [ARRAY]),
        "grouping": pa.DictionaryArray.from_arrays(np.zeros(size, dtype=np.int32), [sel.grouping]),
        "where_sql": pa.DictionaryArray.from_arrays(np.zeros(size, dtype=np.int32), [sel.where]),
        "split": pa.DictionaryArray.from_arrays(np.zeros(size, dtype=np.int32), [sel.split]),
        "group_value": pa.DictionaryArray.from_arrays(group_index, sel.groups),
        "layer": np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), d), g),
        "neuron": np.tile(np.arange(d, dtype=np.int32), g * n_layers),
        "n": np.repeat(m.n, n_layers * d),
        "shift": m.shift.ravel(),
        "sum": m.sum.ravel(),
        "sumsq": m.sumsq.ravel(),
    })


def _check_accumulator_size(sel: Selection, n_layers: int, d_mlp: int) -> None:
    need = 3 * 8 * len(sel.groups) * n_layers * d_mlp
    if need > MAX_ACCUMULATOR_BYTES:
        raise TnstoreError(
            f"grouping {sel.grouping!r} makes {len(sel.groups)} groups, whose statistics would take "
            f"{need / 2**30:.1f} GiB; use an expression with fewer distinct values")


# ------------------------------------------------------------------------------------------------ η² in SQL
def query(name: str, **ctes: str) -> str:
    """queries/<name>.sql with some of its CTEs (e.g. `params`) replaced by the given SELECT statements.

    The shipped files run as they are (`tnstore sql STORE "$(cat queries/eta2.sql)"`) with example settings in
    a `params` row; tnstore runs the very same text with its own settings swapped in.
    """
    sql = load(name.removesuffix(".sql"))
    for cte, body in ctes.items():
        sql = _replace_cte(sql, cte, body)
    return sql


def params(**values: Any) -> str:
    """A one-row SELECT of SQL literals, for a `params` CTE."""
    return "SELECT " + ", ".join(f"{sql_literal(v)} AS {k}" for k, v in values.items())


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL::VARCHAR"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value)!r}::DOUBLE"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(sql_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def _replace_cte(sql: str, name: str, body: str) -> str:
    """Replace the body of CTE `name AS ( ... )` (the first after WITH), skipping strings and -- comments."""
    head = sql.index("WITH ")
    match = re.compile(rf"\b{name}\s+AS\s*\(").search(sql, head)
    if match is None:
        raise ValueError(f"query has no CTE named {name}")
    depth, i = 1, match.end()
    while depth:
        c = sql[i]
        if c == "'":
            i = sql.index("'", i + 1)  # a doubled '' reads as two strings, which is the same for paren matching
        elif sql.startswith("--", i):
            i = sql.index("\n", i)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    return sql[:match.end()] + "\n    " + body + "\n" + sql[i - 1:]


@contextmanager
def analysis_connection(store: Store, gs: GroupStats, neurons: pa.Table | None = None,
                        **tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
    """A store connection where `group_stats` is this selection's statistics (fresh or stored), limited to
    `neurons` (layer, neuron) if given, and `tables` are visible by name (e.g. label_map)."""
    # A cursor sees the store's views; its temporary view `group_stats` shadows the stored table for it alone.
    con = store.connection.cursor()
    try:
        source = f"{store_catalog(con)}.main.group_stats"  # the stored table, not the temporary view made below
        if gs.table is not None:
            con.register("_fresh_group_stats", gs.table)
            source = "_fresh_group_stats"
        view = f"SELECT s.* FROM {source} s WHERE s.stats_id = '{gs.stats_id}'"
        if neurons is not None:
            con.register("_neurons", neurons.select(["layer", "neuron"]))
            view = f"SELECT s.* FROM ({view}) s SEMI JOIN _neurons USING (layer, neuron)"
        con.execute(f"CREATE TEMP VIEW group_stats AS {view}")
        for name, table in tables.items():
            con.register(name, table)
        yield con
    finally:
        con.close()


def store_catalog(con: duckdb.DuckDBPyConnection) -> str:
    """The store views' database: `main.x` inside a temporary view would name the temporary schema itself."""
    return con.execute("SELECT current_database()").fetchall()[0][0]


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, bindings: dict[str, Any] | None = None) -> pa.Table:
    """Run `sql` (with $name bindings) and return Arrow."""
    relation = con.sql(sql, params=bindings)
    return (getattr(relation, "to_arrow_table", None) or relation.arrow)()


def eta2_table(store: Store, gs: GroupStats, label_map: pa.Table, neurons: pa.Table | None = None) -> pa.Table:
    """queries/eta2.sql for every label in `label_map`, plus `anova_p`.

    label_map: (label_id, group_value, label_group). neurons: optional (layer, neuron) to limit the work to.
    Returns one row per (label_id, layer, neuron): n, k, ss_between, ss_within, eta2, anova_f, df_between,
    df_within, anova_p. One query per label keeps DuckDB's memory to one label's rows (~0.8 GB for every
    neuron of a 32 × 14336 model, instead of ~2 GB for five labels at once).
    """
    sql = query("eta2", params=params(grouping=gs.grouping, where_sql=gs.where, split=gs.split),
                label_map="SELECT label_id, group_value, label_group FROM _label_map")
    parts = []
    with analysis_connection(store, gs, neurons) as con:
        for label_id in sorted(set(label_map.column("label_id").to_pylist())):
            con.register("_label_map", label_map.filter(pc.equal(label_map.column("label_id"), label_id)))
            parts.append(run_sql(con, sql))
    result = pa.concat_tables(parts)
    p = anova_p(*(result.column(c).to_numpy(zero_copy_only=False) for c in ("anova_f", "df_between", "df_within")))
    return result.append_column("anova_p", pa.array(p, mask=np.isnan(p)))


def anova_p(f: np.ndarray, df_between: np.ndarray, df_within: np.ndarray) -> np.ndarray:
    """Upper tail of F(df_between, df_within) at f, i.e. scipy.stats.f.sf; NaN where f is NaN, 0 where f is inf."""
    return sps.f.sf(f.astype(np.float64), df_between.astype(np.float64), df_within.astype(np.float64))


def short_hash(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    """A tqdm bar over sentence-layers on stderr, or a no-op callback."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="row-layer", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
              leave=False, desc="group stats") as bar:
        yield bar.update

"""`tnstore stats jaccard`: overlap of languages' top-n transfer-neuron sets, overall and per layer (§6.1)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import duckdb
import pyarrow as pa

from tnstore.analysis.stats.core import store_catalog, params, query, run_sql
from tnstore.errors import ArgumentError, TnstoreError
from tnstore.store.frames import to_polars
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class JaccardResult:
    """The rows written to tn_jaccard, and their overall and per-layer views for printing (Arrow; the
    properties `overall` and `by_layer` hand them out as Polars)."""

    table: pa.Table
    overall_arrow: pa.Table
    by_layer_arrow: pa.Table

    @property
    def overall(self) -> "pl.DataFrame":
        return to_polars(self.overall_arrow)

    @property
    def by_layer(self) -> "pl.DataFrame":
        return to_polars(self.by_layer_arrow)


def jaccard(store: "str | Path | Store", type: int, top: int = 1000, sets: str | None = None) -> JaccardResult:
    """Jaccard index of the top-`top` sets of every pair of languages of Type `type`, overall and per layer;
    writes tn_jaccard. `sets`: a SQL predicate over transfer_neurons picking the sets (default all)."""
    if type not in (1, 2):
        raise ArgumentError("type", f"{{arg}} {type!r} is not 1 or 2")
    if not isinstance(top, int) or top < 1:
        raise ArgumentError("top", f"{{arg}} {top!r} must be at least 1")
    store = open_store(store)
    with _connection(store, sets) as con:
        _check_sets(con, type, top, sets)
        table = run_sql(con, query("jaccard", params=params(type=type, top=top)))
    if table.num_rows == 0:
        raise TnstoreError(f"type {type} top {top}: no two languages have sets with the same split, distance "
                           "and candidate layers to compare; see `tnstore sql STORE \"SELECT DISTINCT set_id, lang, "
                           "split, dist, layer_start, layer_end, top FROM transfer_neurons\"`")
    table = table.append_column("sets_sql", pa.array([sets] * table.num_rows, pa.string()))
    with store.writing("stats jaccard"):
        store.write_rows("tn_jaccard", table)
    return JaccardResult(table, *_views(table))


@contextmanager
def _connection(store: Store, sets: str | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on the store where `transfer_neurons` holds only the sets that `sets` (SQL) picks."""
    con = store.connection.cursor()
    try:
        if sets:
            try:
                con.execute(f"CREATE TEMP VIEW transfer_neurons AS SELECT * FROM "
                            f"{store_catalog(con)}.main.transfer_neurons WHERE ({sets})")
                con.execute("SELECT count(*) FROM transfer_neurons").fetchall()
            except duckdb.Error as exc:
                reason = str(exc).strip().splitlines()[0]
                raise ArgumentError("sets", f"{{arg}} {sets!r} is not valid SQL over transfer_neurons: "
                                            f"{reason}") from None
        yield con
    finally:
        con.close()


def _check_sets(con: duckdb.DuckDBPyConnection, type_: int, top: int, sets: str | None) -> None:
    """At least two languages must have a set of this type holding `top` neurons."""
    held = run_sql(con, "SELECT lang, max(top) AS top FROM transfer_neurons WHERE type = $type GROUP BY lang "
                        "ORDER BY lang", {"type": type_}).to_pylist()
    enough = [r["lang"] for r in held if r["top"] >= top]
    if len(enough) >= 2:
        return
    where = f" matching sets {sets!r}" if sets else ""
    have = ", ".join(f"{r['lang']} (top {r['top']})" for r in held) or "none"
    raise ArgumentError("top", f"type {type_} {{arg}} {top}: Jaccard needs top-{top} sets of at least two languages; "
                               f"the store has Type-{type_} sets{where}: {have}; run `tnstore detect --top {top}` "
                               "for more")


def _views(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(overall rows, per-layer matrix: one row per layer, one column per language pair)."""
    con = duckdb.connect()
    try:
        con.register("jac", table)
        overall = run_sql(con, "SELECT split, dist, lang_a, lang_b, n_a, n_b, n_intersection, jaccard FROM jac "
                               "WHERE layer IS NULL ORDER BY split, dist, lang_a, lang_b")
        by_layer = run_sql(con, "PIVOT (SELECT split, dist, layer, lang_a || '-' || lang_b AS pair, jaccard FROM jac "
                                "WHERE layer IS NOT NULL) ON pair USING first(jaccard) GROUP BY split, dist, layer "
                                "ORDER BY split, dist, layer")
        return overall, by_layer
    finally:
        con.close()

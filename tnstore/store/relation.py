"""Lazy query results over a store's tables: a DuckDB relation whose errors are `SqlError`s.

`Store.sql()` and `Store.table()` return a `Relation`. Nothing runs until a result is asked for, at the edge:

    rel.pl()        polars DataFrame          rel.arrow()      pyarrow Table
    rel.df()        pandas DataFrame          rel.fetchall()   list of tuples
    rel.filter("split = 'test'").project("row, lang").order("row").limit(10)   -> Relation again

Every other attribute of DuckDB's relation is passed through; the ones that return a relation return a
`Relation`. DuckDB reports some errors when a relation is built (syntax, unknown columns) and others only when it
runs (a failed cast); both surface as `SqlError` with DuckDB's first line as the reason.
"""
from __future__ import annotations

import functools
from typing import Any

import duckdb
import pyarrow as pa

from tnstore.errors import SqlError, TnstoreError
from tnstore.store.frames import to_polars


def translate(exc: duckdb.Error) -> SqlError:
    """DuckDB's error as a SqlError carrying its first line."""
    text = str(exc).strip()
    return SqlError(text.splitlines()[0] if text else type(exc).__name__)


def guarded(fn):
    """Call `fn`, turning DuckDB errors into SqlError and DuckDB relations into Relation."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except duckdb.Error as exc:
            raise translate(exc) from None
        return Relation(result) if isinstance(result, duckdb.DuckDBPyRelation) else result
    return call


class Relation:
    """A lazy DuckDB relation (see the module docstring)."""

    __slots__ = ("_rel",)

    def __init__(self, rel: duckdb.DuckDBPyRelation):
        self._rel = rel

    @property
    def duckdb(self) -> duckdb.DuckDBPyRelation:
        """The underlying DuckDB relation, for anything this wrapper does not cover."""
        return self._rel

    def arrow(self) -> pa.Table:
        """The result as a pyarrow Table (DuckDB >= 2 hands out readers from `.arrow()`; this is always a Table)."""
        to_table = getattr(self._rel, "to_arrow_table", None) or self._rel.arrow
        return guarded(to_table)()

    def pl(self):
        """The result as a polars DataFrame."""
        return to_polars(self.arrow())

    def df(self):
        """The result as a pandas DataFrame (needs pandas: `pip install 'tnstore[pandas]'`)."""
        import importlib.util

        if importlib.util.find_spec("pandas") is None:
            raise TnstoreError("Relation.df() needs pandas, which is not installed: pip install 'tnstore[pandas]' "
                               "(or use .pl() or .arrow())")
        return guarded(self._rel.df)()

    def to_pylist(self) -> list[dict[str, Any]]:
        """The result as a list of row dicts."""
        return self.arrow().to_pylist()

    def scalar(self) -> Any:
        """The first column of the first row (None for an empty result)."""
        rows = guarded(lambda: self._rel.limit(1).fetchall())()
        return rows[0][0] if rows else None

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._rel, name)
        return guarded(value) if callable(value) else value

    def __len__(self) -> int:
        return int(guarded(lambda: self._rel.aggregate("count(*)").fetchall()[0][0])())

    def __repr__(self) -> str:
        try:
            return repr(self._rel)
        except duckdb.Error as exc:
            return f"<Relation: {translate(exc)}>"

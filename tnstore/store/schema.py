"""The store's written-down contract: `schemas/store-v<N>.json`, loaded once and used to check every table write."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import pyarrow as pa

from tnstore.errors import TnstoreError

FORMAT_VERSION = 1

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int8": pa.int8(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<float32>": pa.list_(pa.float32()),
}


@lru_cache(maxsize=None)
def load_schema(version: int = FORMAT_VERSION) -> dict[str, Any]:
    """The parsed `schemas/store-v<version>.json`."""
    text = resources.files("tnstore.schemas").joinpath(f"store-v{version}.json").read_text("utf-8")
    return json.loads(text)


def table_names() -> list[str]:
    return list(load_schema()["tables"])


def arrow_schema(table: str) -> pa.Schema:
    """Arrow schema of a store table, in the column order of the schema file."""
    tables = load_schema()["tables"]
    if table not in tables:
        raise TnstoreError(f"unknown table {table!r}; the store has: {', '.join(tables)}")
    columns = tables[table]["columns"]
    return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in columns.items()])


def conform(table: str, data: pa.Table) -> pa.Table:
    """Cast `data` to the table's schema; a missing or unexpected column is a programming error."""
    schema = arrow_schema(table)
    missing = set(schema.names) - set(data.column_names)
    extra = set(data.column_names) - set(schema.names)
    if missing or extra:
        raise ValueError(f"table {table}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
    return data.select(schema.names).cast(schema)

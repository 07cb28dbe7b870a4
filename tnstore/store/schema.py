"""The store's written-down contract: `schemas/store-v<N>.json`, loaded once and used to check every table write.

Also the one place that names a table's parts: a part holds the rows of one value of the table's declared `key`.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import pyarrow as pa

from tnstore.errors import TnstoreError

FORMAT_VERSION = 2
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,119}$")  # a valid store key (files.NAME): never "." or ".."

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


@dataclass(frozen=True)
class TableSpec:
    """One table of the schema: its Arrow schema, the columns naming a part (`key`) and, for tables whose parts
    are updated a slice at a time, the columns naming a slice (`merge_on`)."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    merge_on: tuple[str, ...]
    doc: str


@lru_cache(maxsize=None)
def load_schema(version: int = FORMAT_VERSION) -> dict[str, Any]:
    """The parsed `schemas/store-v<version>.json`."""
    text = resources.files("tnstore.schemas").joinpath(f"store-v{version}.json").read_text("utf-8")
    return json.loads(text)


def table_names() -> list[str]:
    return list(load_schema()["tables"])


@lru_cache(maxsize=None)
def table_spec(table: str) -> TableSpec:
    tables = load_schema()["tables"]
    if table not in tables:
        raise TnstoreError(f"unknown table {table!r}; the store has: {', '.join(tables)}")
    entry = tables[table]
    schema = pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in entry["columns"].items()])
    return TableSpec(table, schema, tuple(entry["key"]), tuple(entry.get("merge_on", ())), entry.get("doc", ""))


def arrow_schema(table: str) -> pa.Schema:
    """Arrow schema of a store table, in the column order of the schema file."""
    return table_spec(table).schema


def conform(table: str, data: pa.Table) -> pa.Table:
    """Cast `data` to the table's schema; a missing or unexpected column is a programming error."""
    schema = arrow_schema(table)
    missing = set(schema.names) - set(data.column_names)
    extra = set(data.column_names) - set(schema.names)
    if missing or extra:
        raise ValueError(f"table {table}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
    return data.select(schema.names).cast(schema)


def part_name(table: str, key_values: Sequence[Any]) -> str:
    """The file name (without .parquet) of the part holding the rows with these values of the table's key.

    A single safe string (a run id, set id, analysis id) names its part as it is, so a folder listing reads; any
    other key is hashed. The same values always give the same name, so a re-run replaces its own part.
    """
    spec = table_spec(table)
    if len(key_values) != len(spec.key):
        raise ValueError(f"table {table}: key {spec.key} needs {len(spec.key)} values, got {len(key_values)}")
    if not spec.key:
        return table
    if len(key_values) == 1 and isinstance(key_values[0], str) and SAFE_NAME.match(key_values[0]) \
            and not key_values[0].startswith("k-"):
        return key_values[0]
    text = json.dumps([_jsonable(v) for v in key_values], ensure_ascii=False)
    return "k-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)

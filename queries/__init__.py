"""The analysis SQL shipped with tnstore, as readable files users can copy (queries/*.sql in the repo).

Each file is plain SQL over the store's views with its settings in a `params` row at the top, so
`tnstore sql STORE "$(cat queries/ranking.sql)"` runs it as is. From Python: `Store.sql(load("ranking"))`.
"""
from __future__ import annotations

import re
from importlib import resources
from typing import Any

from tnstore.errors import TnstoreError


def names() -> list[str]:
    """Names of the shipped queries (file names without .sql), sorted."""
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".sql"))


def load(name: str) -> str:
    """The text of queries/<name>.sql."""
    if name not in names():
        raise TnstoreError(f"no query named {name!r}; shipped queries: {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.sql").read_text("utf-8")


def with_params(name: str, **values: Any) -> str:
    """queries/<name>.sql with its `params` row replaced by `values` (SQL literals), the settings a caller picks.

    E.g. `with_params("tn_summary", label="family", label_spec="en,nl,it:ja,ko", where_sql="ablation IS NULL",
    split="train")`. Light on purpose (no analysis imports): figures and reports call it."""
    sql = load(name)
    match = re.search(r"\bparams\s+AS\s*\(", sql)
    if match is None:
        raise TnstoreError(f"query {name} has no params row")
    depth, i = 1, match.end()
    while depth:  # the CTE's closing parenthesis, skipping strings and -- comments
        c = sql[i]
        if c == "'":
            i = sql.index("'", i + 1)
        elif sql.startswith("--", i):
            i = sql.index("\n", i)
        elif c in "()":
            depth += 1 if c == "(" else -1
        i += 1
    row = "SELECT " + ", ".join(f"{_literal(v)} AS {k}" for k, v in values.items())
    return sql[:match.end()] + "\n    " + row + "\n" + sql[i - 1:]


def _literal(value: Any) -> str:
    if value is None:
        return "NULL::VARCHAR"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value!r}::DOUBLE"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"

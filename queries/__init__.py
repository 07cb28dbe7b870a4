"""The analysis SQL shipped with tnstore, as readable files users can copy (queries/*.sql in the repo).

Each file is plain SQL over the store's views with its settings in a `params` row at the top, so
`tnstore sql STORE "$(cat queries/ranking.sql)"` runs it as is. From Python: `Store.sql(load("ranking"))`.
"""
from __future__ import annotations

from importlib import resources

from tnstore.errors import TnstoreError


def names() -> list[str]:
    """Names of the shipped queries (file names without .sql), sorted."""
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".sql"))


def load(name: str) -> str:
    """The text of queries/<name>.sql."""
    if name not in names():
        raise TnstoreError(f"no query named {name!r}; shipped queries: {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.sql").read_text("utf-8")

"""Small table helpers shared by the figure functions: any Arrow table or Polars frame in, Polars out, with the
columns a figure treats as optional filled in (no `condition` column means one condition, `none`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from tnstore.errors import TnstoreError
from tnstore.figures.style import PLAIN, condition_order

if TYPE_CHECKING:
    import polars as pl


def frame(table: Any, required: Sequence[str] = (), what: str = "table") -> "pl.DataFrame":
    """`table` (pyarrow Table or polars DataFrame) as Polars, with `condition` = 'none' where it has none.

    A missing required column is a TnstoreError naming it (a table from another tnstore version)."""
    import polars as pl

    df = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    if not isinstance(df, pl.DataFrame):  # a chunked array or series: not a table
        raise TnstoreError(f"{what}: expected a table, got {type(table).__name__}")
    if "condition" not in df.columns:
        df = df.with_columns(pl.lit(PLAIN).alias("condition"))
    else:
        df = df.with_columns(pl.col("condition").fill_null(PLAIN))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TnstoreError(f"{what} lacks column(s) {', '.join(missing)}; it was written by another tnstore version")
    return df


def conditions(df: "pl.DataFrame") -> list[str]:
    return condition_order(df["condition"].to_list())


def values(df: "pl.DataFrame", column: str) -> list:
    """Distinct non-null values of a column, sorted."""
    return sorted(v for v in df[column].unique().to_list() if v is not None)


def single(df: "pl.DataFrame", column: str) -> Any:
    """The column's value when all rows share one (else None)."""
    if column not in df.columns:
        return None
    found = df[column].unique().to_list()
    return found[0] if len(found) == 1 else None


def first_column(df: "pl.DataFrame", *candidates: str) -> str | None:
    """The first of `candidates` the frame has (tables of other engineers name some columns their own way)."""
    return next((c for c in candidates if c in df.columns), None)

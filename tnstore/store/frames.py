"""Tables at the edge: results are held as Arrow and handed to users as Polars frames, on request only (Polars
takes half a second to import, which a CLI command or a small detection should not pay)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    import polars as pl


def to_polars(table: pa.Table) -> "pl.DataFrame":
    import polars as pl

    return pl.from_arrow(table)

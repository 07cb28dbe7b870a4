"""Turn a query result (Arrow) into text for people (table) or programs (csv, json), or a file."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tnstore.errors import TnstoreError


def render(result: pa.Table, fmt: str, max_rows: int = 50) -> str:
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(result, buf)
        return buf.getvalue().decode("utf-8")
    if fmt == "json":
        return "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in result.to_pylist())
    return _table(result, max_rows)


def _table(result: pa.Table, max_rows: int) -> str:
    names = result.column_names
    rows = [[_cell(v) for v in row.values()] for row in result.slice(0, max_rows).to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = lambda cells: "  ".join(c.rjust(w) if _numeric(result, i) else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(names), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if result.num_rows > max_rows:
        out.append(f"... {result.num_rows - max_rows} more rows (use --max-rows, --format csv or --out)")
    out.append(f"({result.num_rows} rows)")
    return "\n".join(out) + "\n"


def _numeric(result: pa.Table, i: int) -> bool:
    t = result.schema.field(i).type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        head = ", ".join(_cell(v) for v in value[:3])
        return f"[{head}{', ...' if len(value) > 3 else ''}] ({len(value)})"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def write_result(result: pa.Table, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise TnstoreError(f"--out {out}: use a .parquet or .csv file name")
    try:
        if suffix == ".parquet":
            pq.write_table(result, out)
        else:
            pacsv.write_csv(result, out)
    except OSError as exc:
        raise TnstoreError(f"--out {out}: cannot write ({exc.strerror or exc})") from None

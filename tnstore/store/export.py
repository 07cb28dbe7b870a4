"""`tnstore export`: a smaller, valid store made of some arrays, rows and tables of another (local or remote).

Rows: `where` (SQL over `sentences`; None = every row) picks sentences; they are renumbered consecutively from 0,
runs in their row order and rows of a run in their order, and each exported run gets a new run_id (a hash of the
source run id and the rows kept) so that capturing the full corpus into the export later is not taken for
"already captured". `exported_rows` records, for every row, the store, run and row it came from.
Arrays: `arrays` (None = all the source has) are copied for those rows, chunk by chunk through the checked reader
(each source chunk verified), written as a capture writes them (same chunk rows), and catalogued.
Tables: `model`, `runs`, `sentences` always (rewritten for the new rows); then `tables` = "all", "none" or a list
of names: analysis tables are copied as they are (they are results of the source store; the export's own
analyses add their own rows), except `latent_pca`, whose per-sentence rows are renumbered and cut to the rows
kept. The model arrays are copied file by file, each checked against the source's catalog.
The result verifies (`tnstore verify`) and analyses like the source for the rows it holds.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tnstore.errors import ArgumentError, DamagedStoreError, SqlError
from tnstore.store.files import fsync_dir, is_remote
from tnstore.store.integrity import MODEL_CATALOG, FileCatalog, FileRecord, digest, seal
from tnstore.store.schema import table_names
from tnstore.store.store import ARRAY_LAYER_AXIS, MAX_JSON_BYTES, Store, _jsonable, open_store

ALWAYS = ("model", "runs", "sentences")
ROW_TABLES = ("latent_pca",)  # analysis tables with one row per stored sentence (`row`): renumbered


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: `out` with `n_rows` rows in `runs` runs, these arrays and tables."""

    out: Path
    n_rows: int
    runs: int
    arrays: tuple[str, ...]
    tables: tuple[str, ...]
    bytes: int
    seconds: float

    def describe(self) -> str:
        return (f"exported {self.n_rows} rows of {self.runs} runs (arrays {', '.join(self.arrays) or 'none'}; "
                f"tables {', '.join(self.tables)}) into {self.out}: {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s")


def export(store: "str | Path | Store", out: str | Path, arrays: Sequence[str] | None = None,
           where: str | None = None, tables: str | Sequence[str] = "all",
           storage_options: Mapping[str, Any] | None = None) -> ExportResult:
    """Write a new store at `out` holding `arrays` of the rows `where` selects and `tables` (see module doc)."""
    t0 = time.perf_counter()
    source = store if isinstance(store, Store) else open_store(store, mode="r", storage_options=storage_options)
    if is_remote(out):
        raise ArgumentError("out", "{arg} must be a local folder (a remote store is read-only)")
    out = Path(out).absolute()
    if out.exists() and any(out.iterdir()):
        raise ArgumentError("out", f"{{arg}} {out} exists and is not empty; choose a new folder")
    segments = source.segments()
    held = _arrays_held(source)
    chosen = tuple(held if arrays is None else _checked_arrays(arrays, held))
    copied = _checked_tables(tables)
    kept = _kept_rows(source, where)

    facts = dict(source.model_facts)
    target = Store.create(out, facts)
    target.manifest["exported_from"] = {"store": source.label, "where": where, "arrays": list(chosen),
                                        "at": datetime.now(timezone.utc).isoformat()}
    target.files.write_atomic("tnstore.json", seal(target.manifest))
    now = datetime.now(timezone.utc)
    runs = source.read_table("runs").to_pylist()
    by_id = {r["run_id"]: r for r in runs}
    sentences = source.read_table("sentences")
    row_map: dict[int, int] = {}
    next_row = 0
    n_runs = 0
    with target.writing("export"):
        if segments:
            _copy_model_arrays(source, target)
        for seg in segments:
            rows = kept[(kept >= seg.row_start) & (kept < seg.row_end)]
            if not len(rows):
                continue
            n_runs += 1
            run = by_id[seg.run_id]
            new_id = hashlib.sha256(f"{seg.run_id}|export|{digest(rows.tobytes())}".encode()).hexdigest()[:16]
            start = next_row
            next_row += len(rows)
            row_map.update(zip(rows.tolist(), range(start, next_row)))
            _copy_segment(source, target, seg, new_id, rows, chosen)
            mine = sentences.filter(pc.is_in(sentences["row"], pa.array(rows)))
            order = np.argsort(mine["row"].to_numpy())
            mine = mine.take(pa.array(order))
            mine = mine.set_column(mine.schema.get_field_index("row"), "row",
                                   pa.array(np.arange(start, next_row, dtype=np.int64)))
            mine = mine.set_column(mine.schema.get_field_index("run_id"), "run_id", pa.array([new_id] * len(rows)))
            target.write_rows("sentences", mine)
            target.write_rows("exported_rows", pa.table({
                "run_id": [new_id] * len(rows), "row": np.arange(start, next_row, dtype=np.int64),
                "source_store": [source.label] * len(rows), "source_run_id": [seg.run_id] * len(rows),
                "source_row": rows.astype(np.int64), "exported_at": [now] * len(rows)}))
            target.write_rows("runs", pa.Table.from_pylist([{
                **run, "run_id": new_id, "row_start": start, "row_end": next_row, "n_sentences": len(rows),
                "limit_rows": run.get("limit_rows") if len(rows) == seg.row_end - seg.row_start else None}]))
        for table in copied:
            data = source.read_table(table)
            if not data.num_rows:
                continue
            if table in ROW_TABLES:
                data = _renumbered(data, row_map)
                if not data.num_rows:
                    continue
            target.write_rows(table, data)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportResult(out, next_row, n_runs, chosen, ALWAYS + ("exported_rows",) + tuple(copied), size,
                        time.perf_counter() - t0)


def _arrays_held(store: Store) -> list[str]:
    segments = store.segments()
    if not segments:
        return []
    names = {k.split("/", 1)[0] for k in segments[0].catalog().files if "/" in k}
    return [name for name in ARRAY_LAYER_AXIS if name in names]


def _checked_arrays(arrays: Sequence[str], held: list[str]) -> list[str]:
    if isinstance(arrays, str):
        raise ArgumentError("arrays", "{arg} must be a list of array names")
    unknown = [a for a in arrays if a not in ARRAY_LAYER_AXIS]
    if unknown:
        raise ArgumentError("arrays", f"{{arg}} {', '.join(unknown)}: not an array (arrays: "
                                      f"{', '.join(ARRAY_LAYER_AXIS)})")
    absent = [a for a in arrays if a not in held]
    if absent:
        raise ArgumentError("arrays", f"{{arg}} {', '.join(absent)}: the store holds {', '.join(held) or 'none'}")
    return [a for a in ARRAY_LAYER_AXIS if a in arrays]


def _checked_tables(tables: str | Sequence[str]) -> list[str]:
    optional = [t for t in table_names() if t not in ALWAYS and t != "exported_rows"]
    if tables == "all":
        return optional
    if tables == "none":
        return []
    names = [t for t in ([tables] if isinstance(tables, str) else tables)]
    unknown = [t for t in names if t not in table_names()]
    if unknown:
        raise ArgumentError("tables", f"{{arg}} {', '.join(unknown)}: not a table (all, none, or some of "
                                      f"{', '.join(optional)})")
    return [t for t in optional if t in names]


def _kept_rows(store: Store, where: str | None) -> np.ndarray:
    if where is None:
        rows = store.read_table("sentences", ["row"])["row"].to_numpy()
    else:
        if not where.strip():
            raise ArgumentError("where", "{arg} is empty; give a SQL predicate over sentences, or leave it out")
        try:
            rows = store.query(f"SELECT row FROM sentences WHERE ({where})")["row"].to_numpy()
        except SqlError as exc:
            raise ArgumentError("where", f"{{arg}} {where!r} is not valid SQL over the sentences table: "
                                         f"{exc.reason}") from None
    rows = np.unique(rows.astype(np.int64))
    if not len(rows):
        raise ArgumentError("where", f"{{arg}} {where!r} selects no sentences; loosen it")
    return rows


def _copy_segment(source: Store, target: Store, seg, run_id: str, rows: np.ndarray, arrays: Sequence[str]) -> None:
    """The chosen arrays of `rows` (store rows of segment `seg`) into a new segment of `target`."""
    readers = {name: seg.reader(name) for name in arrays}
    if not readers:
        target.create_segment(run_id, len(rows), {}, {}, 1)
        return
    chunk_rows = next(iter(readers.values())).chunks[0]
    writer = target.create_segment(run_id, len(rows), {n: r.shape[1:] for n, r in readers.items()},
                                   {n: str(r.dtype) for n, r in readers.items()}, chunk_rows)
    for name in arrays:
        for positions, block in source.iter_rows(name, rows, None, max_rows=chunk_rows, dtype=None):
            writer[name][int(positions[0]) : int(positions[-1]) + 1] = block


def _copy_model_arrays(source: Store, target: Store) -> None:
    """The model arrays' files, each checked against the source's model catalog, then the catalog, then the
    rename (as Store.write_model_arrays commits)."""
    payload = source.files.read(MODEL_CATALOG, MAX_JSON_BYTES)
    if payload is None:
        raise DamagedStoreError(f"{source.files.where(MODEL_CATALOG)} is missing", source.label)
    catalog = FileCatalog.parse(payload, source.files.where(MODEL_CATALOG))
    final = target.files.path("model/weights.zarr")
    tmp = final.with_name(f".weights.zarr.tmp-{uuid.uuid4().hex}")
    keys = sorted(catalog.files)
    for start in range(0, len(keys), 16):
        batch = keys[start:start + 16]
        datas = source.files.read_many([f"model/weights.zarr/{k}" for k in batch],
                                       max(catalog.files[k].size for k in batch))
        for key, data in zip(batch, datas):
            record = catalog.files[key]
            if data is None or FileRecord.of(data) != FileRecord(record.size, record.xxh3):
                raise DamagedStoreError(f"{source.files.where('model/weights.zarr/' + key)} does not match the "
                                        "model catalog", source.label)
            path = tmp / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    for folder in sorted({(tmp / k).parent for k in keys} | {tmp}, key=lambda p: -len(p.parts)):
        fsync_dir(folder)
    target.files.write_atomic(MODEL_CATALOG, FileCatalog(catalog.files, _jsonable(catalog.info)).dump())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _renumbered(data: pa.Table, row_map: dict[int, int]) -> pa.Table:
    old = data["row"].to_numpy()
    keep = np.array([r in row_map for r in old.tolist()], dtype=bool)
    data = data.filter(pa.array(keep))
    new = np.array([row_map[r] for r in old[keep].tolist()], dtype=np.int64)
    return data.set_column(data.schema.get_field_index("row"), "row", pa.array(new))

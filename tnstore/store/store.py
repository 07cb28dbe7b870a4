"""The one layer that reads and writes a store directory (layout: `schemas/store-v1.json`).

Tables are Parquet parts replaced atomically; tensors are Zarr groups, one segment per capture run, so
appending a run never rewrites bytes an earlier run wrote, and a half-finished run is invisible to readers
(its sentences only appear when its parts are written at the end).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import BloscCodec

from tnstore.errors import TnstoreError
from tnstore.store.chunks import ChunkReader
from tnstore.store.f16 import widen_f16
from tnstore.store.lock import writer_lock
from tnstore.store.schema import FORMAT_VERSION, arrow_schema, conform, load_schema, table_names

MANIFEST = "tnstore.json"
_PART_KEY = re.compile(r"^[A-Za-z0-9_.=-]+$")
# LZ4 with byte shuffle: zstd saves only a few percent more on activations and halves write speed.
COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


@dataclass
class Segment:
    """The Zarr group of one capture run, holding rows `row_start .. row_end - 1` of every per-sentence array."""

    run_id: str
    row_start: int
    row_end: int
    path: Path
    _group: zarr.Group | None = None
    _readers: dict = field(default_factory=dict)

    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            self._group = zarr.open_group(str(self.path), mode="r")
        return self._group

    def array(self, name: str) -> zarr.Array:
        return self.group[name]

    def reader(self, name: str) -> "ChunkReader | zarr.Array":
        """What reads array `name` fastest: a ChunkReader for the store's own layout, else the Zarr array."""
        if name not in self._readers:
            self._readers[name] = ChunkReader.open(self.path / name) or self.array(name)
        return self._readers[name]


class Store:
    """A tnstore directory. Open with `Store.open` (existing) or `Store.create` (new)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self._segments: list[Segment] | None = None
        self._model_readers: dict[str, ChunkReader | zarr.Array] = {}  # written once per store, never replaced

    # ---------------------------------------------------------------- opening
    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        """Open an existing store and check its format version against `schemas/`."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            what = "does not exist" if not path.exists() else "is not a tnstore store (no tnstore.json)"
            raise TnstoreError(f"store {path} {what}; create one with `tnstore capture --store {path} ...`")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise TnstoreError(f"store {path}: cannot read {MANIFEST} ({exc}); the store is damaged") from None
        if manifest.get("format") != "tnstore":
            raise TnstoreError(f"store {path}: {MANIFEST} is not a tnstore manifest")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise TnstoreError(
                f"store {path} has format version {version}, this tnstore reads version {FORMAT_VERSION}; "
                "use a tnstore release that matches the store"
            )
        return cls(path, manifest)

    @classmethod
    def create(cls, path: str | Path, model_facts: dict[str, Any]) -> "Store":
        """Create an empty store for one model. The manifest is written last, so a crash leaves no store."""
        path = Path(path)
        if cls.exists(path):
            raise TnstoreError(f"store {path} already exists")
        # Leftovers of a create that crashed before its manifest (empty skeleton folders) do not count.
        skeleton = {"segments", "journal", "tables", "model", "LOCK"}
        if path.exists() and any(p.name not in skeleton for p in path.iterdir()):
            raise TnstoreError(f"{path} exists and is not an empty directory; choose a new --store path")
        try:
            path.mkdir(parents=True, exist_ok=True)
            for sub in ("segments", "journal", "tables", "model"):
                (path / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise TnstoreError(f"cannot create store at {path}: {exc.strerror}; choose a writable --store path") from None
        manifest = {
            "format": "tnstore",
            "format_version": FORMAT_VERSION,
            "created_at": _now().isoformat(),
            "model": _jsonable(model_facts),
        }
        store = cls(path, manifest)
        store.write_part("model", "model", pa.Table.from_pylist([{**model_facts, "created_at": _now()}]))
        _atomic_write_bytes(path / MANIFEST, json.dumps(manifest, indent=2).encode())
        return store

    @contextmanager
    def writing(self, purpose: str, wait_seconds: float = 0.0) -> Iterator["Store"]:
        """Exclusive writer access for the duration of the block."""
        if not os.access(self.path, os.W_OK):
            raise TnstoreError(f"store {self.path} is read-only; copy it somewhere writable first")
        with writer_lock(self.path / "LOCK", purpose, wait_seconds):
            self._segments = None
            yield self

    @property
    def model_facts(self) -> dict[str, Any]:
        return self.manifest["model"]

    # ---------------------------------------------------------------- tables
    def _table_dir(self, table: str) -> Path:
        return self.path / "tables" / table

    def part_files(self, table: str) -> list[Path]:
        arrow_schema(table)  # validates the name
        folder = self._table_dir(table)
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if table == "sentences":
            # A run's sentences count only once its runs row exists (written last), so a crash between the two
            # writes never shows rows whose tensors are not all there.
            finished = {p.stem for p in self.part_files("runs")}
            files = [f for f in files if f.stem in finished]
        return files

    def write_part(self, table: str, part_key: str, data: pa.Table) -> Path:
        """Write (or atomically replace) one part of a table, cast to the table's schema."""
        if not _PART_KEY.match(part_key):
            raise ValueError(f"part key {part_key!r} has characters that do not belong in a file name")
        data = conform(table, data)
        folder = self._table_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{part_key}.parquet"
        tmp = folder / f".{part_key}.parquet.tmp-{uuid.uuid4().hex}"
        pq.write_table(data, tmp, compression="zstd")
        _fsync_file(tmp)
        os.replace(tmp, target)
        return target

    def delete_part(self, table: str, part_key: str) -> None:
        (self._table_dir(table) / f"{part_key}.parquet").unlink(missing_ok=True)

    def read_table(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The union of a table's parts (an empty table with the schema's columns if it has none)."""
        schema = arrow_schema(table)
        files = self.part_files(table)
        if not files:
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        # ParquetFile reads a file without pyarrow.dataset, whose first import costs more than a small table.
        parts = [pq.ParquetFile(f).read(columns=list(columns) if columns else None) for f in files]
        return pa.concat_tables(parts, promote_options="default")

    def connect(self, tables: Sequence[str] | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with every store table (or only `tables`) as a view of the same name."""
        con = duckdb.connect()
        for table in table_names() if tables is None else tables:
            files = self.part_files(table)
            if files:
                listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
            else:
                con.register(f"_empty_{table}", arrow_schema(table).empty_table())
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM _empty_{table}")
        return con

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run SQL against the store's tables and return the result as Arrow."""
        con = self.connect()
        try:
            relation = con.sql(query, params=list(params) if params else None)
            if relation is None:  # a statement without a result
                return pa.table({})
            # DuckDB 2 renamed the relation's arrow() to to_arrow_table().
            return (getattr(relation, "to_arrow_table", None) or relation.arrow)()
        except duckdb.Error as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise TnstoreError(f"SQL failed: {first_line}") from None
        finally:
            con.close()

    # ---------------------------------------------------------------- tensors
    def segments(self) -> list[Segment]:
        """Segments of finished runs, in row order."""
        if self._segments is None:
            runs = self.read_table("runs", ["run_id", "row_start", "row_end"]).to_pylist()
            runs.sort(key=lambda r: r["row_start"])
            self._segments = [
                Segment(r["run_id"], r["row_start"], r["row_end"], self.path / "segments" / f"{r['run_id']}.zarr")
                for r in runs
            ]
        return self._segments

    def open_segment_group(self, run_id: str, mode: str = "r") -> zarr.Group:
        return zarr.open_group(str(self.path / "segments" / f"{run_id}.zarr"), mode=mode)

    def create_segment(
        self, run_id: str, n_rows: int, row_shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], chunk_rows: int
    ) -> zarr.Group:
        """Create (or re-open, on resume) the Zarr group for one run: array `name` has shape (n_rows, *row_shapes[name]).

        Chunks hold `chunk_rows` rows of one layer, so a kernel streaming one layer reads only that layer.
        """
        path = self.path / "segments" / f"{run_id}.zarr"
        group = zarr.open_group(str(path), mode="a")
        for name, shape in row_shapes.items():
            if name in group:
                continue
            chunks = (chunk_rows,) + tuple(1 if i < len(shape) - 1 else s for i, s in enumerate(shape))
            group.create_array(
                name, shape=(n_rows,) + tuple(shape), chunks=chunks, dtype=dtypes[name],
                compressors=[COMPRESSOR], fill_value=0,
            )
        return group

    def remove_segment(self, run_id: str) -> None:
        shutil.rmtree(self.path / "segments" / f"{run_id}.zarr", ignore_errors=True)

    def n_rows(self) -> int:
        segs = self.segments()
        return segs[-1].row_end if segs else 0

    def iter_rows(
        self, name: str, rows: np.ndarray, layer: int | slice | None = None, max_rows: int = 512,
        dtype: type | None = np.float32,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream `array[rows, layer]` in blocks of at most `max_rows` rows, as `dtype` (None: as stored).

        Yields `(positions, block)`: `positions` index into `rows`, `block` has shape (len(positions), *rest).
        Each read covers whole chunks of one segment, so memory stays bounded by `max_rows` rows of one layer.
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        for seg in self.segments():
            lo, hi = np.searchsorted(sorted_rows, [seg.row_start, seg.row_end])
            if lo == hi:
                continue
            reader = seg.reader(name)
            chunk = reader.chunks[0]
            local = sorted_rows[lo:hi] - seg.row_start
            start = lo
            while start < hi:
                first = local[start - lo]
                span_end = first + max(chunk, (max_rows // chunk) * chunk)
                stop = lo + int(np.searchsorted(local, span_end))
                want = local[start - lo : stop - lo]
                a, b = int(want[0]), int(want[-1]) + 1
                slab = _read_span(reader, a, b, layer)
                # A run of consecutive rows needs no gather copy (the common case: whole chunks).
                picked = slab if len(want) == b - a else slab[want - a]
                yield order[start:stop], as_dtype(picked, dtype)
                start = stop

    def read_rows(self, name: str, rows: np.ndarray, layer: int | slice | None = None) -> np.ndarray:
        """`array[rows, layer]` as one float32 array, in the order of `rows` (for small selections)."""
        rows = np.asarray(rows, dtype=np.int64)
        out: np.ndarray | None = None
        for positions, block in self.iter_rows(name, rows, layer):
            if out is None:
                out = np.empty((len(rows),) + block.shape[1:], dtype=np.float32)
            out[positions] = block
        if out is None:
            raise TnstoreError(f"no captured rows selected from array {name}")
        return out

    def model_array(self, name: str) -> zarr.Array:
        return zarr.open_group(str(self.path / "model" / "weights.zarr"), mode="r")[name]

    def read_model_array(self, name: str, layers: slice, dtype: type | None = np.float32,
                         out: np.ndarray | None = None) -> np.ndarray:
        """`model_array(name)[layers]` as `dtype` (None: as stored), read chunk by chunk where the layout allows.

        With dtype None, `out` (C-contiguous, the stored dtype) may be given to read into (no fresh pages).
        """
        reader = self._model_reader(name)
        start, stop, _ = layers.indices(reader.shape[0])
        stop = max(start, stop)
        if out is not None and dtype is None and isinstance(reader, ChunkReader):
            return reader.read(start, stop, None, out=out)
        values = as_dtype(_read_span(reader, start, stop, None), dtype)
        if out is not None:
            out[...] = values
            return out
        return values

    def model_array_dtype(self, name: str) -> np.dtype:
        """The stored dtype of a per-model array."""
        return np.dtype(self._model_reader(name).dtype)

    def _model_reader(self, name: str) -> "ChunkReader | zarr.Array":
        """What reads per-model array `name`: a ChunkReader for the store's own layout, else the Zarr array."""
        if name not in self._model_readers:
            self._model_readers[name] = (ChunkReader.open(self.path / "model" / "weights.zarr" / name)
                                         or self.model_array(name))
        return self._model_readers[name]

    def write_model_arrays(self, arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
        """Write the per-model arrays once; written to a temp folder and renamed so they appear whole."""
        final = self.path / "model" / "weights.zarr"
        if final.exists():
            return
        tmp = self.path / "model" / f".weights.zarr.tmp-{uuid.uuid4().hex}"
        group = zarr.open_group(str(tmp), mode="w")
        for name, value in arrays.items():
            chunks = (1,) + value.shape[1:]
            arr = group.create_array(name, shape=value.shape, chunks=chunks, dtype=dtypes[name], compressors=[COMPRESSOR])
            arr[...] = value.astype(dtypes[name])
        os.replace(tmp, final)

    # ---------------------------------------------------------------- journal (unfinished runs)
    def journal_path(self, run_id: str) -> Path:
        return self.path / "journal" / f"{run_id}.json"

    def read_journal(self, run_id: str) -> dict[str, Any] | None:
        path = self.journal_path(run_id)
        return json.loads(path.read_text("utf-8")) if path.exists() else None

    def write_journal(self, run_id: str, entry: dict[str, Any]) -> None:
        _atomic_write_bytes(self.journal_path(run_id), json.dumps(_jsonable(entry)).encode())

    def pending_journals(self) -> list[dict[str, Any]]:
        folder = self.path / "journal"
        return [json.loads(p.read_text("utf-8")) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def drop_journal(self, run_id: str) -> None:
        self.journal_path(run_id).unlink(missing_ok=True)


def _read_span(reader: "ChunkReader | zarr.Array", a: int, b: int, second: int | slice | None) -> np.ndarray:
    """reader[a:b] or reader[a:b, second], through either kind of reader."""
    if isinstance(reader, ChunkReader):
        return reader.read(a, b, second)
    return reader[a:b] if second is None else reader[a:b, second]


def as_dtype(values: np.ndarray, dtype: type | None) -> np.ndarray:
    """values as `dtype` (None: unchanged); float16 -> float32 goes through the fast exact widening."""
    if dtype is None or values.dtype == dtype:
        return values
    if values.dtype == np.float16 and np.dtype(dtype) == np.float32:
        return widen_f16(values)
    return values.astype(dtype)


def schema_doc() -> dict[str, Any]:
    """The parsed schema file of this tnstore's format version."""
    return load_schema()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

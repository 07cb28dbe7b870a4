"""The one layer that reads and writes a store directory (layout: `schemas/store-v2.json`).

Tables are Parquet parts, one per value of the table's declared key, replaced atomically; tensors are Zarr
groups, one segment per capture run, so appending a run never rewrites bytes an earlier run wrote, and a
half-finished run is invisible to readers (its sentences only appear when its `runs` row is written, last).

A `Store` opened with mode "r" refuses every write (checked on each one, as zarr-python does); mode "a" (the
default) writes where the filesystem allows, one writer at a time (`writing`).
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tnstore.compute.f16 import widen_f16
from tnstore.errors import ArgumentError, ReadOnlyError, TnstoreError
from tnstore.store.chunks import ChunkReader
from tnstore.store.frames import to_polars
from tnstore.store.lock import writer_lock
from tnstore.store.schema import FORMAT_VERSION, arrow_schema, conform, part_name, table_names, table_spec

if TYPE_CHECKING:
    import duckdb
    import zarr

    from tnstore.store.relation import Relation
    from tnstore.store.selection import Selection

MANIFEST = "tnstore.json"
MODES = ("r", "a")
# Every per-sentence array: its axis after the row axis (None: the array has no layer axis).
ARRAY_LAYER_AXIS = {"hidden": "hidden_index", "final_raw": None, "resid_pre_mlp": "layer", "mlp_act": "layer",
                    "mlp_out": "layer", "mlp_out_scale": "layer"}


def compressor():
    """LZ4 with byte shuffle: zstd saves only a few percent more on activations and halves write speed."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


@dataclass
class Segment:
    """The Zarr group of one capture run, holding rows `row_start .. row_end - 1` of every per-sentence array."""

    run_id: str
    row_start: int
    row_end: int
    path: Path
    _readers: dict = field(default_factory=dict)

    def reader(self, name: str) -> "ChunkReader | zarr.Array":
        """What reads array `name` fastest: a ChunkReader for the store's own layout, else the Zarr array."""
        if name not in self._readers:
            reader = ChunkReader.open(self.path / name)
            if reader is None:
                import zarr

                reader = zarr.open_group(str(self.path), mode="r")[name]
            self._readers[name] = reader
        return self._readers[name]


@dataclass(frozen=True)
class StoreInfo:
    """What `tnstore info` prints, as data. Tables are Arrow; `sentences_frame()` etc. hand out Polars."""

    path: str
    format_version: int
    created_at: str
    model: dict[str, Any]
    n_rows: int
    runs: pa.Table  # one row per finished run
    sentences: pa.Table  # lang, split, kind, ablation, sentences, mean_tokens
    tables: dict[str, int]  # rows per table
    arrays: dict[str, dict[str, Any]]  # name -> shape (per sentence), dtype, chunks (first run's layout)
    pending: list[dict[str, Any]]  # journals of unfinished runs

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format_version": self.format_version, "created_at": self.created_at,
                "model": self.model, "n_rows": self.n_rows, "runs": self.runs.to_pylist(),
                "sentences": self.sentences.to_pylist(), "tables": self.tables, "arrays": self.arrays,
                "pending": self.pending}


@dataclass(frozen=True)
class States:
    """Stored states of a selection: `values` (n, len(layers), width) float32, or (n, width) for an array without
    a layer axis; `rows` the sentences they belong to, in the same order (Arrow: row, lang, split, kind, pair_id,
    ablation); `layers` the indices read along the array's second axis (hidden: hidden_index; the others: the
    0-based decoder layer). Unpacks as `values, rows = store.states(...)`."""

    array: str
    values: np.ndarray
    rows: pa.Table
    layers: list[int] | None

    def __iter__(self):
        return iter((self.values, self.rows))

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def rows_frame(self):
        """The rows as a polars DataFrame."""
        return to_polars(self.rows)


class Store:
    """A tnstore directory. `tnstore.open(path)` opens an existing one; `Store.create` makes a new one."""

    def __init__(self, path: Path, manifest: dict[str, Any], mode: str = "a"):
        self.path = path
        self.manifest = manifest
        self.mode = mode
        self._segments: list[Segment] | None = None
        self._segments_stamp = -1
        self._model_readers: dict[str, ChunkReader | zarr.Array] = {}  # written once per store, never replaced
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self._view_stamps: dict[str, int] = {}  # table -> mtime_ns of its folder when its view was made
        self._writing = False

    # ---------------------------------------------------------------- opening
    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def open(cls, path: str | Path, mode: str = "a") -> "Store":
        """Open an existing store and check its format version against `schemas/`.

        mode "r": read-only, every write refused; "a": read and write (one writer at a time).
        """
        if mode not in MODES:
            raise ArgumentError("mode", f"{{arg}} {mode!r} is not one of {', '.join(MODES)}")
        path = Path(path).absolute()  # a notebook may change its working directory later
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            what = "does not exist" if not path.exists() else "is not a tnstore store (no tnstore.json)"
            raise TnstoreError(f"store {path} {what}; create one with `tnstore capture --store {path} ...`")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise TnstoreError(f"store {path}: cannot read {MANIFEST} ({exc}); the store is damaged") from None
        if not isinstance(manifest, dict) or manifest.get("format") != "tnstore":
            raise TnstoreError(f"store {path}: {MANIFEST} is not a tnstore manifest")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise TnstoreError(
                f"store {path} has format version {version}, this tnstore reads version {FORMAT_VERSION}; "
                + ("capture it again with this tnstore (its commands are in the store's runs table), or use "
                   "tnstore 0.1 to read it" if isinstance(version, int) and version < FORMAT_VERSION
                   else "use a tnstore release that matches the store"))
        return cls(path, manifest, mode)

    @classmethod
    def create(cls, path: str | Path, model_facts: dict[str, Any]) -> "Store":
        """Create an empty store for one model. The manifest is written last, so a crash leaves no store."""
        path = Path(path).absolute()
        if cls.exists(path):
            raise TnstoreError(f"store {path} already exists")
        # Leftovers of a create that crashed before its manifest (empty skeleton folders) do not count.
        skeleton = {"segments", "journal", "tables", "model", "LOCK"}
        if path.exists() and any(p.name not in skeleton for p in path.iterdir()):
            raise TnstoreError(f"{path} exists and is not an empty directory; choose a new store path")
        try:
            path.mkdir(parents=True, exist_ok=True)
            for sub in ("segments", "journal", "tables", "model"):
                (path / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise TnstoreError(f"cannot create store at {path}: {exc.strerror}; choose a writable store path") from None
        manifest = {
            "format": "tnstore",
            "format_version": FORMAT_VERSION,
            "created_at": _now().isoformat(),
            "model": _jsonable(model_facts),
        }
        store = cls(path, manifest)
        with store.writing("create"):
            store.write_rows("model", pa.Table.from_pylist([{**model_facts, "created_at": _now()}]))
        _atomic_write_bytes(path / MANIFEST, json.dumps(manifest, indent=2).encode())
        return store

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ReadOnlyError(f"store {self.path} is open read-only; open it with mode 'a' to write results")

    @contextmanager
    def writing(self, purpose: str, wait_seconds: float = 0.0) -> Iterator["Store"]:
        """Exclusive writer access for the duration of the block (re-entrant within one Store)."""
        self._check_writable()
        if self._writing:
            yield self
            return
        if not os.access(self.path, os.W_OK):
            raise ReadOnlyError(f"store {self.path} is read-only; copy it somewhere writable first")
        with writer_lock(self.path / "LOCK", purpose, wait_seconds):
            self._segments = None
            self._writing = True
            try:
                yield self
            finally:
                self._writing = False

    @property
    def model_facts(self) -> dict[str, Any]:
        return self.manifest["model"]

    # ---------------------------------------------------------------- tables
    def _table_dir(self, table: str) -> Path:
        return self.path / "tables" / table

    def part_files(self, table: str) -> list[Path]:
        """The Parquet files of a table, sorted; a run's sentences only once its `runs` row exists."""
        arrow_schema(table)  # validates the name
        folder = self._table_dir(table)
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if table == "sentences":
            # A run's sentences count only once its runs row exists (written last), so a crash between the two
            # writes never shows rows whose tensors are not all there. Both parts are named by the run id.
            finished = {p.stem for p in self.part_files("runs")}
            files = [f for f in files if f.stem in finished]
        return files

    def write_rows(self, table: str, data: pa.Table) -> list[str]:
        """Write rows into `table`, one part per value of the table's declared key (`schemas/`).

        Each part replaces the stored part of its key value whole, except in tables that declare `merge_on`:
        there the stored rows whose merge_on values `data` does not carry stay. Returns the part names written.
        Must run inside `writing()`.
        """
        self._check_writable()
        if not self._writing:
            raise RuntimeError(f"write to table {table} outside Store.writing()")
        spec = table_spec(table)
        written = []
        for key_values, rows in _split_by_key(data, spec.key):
            name = part_name(table, key_values)
            rows = conform(table, rows)
            if spec.merge_on:
                rows = _merged(rows, self._read_part(table, name), spec.merge_on)
            self._write_part_file(table, name, rows)
            written.append(name)
        self._refresh_view(table)
        return written

    def _read_part(self, table: str, name: str) -> pa.Table | None:
        path = self._table_dir(table) / f"{name}.parquet"
        return conform(table, pq.ParquetFile(path).read()) if path.is_file() else None

    def _write_part_file(self, table: str, name: str, data: pa.Table) -> None:
        folder = self._table_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.parquet.tmp-{uuid.uuid4().hex}"
        pq.write_table(data, tmp, compression="zstd")
        _fsync_file(tmp)
        os.replace(tmp, folder / f"{name}.parquet")

    def read_table(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The union of a table's parts as Arrow (an empty table with the schema's columns if it has none)."""
        schema = arrow_schema(table)
        files = self.part_files(table)
        if not files:
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        # ParquetFile reads a file without pyarrow.dataset, whose first import costs more than a small table.
        parts = [pq.ParquetFile(f).read(columns=list(columns) if columns else None) for f in files]
        return pa.concat_tables(parts, promote_options="default")

    # ---------------------------------------------------------------- SQL
    @property
    def connection(self) -> "duckdb.DuckDBPyConnection":
        """This store's DuckDB connection: every table a view of the same name, made once and remade only for
        tables whose parts changed since (by this or any other writer: a part write renames a file into the
        table's folder, which moves the folder's mtime; checking costs one stat per table)."""
        with self._con_lock:
            if self._con is None:
                import duckdb

                from tnstore.compute.parallel import workers

                self._con = duckdb.connect(config={"threads": workers()})
                self._view_stamps = {}
            for table in table_names():
                if self._view_stamps.get(table) != self._stamp(table):
                    self._create_view(self._con, table)
            return self._con

    def _stamp(self, table: str) -> int:
        """When a table's part listing last changed (-1: no folder yet); sentences also follow runs."""
        def mtime(name: str) -> int:
            try:
                return os.stat(self._table_dir(name)).st_mtime_ns
            except FileNotFoundError:
                return -1
        return mtime(table) if table != "sentences" else hash((mtime("sentences"), mtime("runs")))

    def _create_view(self, con: "duckdb.DuckDBPyConnection", table: str) -> None:
        self._view_stamps[table] = self._stamp(table)
        files = self.part_files(table)
        if files:
            listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
        else:
            con.register(f"_empty_{table}", arrow_schema(table).empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _empty_{table}")

    def _refresh_view(self, table: str) -> None:
        if self._con is not None:
            with self._con_lock:
                self._create_view(self._con, table)
                if table == "runs":  # sentences become visible with their runs row
                    self._create_view(self._con, "sentences")
        if table == "runs":
            self._segments = None

    def refresh(self) -> None:
        """Forget cached listings of runs and parts (views are also remade on their own when parts change)."""
        self._segments = None
        self._view_stamps = {}

    def sql(self, query: str, params: Sequence[Any] | None = None,
            tables: Mapping[str, pa.Table] | None = None) -> "Relation | None":
        """Run SQL against the store's tables (each a view of the same name); a lazy `Relation` (None for a
        statement without a result). `params` fill `?` placeholders; `tables` are extra Arrow tables visible by
        name to this query only. Errors raise SqlError."""
        from tnstore.store.relation import Relation, translate

        import duckdb

        con = self.connection
        if tables:
            con = con.cursor()  # registrations stay on this cursor; the store's views are shared
            for name, value in tables.items():
                con.register(name, value)
        try:
            relation = con.sql(query, params=list(params) if params else None)
        except duckdb.Error as exc:
            raise translate(exc) from None
        return None if relation is None else Relation(relation)

    def query(self, query: str, params: Sequence[Any] | None = None,
              tables: Mapping[str, pa.Table] | None = None) -> pa.Table:
        """`sql(...)` run at once, as Arrow (an empty table for a statement without a result)."""
        relation = self.sql(query, params, tables)
        return pa.table({}) if relation is None else relation.arrow()

    def table(self, name: str) -> "Relation":
        """A lazy relation over one store table, e.g. `store.table("sentences").filter("split = 'test'").pl()`."""
        arrow_schema(name)
        return self.sql(f"SELECT * FROM {name}")

    def close(self) -> None:
        """Close the DuckDB connection (a later query opens a new one)."""
        with self._con_lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        facts = self.model_facts
        return f"<tnstore.Store {self.path} mode={self.mode!r} model={facts.get('model_spec')!r} rows={self.n_rows()}>"

    # ---------------------------------------------------------------- description
    def info(self) -> StoreInfo:
        """What the store holds: model, runs, sentences per language/split/kind/ablation, tables, arrays."""
        counts = self.query(
            "SELECT lang, split, kind, ablation, count(*) AS sentences, avg(n_tokens) AS mean_tokens "
            "FROM sentences GROUP BY ALL ORDER BY split, kind, ablation NULLS FIRST, lang")
        runs = self.query("SELECT run_id, split, kind, n_sentences, row_start, row_end, ablation, ablation_scope, "
                          "command, finished_at FROM runs ORDER BY row_start")
        tables = {table: sum(pq.ParquetFile(f).metadata.num_rows for f in self.part_files(table))
                  for table in table_names()}
        return StoreInfo(str(self.path), int(self.manifest["format_version"]), str(self.manifest["created_at"]),
                         dict(self.model_facts), self.n_rows(), runs, counts, tables, self.array_layouts(),
                         self.pending_journals())

    def array_layouts(self) -> dict[str, dict[str, Any]]:
        """Per-sentence arrays of the first run: shape of one sentence's slice, dtype, chunk shape."""
        segments = self.segments()
        if not segments:
            return {}
        out = {}
        for name in ARRAY_LAYER_AXIS:
            meta_path = segments[0].path / name / "zarr.json"
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text("utf-8"))
                out[name] = {"shape": tuple(meta["shape"][1:]), "dtype": meta["data_type"],
                             "chunks": tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])}
        return out

    # ---------------------------------------------------------------- tensors
    def segments(self) -> list[Segment]:
        """Segments of finished runs, in row order (re-listed when a run was added since)."""
        stamp = self._stamp("runs")
        if self._segments is None or self._segments_stamp != stamp:
            self._segments_stamp = stamp
            runs = self.read_table("runs", ["run_id", "row_start", "row_end"]).to_pylist()
            runs.sort(key=lambda r: r["row_start"])
            self._segments = [
                Segment(r["run_id"], r["row_start"], r["row_end"], self.path / "segments" / f"{r['run_id']}.zarr")
                for r in runs
            ]
        return self._segments

    def create_segment(
        self, run_id: str, n_rows: int, row_shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], chunk_rows: int
    ) -> "zarr.Group":
        """Create (or re-open, on resume) the Zarr group for one run: array `name` has shape (n_rows, *row_shapes[name]).

        Chunks hold `chunk_rows` rows of one layer, so a kernel streaming one layer reads only that layer.
        """
        import zarr

        self._check_writable()
        path = self.path / "segments" / f"{run_id}.zarr"
        group = zarr.open_group(str(path), mode="a")
        for name, shape in row_shapes.items():
            if name in group:
                continue
            chunks = (chunk_rows,) + tuple(1 if i < len(shape) - 1 else s for i, s in enumerate(shape))
            group.create_array(
                name, shape=(n_rows,) + tuple(shape), chunks=chunks, dtype=dtypes[name],
                compressors=[compressor()], fill_value=0,
            )
        return group

    def remove_segment(self, run_id: str) -> None:
        self._check_writable()
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

    def read_rows(self, name: str, rows: np.ndarray, layer: int | slice | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
        """`array[rows, layer]` as one float32 array, in the order of `rows` (into `out` if given)."""
        rows = np.asarray(rows, dtype=np.int64)
        for positions, block in self.iter_rows(name, rows, layer):
            if out is None:
                out = np.empty((len(rows),) + block.shape[1:], dtype=np.float32)
            out[positions] = block
        if out is None:
            raise TnstoreError(f"no captured rows selected from array {name}")
        return out

    def states(self, array: str = "hidden", where: str | None = None, split: str = "all",
               layers: Sequence[int] | range | int | None = None, max_bytes: int = 8 << 30) -> States:
        """Stored states of the sentences `where` and `split` select (the selection contract of
        `tnstore.store.selection`; where None = plain captures, `ablation IS NULL`), in float32.

        array: hidden (layers = hidden indices 0..L), resid_pre_mlp, mlp_act, mlp_out, mlp_out_scale (layers =
        0-based decoder layers), final_raw (no layers). Returns `States`: values (n, len(layers), width) — or
        (n, width) for final_raw or an int `layers` — and the rows used. Reads stream chunk by chunk into the
        result, so memory is the result plus one block; a result over `max_bytes` is refused.
        """
        from tnstore.store.selection import PLAIN, make_scope, select

        if array not in ARRAY_LAYER_AXIS:
            raise ArgumentError("array", f"{{arg}} {array!r} is not one of {', '.join(ARRAY_LAYER_AXIS)}")
        sel = select(self, make_scope(where, split, PLAIN))
        return self._states(array, sel, layers, max_bytes)

    def _states(self, array: str, sel: "Selection", layers, max_bytes: int) -> States:
        reader = self.segments()[0].reader(array)
        shape = reader.shape[1:]
        axis = ARRAY_LAYER_AXIS[array]
        squeeze = isinstance(layers, (int, np.integer))
        if axis is None:
            if layers is not None:
                raise ArgumentError("layers", f"{{arg}}: array {array} has no layer axis; leave it None")
            picked, per_row = None, shape
        else:
            count = shape[0]
            picked = list(range(count)) if layers is None else [int(layers)] if squeeze else [int(l) for l in layers]
            bad = [l for l in picked if not 0 <= l < count]
            if bad or not picked:
                raise ArgumentError("layers", f"{{arg}} {bad or picked}: array {array} has {axis} 0..{count - 1}")
            per_row = (len(picked),) + shape[1:]
        need = len(sel) * int(np.prod(per_row)) * 4
        if need > max_bytes:
            raise ArgumentError("max_bytes", f"the states asked for take {need / 2**30:.1f} GiB, over {{arg}} = "
                                             f"{max_bytes / 2**30:.1f} GiB; select fewer rows or layers")
        values = np.empty((len(sel),) + per_row, dtype=np.float32)
        if picked is None:
            self.read_rows(array, sel.rows, None, out=values)
        else:
            for j, layer in enumerate(picked):
                for positions, block in self.iter_rows(array, sel.rows, layer):
                    values[positions, j] = block
        if squeeze:
            values = values[:, 0]
        return States(array, values, sel.table(), picked)

    def model_array(self, name: str) -> "zarr.Array":
        import zarr

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
        import zarr

        self._check_writable()
        final = self.path / "model" / "weights.zarr"
        if final.exists():
            return
        tmp = self.path / "model" / f".weights.zarr.tmp-{uuid.uuid4().hex}"
        group = zarr.open_group(str(tmp), mode="w")
        for name, value in arrays.items():
            chunks = (1,) + value.shape[1:]
            arr = group.create_array(name, shape=value.shape, chunks=chunks, dtype=dtypes[name],
                                     compressors=[compressor()])
            arr[...] = value.astype(dtypes[name])
        os.replace(tmp, final)

    # ---------------------------------------------------------------- journal (unfinished runs)
    def journal_path(self, run_id: str) -> Path:
        return self.path / "journal" / f"{run_id}.json"

    def read_journal(self, run_id: str) -> dict[str, Any] | None:
        path = self.journal_path(run_id)
        return json.loads(path.read_text("utf-8")) if path.exists() else None

    def write_journal(self, run_id: str, entry: dict[str, Any]) -> None:
        self._check_writable()
        _atomic_write_bytes(self.journal_path(run_id), json.dumps(_jsonable(entry)).encode())

    def pending_journals(self) -> list[dict[str, Any]]:
        folder = self.path / "journal"
        return [json.loads(p.read_text("utf-8")) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def drop_journal(self, run_id: str) -> None:
        self._check_writable()
        self.journal_path(run_id).unlink(missing_ok=True)


def open_store(path: "str | Path | Store", mode: str = "a") -> Store:
    """A Store for `path` (a Store passes through, its own mode kept)."""
    return path if isinstance(path, Store) else Store.open(path, mode)


def _split_by_key(data: pa.Table, key: tuple[str, ...]) -> Iterator[tuple[tuple, pa.Table]]:
    """(key values, rows) for each distinct value of the key columns in `data`."""
    if not key:
        yield (), data
        return
    import pyarrow.compute as pc

    uniques = [pc.unique(data.column(c).combine_chunks()) for c in key]
    if all(len(u) == 1 for u in uniques):  # the common case (one analysis, one part): no grouping pass
        values = [u.dictionary[u.indices[0].as_py()].as_py() if pa.types.is_dictionary(u.type) else u[0].as_py()
                  for u in uniques]
        yield tuple(values), data
        return
    distinct = data.select(list(key)).group_by(list(key)).aggregate([]).to_pylist()
    for combo in distinct:
        mask = None
        for c in key:
            column = data.column(c)
            test = pc.is_null(column) if combo[c] is None else pc.equal(column, pa.scalar(combo[c], column.type))
            test = pc.fill_null(test, False)
            mask = test if mask is None else pc.and_(mask, test)
        yield tuple(combo[c] for c in key), data.filter(mask)


def _merged(new: pa.Table, old: pa.Table | None, merge_on: tuple[str, ...]) -> pa.Table:
    """`new` plus the rows of `old` whose merge_on values `new` does not carry, sorted by merge_on."""
    if old is not None and old.num_rows:
        fresh = set(zip(*(new.column(c).to_pylist() for c in merge_on)))
        keep = [key not in fresh for key in zip(*(old.column(c).to_pylist() for c in merge_on))]
        new = pa.concat_tables([new, old.filter(pa.array(keep, pa.bool_()))])
    return new.sort_by([(c, "ascending") for c in merge_on])


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

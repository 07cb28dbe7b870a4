"""The one layer that reads and writes a store (layout: `schemas/store-v2.json`).

Tables are Parquet parts, one per value of the table's declared key, replaced atomically; tensors are Zarr
groups, one segment per capture run, so appending a run never rewrites bytes an earlier run wrote, and a
half-finished run is invisible to readers (its sentences only appear when its `runs` row is written, last).

Integrity (tnstore/store/integrity.py): every file is listed with its size and XXH3 checksum in a catalog written
with it (tables/catalog.json for table parts, one catalog per run and one for the model arrays), and every read
checks what it reads: a table part when its view is made or it is read (once per Store while the file is
unchanged), an array chunk each time it is decoded. A missing, truncated or corrupt file is a DamagedStoreError
naming the file and `tnstore verify`. Readers never invent data.

Where the bytes are (tnstore/store/files.py): a local folder, or a URL (http(s)://, s3://) read through fsspec.
A remote store is read-only; its table parts are fetched once, checked, and kept in a local cache
($TNSTORE_CACHE/remote-parts, named by checksum) so DuckDB reads them like local ones; its chunks are fetched
as reads need them. `results=LOCAL_DIR` gives any store (remote, or local and read-only) a local results folder:
tables written go there and reads see the store's parts with the folder's on top (same part name: the folder's).

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
from tnstore.errors import ArgumentError, DamagedStoreError, ReadOnlyError, TnstoreError
from tnstore.store.chunks import MAX_META_BYTES, ArraySource, ChunkReader
from tnstore.store.files import LocalFiles, RemoteFiles, check_key, fsync_dir, fsync_dirs, is_remote, open_files
from tnstore.store.frames import to_polars
from tnstore.store.integrity import (
    MODEL_CATALOG, TABLES_CATALOG, FileCatalog, FileRecord, TableCatalog, digest, run_catalog_key, seal, unseal,
)
from tnstore.store.lock import writer_lock
from tnstore.store.schema import FORMAT_VERSION, arrow_schema, conform, part_name, table_names, table_spec

if TYPE_CHECKING:
    import duckdb
    import zarr

    from tnstore.store.durable import ZarrWriter
    from tnstore.store.relation import Relation
    from tnstore.store.selection import Selection

MANIFEST = "tnstore.json"
RESULTS_MANIFEST = "tnstore-results.json"
MODES = ("r", "a")
MAX_JSON_BYTES = 256 << 20  # a catalog of a very large run is a few MiB
MAX_PART_BYTES = 16 << 30
# Every per-sentence array: its axis after the row axis (None: the array has no layer axis).
ARRAY_LAYER_AXIS = {"hidden": "hidden_index", "final_raw": None, "resid_pre_mlp": "layer", "mlp_act": "layer",
                    "mlp_out": "layer", "mlp_out_scale": "layer"}
MODEL_ARRAYS = ("down_proj", "mlp_out_gain")
# Bounds on the model facts a store may claim: far above any model tnstore reads, far below what would let a
# crafted manifest size an allocation.
FACT_BOUNDS = {"n_layers": 4096, "d_model": 1 << 17, "d_mlp": 1 << 20}


def compressor():
    """LZ4 with byte shuffle: zstd saves only a few percent more on activations and halves write speed."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def array_shape(name: str, facts: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of one sentence's slice of per-sentence array `name` (or of per-model array `name`) for a model."""
    L, d, m = int(facts["n_layers"]), int(facts["d_model"]), int(facts["d_mlp"])
    return {"hidden": (L + 1, d), "final_raw": (d,), "resid_pre_mlp": (L, d), "mlp_act": (L, m), "mlp_out": (L, d),
            "mlp_out_scale": (L,), "down_proj": (L, m, d), "mlp_out_gain": (L, d)}[name]


@dataclass
class Segment:
    """The Zarr group of one finished capture run, holding rows `row_start .. row_end - 1` of every per-sentence
    array; its files are listed in the run's catalog, which every read checks against."""

    run_id: str
    row_start: int
    row_end: int
    files: "LocalFiles | RemoteFiles"
    facts: Mapping[str, Any]
    check: bool = True
    _readers: dict = field(default_factory=dict)
    _catalog: FileCatalog | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def prefix(self) -> str:
        return f"segments/{self.run_id}.zarr"

    @property
    def path(self) -> Path | None:
        """The segment's folder for a local store (None for a remote one)."""
        return None if self.files.remote else self.files.root / self.prefix

    def catalog(self) -> FileCatalog:
        if self._catalog is None:
            key = run_catalog_key(self.run_id)
            payload = self.files.read(key, MAX_JSON_BYTES)
            if payload is None:
                raise DamagedStoreError(f"{self.files.where(key)} is missing: run {self.run_id} cannot be checked "
                                        "(copy the file again)", self.files.label)
            try:
                self._catalog = FileCatalog.parse(payload, self.files.where(key))
            except DamagedStoreError as exc:
                raise exc.for_store(self.files.label) from None
        return self._catalog

    def reader(self, name: str) -> ChunkReader:
        """The reader of array `name`, its metadata checked against the catalog and the model's shapes."""
        with self._lock:
            if name not in self._readers:
                self._readers[name] = self._open_reader(name)
            return self._readers[name]

    def _open_reader(self, name: str) -> ChunkReader:
        if name not in ARRAY_LAYER_AXIS:
            raise ArgumentError("array", f"{{arg}} {name!r} is not one of {', '.join(ARRAY_LAYER_AXIS)}")
        cut = len(name) + 1
        records = {k[cut:]: r for k, r in self.catalog().files.items() if k.startswith(name + "/")}
        if "zarr.json" not in records:
            raise TnstoreError(f"run {self.run_id} of store {self.files.label} has no array {name}")
        reader = ChunkReader.open(ArraySource(self.files, f"{self.prefix}/{name}", records, f"run {self.run_id}",
                                              self.check))
        expected = (self.row_end - self.row_start,) + array_shape(name, self.facts)
        if reader.shape != expected:
            raise DamagedStoreError(f"{self.files.where(self.prefix + '/' + name + '/zarr.json')}: shape "
                                    f"{reader.shape}, but run {self.run_id} of this model must be {expected}",
                                    self.files.label)
        return reader


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


@dataclass(frozen=True)
class Part:
    """One table part as a reader sees it: its key in `files`, and the versions of it the catalog accepts."""

    table: str
    name: str
    files: "LocalFiles | RemoteFiles"
    accepted: tuple[FileRecord, ...]

    @property
    def key(self) -> str:
        return f"tables/{self.table}/{self.name}.parquet"

    @property
    def rows(self) -> int:
        return self.accepted[0].rows or 0


class Store:
    """A tnstore store. `tnstore.open(path_or_url)` opens an existing one; `Store.create` makes a new one."""

    def __init__(self, files: "LocalFiles | RemoteFiles", manifest: dict[str, Any], mode: str = "a",
                 results: "LocalFiles | None" = None, check_reads: bool = True):
        self.files = files
        self.path: Path | str = files.label if files.remote else files.root  # a Path, or the URL of a remote store
        self.manifest = manifest
        self.mode = mode
        self.results = results
        self.check_reads = check_reads  # check each chunk's checksum as it is read (bench_sharing measures the cost)
        self._segments: list[Segment] | None = None
        self._segments_stamp: object = None
        self._model_readers: dict[str, ChunkReader] = {}  # written once per store, never replaced
        self._writers: dict[str, ZarrWriter] = {}  # segments created by this Store, not yet sealed
        self._catalogs: dict[str, tuple[object, TableCatalog]] = {}  # files label -> (stamp, catalog)
        self._checked: dict[tuple[str, str], tuple[object, str]] = {}  # (label, key) -> (file stamp, xxh3)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_lock = threading.Lock()
        self._view_stamps: dict[str, object] = {}
        self._writing = False

    @property
    def remote(self) -> bool:
        return self.files.remote

    @property
    def label(self) -> str:
        """The store's path or URL, as messages name it."""
        return self.files.label

    # ---------------------------------------------------------------- opening
    @staticmethod
    def exists(path: str | Path) -> bool:
        return not is_remote(path) and (Path(path) / MANIFEST).is_file()

    @classmethod
    def open(cls, path: str | Path, mode: str = "a", results: str | Path | None = None,
             storage_options: Mapping[str, Any] | None = None, check_reads: bool = True) -> "Store":
        """Open an existing store and check its manifest against `schemas/`.

        path: a folder, or the URL of a remote store (http(s)://, s3://; read-only, `storage_options` go to
        fsspec). mode "r": read-only, every write refused; "a": read and write (one writer at a time).
        results: a local folder that takes the tables this Store writes (created if missing), for a store that
        cannot be written (remote, or read-only); reads see them on top of the store's own.
        """
        if mode not in MODES:
            raise ArgumentError("mode", f"{{arg}} {mode!r} is not one of {', '.join(MODES)}")
        files = open_files(path, dict(storage_options or {}))
        payload = files.read(MANIFEST, 1 << 20)
        if payload is None:
            if files.remote:
                raise TnstoreError(f"{files.label}: no {MANIFEST} there; is this the URL of a tnstore store?")
            root = files.root
            what = "does not exist" if not root.exists() else "is not a tnstore store (no tnstore.json)"
            raise TnstoreError(f"store {root} {what}; create one with `tnstore capture --store {root} ...`")
        manifest = _parse_manifest(payload, files)
        store = cls(files, manifest, mode, None, check_reads)
        if results is not None:
            store.results = _open_results(results, store)
        return store

    @classmethod
    def create(cls, path: str | Path, model_facts: dict[str, Any]) -> "Store":
        """Create an empty store for one model. The manifest is written last, so a crash leaves no store."""
        if is_remote(path):
            raise TnstoreError(f"{path}: a remote store is read-only; create the store locally and copy it there")
        root = Path(path).absolute()
        if cls.exists(root):
            raise TnstoreError(f"store {root} already exists")
        # Leftovers of a create that crashed before its manifest (empty skeleton folders) do not count.
        skeleton = {"segments", "journal", "tables", "model", "LOCK"}
        if root.exists() and any(p.name not in skeleton for p in root.iterdir()):
            raise TnstoreError(f"{root} exists and is not an empty directory; choose a new store path")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in ("segments", "journal", "tables", "model"):
                (root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise TnstoreError(f"cannot create store at {root}: {exc.strerror}; choose a writable store path") from None
        manifest = {
            "format": "tnstore",
            "format_version": FORMAT_VERSION,
            "created_at": _now().isoformat(),
            "model": _jsonable(model_facts),
        }
        _check_facts(manifest["model"], str(root / MANIFEST))
        store = cls(LocalFiles(root), manifest)
        store.files.write_atomic(TABLES_CATALOG, TableCatalog.empty().dump())
        with store.writing("create"):
            store.write_rows("model", pa.Table.from_pylist([{**model_facts, "created_at": _now()}]))
        store.files.write_atomic(MANIFEST, seal(manifest))
        fsync_dir(store.files.root.parent)
        return store

    def _check_writable(self, arrays: bool = False) -> None:
        """Refuse a write this Store may not make; `arrays`: the write goes into the store itself (capture)."""
        if self.mode == "r":
            raise ReadOnlyError(f"store {self.label} is open read-only; open it with mode 'a' to write results")
        if arrays and (self.remote or self.results is not None):
            raise ReadOnlyError(f"store {self.label}: capture writes into the store itself, which is "
                                + ("remote and read-only" if self.remote else "opened with a results folder")
                                + "; capture into a local store")
        if self.remote and self.results is None:
            from tnstore.errors import RemoteStoreError

            raise RemoteStoreError("results", f"store {self.label} is remote and read-only; pass {{arg}} LOCAL_DIR "
                                              "to write this command's tables into a local folder instead")

    @property
    def _target(self) -> LocalFiles:
        """Where table writes go: the results folder if there is one, else the store."""
        return self.results if self.results is not None else self.files  # type: ignore[return-value]

    @contextmanager
    def writing(self, purpose: str, wait_seconds: float = 0.0) -> Iterator["Store"]:
        """Exclusive writer access for the duration of the block (re-entrant within one Store)."""
        self._check_writable()
        if self._writing:
            yield self
            return
        target = self._target
        if not os.access(target.root, os.W_OK):
            raise ReadOnlyError(f"store {target.root} is read-only; copy it somewhere writable first"
                                if target is self.files else f"results folder {target.root} is not writable")
        with writer_lock(target.root / "LOCK", purpose, wait_seconds):
            self._segments = None
            self._writing = True
            try:
                self._recover(target)
                yield self
            finally:
                self._writing = False

    @property
    def model_facts(self) -> dict[str, Any]:
        return self.manifest["model"]

    # ---------------------------------------------------------------- tables: catalog and parts
    def _catalog(self, files: LocalFiles | RemoteFiles, fresh: bool = False) -> TableCatalog:
        """The table catalog of `files` (the store's or the results folder's), re-read when its file changed."""
        stamp = files.stamp(TABLES_CATALOG)
        held = self._catalogs.get(files.label)
        if held is not None and held[0] == stamp and not fresh:
            return held[1]
        payload = files.read(TABLES_CATALOG, MAX_JSON_BYTES)
        if payload is None:
            if files is self.results:
                catalog = TableCatalog.empty()
            else:
                raise DamagedStoreError(f"{files.where(TABLES_CATALOG)} is missing: the store's tables cannot be "
                                        "listed (copy the file again)", self.label)
        else:
            try:
                catalog = TableCatalog.parse(payload, files.where(TABLES_CATALOG))
            except DamagedStoreError as exc:
                raise exc.for_store(self.label) from None
        self._catalogs[files.label] = (stamp, catalog)
        return catalog

    def parts(self, table: str) -> list[Part]:
        """The parts of a table a reader sees, by name: the store's, with a results folder's on top; a run's
        sentences only once its `runs` row exists."""
        arrow_schema(table)  # validates the name
        found: dict[str, Part] = {}
        for files in (self.files, self.results):
            if files is None:
                continue
            catalog = self._catalog(files)
            for name in catalog.names(table):
                check_key(name, f"{files.where(TABLES_CATALOG)} [{table}]", self.label)
                found[name] = Part(table, name, files, tuple(catalog.accepted(table, name)))
        if table == "sentences":
            # A run's sentences count only once its runs row exists (written last), so a crash between the two
            # writes never shows rows whose tensors are not all there. Both parts are named by the run id.
            finished = {p.name for p in self.parts("runs")}
            found = {name: p for name, p in found.items() if name in finished}
        return [found[name] for name in sorted(found)]

    def part_files(self, table: str) -> list[Path]:
        """Local paths of a table's parts, each checked against the catalog (a remote part: its cached copy)."""
        return [path for path in (self._part_path(p) for p in self.parts(table)) if path is not None]

    def _part_path(self, part: Part) -> Path | None:
        """A checked local copy of `part` (None: a part being written for the first time, not there yet)."""
        if part.files.remote:
            return self._cached_part(part)
        path = part.files.path(part.key)
        for attempt in range(3):
            stamp = part.files.stamp(part.key)
            held = self._checked.get((part.files.label, part.key))
            if held is not None and held[0] == stamp and any(r.xxh3 == held[1] for r in part.accepted):
                return path
            data = part.files.read(part.key, MAX_PART_BYTES)
            if data is None and self._only_pending(part):
                return None  # a part written for the first time, between its catalog entry and its rename
            problem = _part_problem(data, part.accepted)
            if problem is None:
                self._checked[(part.files.label, part.key)] = (stamp, digest(data))
                return path
            # A writer may have replaced the part since the catalog was read: read the catalog again, once.
            part = self._reread_part(part) or part
        raise DamagedStoreError(f"{part.files.where(part.key)} (a part of table {part.table}) {problem}; copy the "
                                "file again from where the store came from", self.label)

    def _only_pending(self, part: Part) -> bool:
        return part.name not in self._catalog(part.files).parts.get(part.table, {})

    def _reread_part(self, part: Part) -> Part | None:
        catalog = self._catalog(part.files, fresh=True)
        accepted = tuple(catalog.accepted(part.table, part.name))
        return Part(part.table, part.name, part.files, accepted) if accepted else None

    def _cached_part(self, part: Part) -> Path:
        """A remote part's bytes, fetched once and checked, in the local cache (named by its checksum)."""
        folder = _cache_dir()
        for record in part.accepted:  # a copy fetched before (by this or an earlier process)
            path = folder / f"{record.xxh3}-{record.size}.parquet"
            if ("cache", str(path)) in self._checked:
                return path
            if path.is_file() and _part_problem(path.read_bytes(), (record,)) is None:
                self._checked[("cache", str(path))] = ((), record.xxh3)
                return path
        data = part.files.read(part.key, max(r.size for r in part.accepted))
        problem = _part_problem(data, part.accepted)
        if problem is not None:
            raise DamagedStoreError(f"{part.files.where(part.key)} (a part of table {part.table}) {problem}; copy "
                                    "the file again from where the store came from", self.label)
        found = digest(data)
        path = folder / f"{found}-{len(data)}.parquet"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.tmp-{uuid.uuid4().hex}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._checked[("cache", str(path))] = ((), found)
        return path

    def write_rows(self, table: str, data: pa.Table) -> list[str]:
        """Write rows into `table`, one part per value of the table's declared key (`schemas/`).

        Each part replaces the stored part of its key value whole, except in tables that declare `merge_on`:
        there the stored rows whose merge_on values `data` does not carry stay. Returns the part names written.
        Must run inside `writing()`. Writing `runs` rows seals each run's segment first (its catalog).
        """
        self._check_writable()
        if not self._writing:
            raise RuntimeError(f"write to table {table} outside Store.writing()")
        spec = table_spec(table)
        staged = []
        for key_values, rows in _split_by_key(data, spec.key):
            name = part_name(table, key_values)
            rows = conform(table, rows)
            if spec.merge_on:
                rows = _merged(rows, self._read_part(table, name), spec.merge_on)
            staged.append((name, rows))
        if table == "runs":
            for run_id in data.column("run_id").to_pylist():
                self._ensure_sealed(run_id)
        self._commit_parts(table, staged)
        self._refresh_view(table)
        return [name for name, _ in staged]

    def _read_part(self, table: str, name: str) -> pa.Table | None:
        part = next((p for p in self.parts(table) if p.name == name), None)
        path = None if part is None else self._part_path(part)
        return None if path is None else conform(table, pq.ParquetFile(path).read())

    def _commit_parts(self, table: str, staged: list[tuple[str, pa.Table]]) -> None:
        """Write parts so that a reader or a crash at any moment sees each part whole, old or new: the new files
        under temp names (fsynced), the catalog naming them pending, the renames, the catalog committing them."""
        target = self._target
        folder_key = f"tables/{table}"
        created = target.makedirs(folder_key)
        catalog = self._catalog(target, fresh=True)
        moves = []
        for name, rows in staged:
            sink = pa.BufferOutputStream()
            pq.write_table(rows, sink, compression="zstd")
            payload = sink.getvalue()
            record = FileRecord.of(payload, rows=rows.num_rows)
            final = target.path(f"{folder_key}/{name}.parquet")
            tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")
            _write_synced(tmp, payload)
            catalog.pending[f"{table}/{name}"] = record
            moves.append((tmp, final, name, record))
        fsync_dirs([target.root / folder_key] + [p.parent for p in created])
        target.write_atomic(TABLES_CATALOG, catalog.dump())
        for tmp, final, _, _ in moves:
            os.replace(tmp, final)
        fsync_dir(target.root / folder_key)
        for _, _, name, record in moves:
            catalog.parts.setdefault(table, {})[name] = record
            catalog.pending.pop(f"{table}/{name}", None)
        target.write_atomic(TABLES_CATALOG, catalog.dump())
        self._catalogs.pop(target.label, None)

    def _recover(self, target: LocalFiles) -> None:
        """Finish or undo what a writer that died left: pending parts whose new file is in place are committed,
        the others dropped; temp files of table writes are removed. Runs while holding the writer lock."""
        catalog = self._catalog(target, fresh=True) if target.stamp(TABLES_CATALOG) else None
        if catalog is not None and catalog.pending:
            for key, record in list(catalog.pending.items()):
                table, name = key.split("/", 1)
                data = target.read(f"tables/{table}/{name}.parquet", MAX_PART_BYTES)
                if data is not None and _part_problem(data, (record,)) is None:
                    catalog.parts.setdefault(table, {})[name] = record
                del catalog.pending[key]
            target.write_atomic(TABLES_CATALOG, catalog.dump())
            self._catalogs.pop(target.label, None)
        for key, kind in target.listing("tables"):
            leaf = key.rsplit("/", 1)[-1]
            if kind == "file" and leaf.startswith(".") and ".tmp-" in leaf:
                os.unlink(target.root / key)

    def read_table(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The union of a table's parts as Arrow (an empty table with the schema's columns if it has none)."""
        schema = arrow_schema(table)
        files = self.part_files(table)
        if not files:
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        # ParquetFile reads a file without pyarrow.dataset, whose first import costs more than a small table.
        parts = [_read_parquet(f, columns, self.label) for f in files]
        return pa.concat_tables(parts, promote_options="default")

    # ---------------------------------------------------------------- SQL
    @property
    def connection(self) -> "duckdb.DuckDBPyConnection":
        """This store's DuckDB connection: every table a view of the same name over its checked parts, made once
        and remade only for tables whose parts changed since (by this or any other writer: a part write
        rewrites the table catalog; checking costs one stat per catalog)."""
        with self._con_lock:
            if self._con is None:
                import duckdb

                from tnstore.compute.parallel import workers

                self._con = duckdb.connect(config={"threads": workers()})
                self._view_stamps = {}
            for table in table_names():
                parts = self.parts(table)
                stamp = tuple((p.files.label, p.name, tuple(r.xxh3 for r in p.accepted)) for p in parts)
                if self._view_stamps.get(table) != stamp:
                    self._create_view(self._con, table, parts)
                    self._view_stamps[table] = stamp
            return self._con

    def _create_view(self, con: "duckdb.DuckDBPyConnection", table: str, parts: list[Part]) -> None:
        files = [path for path in (self._part_path(p) for p in parts) if path is not None]
        if files:
            listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
        else:
            con.register(f"_empty_{table}", arrow_schema(table).empty_table())
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _empty_{table}")

    def _refresh_view(self, table: str) -> None:
        if self._con is not None:
            with self._con_lock:
                self._view_stamps.pop(table, None)
                if table == "runs":  # sentences become visible with their runs row
                    self._view_stamps.pop("sentences", None)
        if table == "runs":
            self._segments = None

    def refresh(self) -> None:
        """Forget cached listings of runs and parts (views are also remade on their own when parts change)."""
        self._segments = None
        self._view_stamps = {}
        self._catalogs = {}

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
        return f"<tnstore.Store {self.label} mode={self.mode!r} model={facts.get('model_spec')!r} rows={self.n_rows()}>"

    # ---------------------------------------------------------------- description
    def info(self) -> StoreInfo:
        """What the store holds: model, runs, sentences per language/split/kind/ablation, tables, arrays."""
        counts = self.query(
            "SELECT lang, split, kind, ablation, count(*) AS sentences, avg(n_tokens) AS mean_tokens "
            "FROM sentences GROUP BY ALL ORDER BY split, kind, ablation NULLS FIRST, lang")
        runs = self.query("SELECT run_id, split, kind, n_sentences, row_start, row_end, ablation, ablation_scope, "
                          "command, finished_at FROM runs ORDER BY row_start")
        tables = {table: sum(p.rows for p in self.parts(table)) for table in table_names()}
        return StoreInfo(str(self.path), int(self.manifest["format_version"]), str(self.manifest["created_at"]),
                         dict(self.model_facts), self.n_rows(), runs, counts, tables, self.array_layouts(),
                         self.pending_journals())

    def array_layouts(self) -> dict[str, dict[str, Any]]:
        """Per-sentence arrays of the first run: shape of one sentence's slice, dtype, chunk shape."""
        segments = self.segments()
        if not segments:
            return {}
        out = {}
        names = {k.split("/", 1)[0] for k in segments[0].catalog().files if "/" in k}
        for name in ARRAY_LAYER_AXIS:
            if name in names:
                reader = segments[0].reader(name)
                out[name] = {"shape": tuple(reader.shape[1:]), "dtype": str(reader.dtype),
                             "chunks": tuple(reader.chunks)}
        return out

    # ---------------------------------------------------------------- tensors
    def segments(self) -> list[Segment]:
        """Segments of finished runs, in row order (re-listed when a run was added since)."""
        stamp = tuple((p.name, p.accepted) for p in self.parts("runs"))
        if self._segments is None or self._segments_stamp != stamp:
            runs = self.read_table("runs", ["run_id", "row_start", "row_end"]).to_pylist()
            runs.sort(key=lambda r: (r["row_start"] is None, r["row_start"]))
            self._segments = [
                Segment(_run_id(r, self), r["row_start"], r["row_end"], self.files, self.model_facts,
                        self.check_reads)
                for r in runs
            ]
            self._segments_stamp = stamp
        return self._segments

    def create_segment(
        self, run_id: str, n_rows: int, row_shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], chunk_rows: int
    ) -> "ZarrWriter":
        """Create (or re-open, on resume) the Zarr group for one run: array `name` has shape (n_rows, *row_shapes[name]).

        Chunks hold `chunk_rows` rows of one layer, so a kernel streaming one layer reads only that layer. Every
        file is written durably and recorded (tnstore/store/durable.py); the run's catalog is written from the
        records when the run is sealed (`seal_segment`, or its `runs` row written through this Store).
        """
        from tnstore.store.durable import ZarrWriter

        self._check_writable(arrays=True)
        check_key(run_id, "run id")
        self.files.makedirs("segments")
        writer = ZarrWriter(self.files.path(f"segments/{run_id}.zarr"))
        for name, shape in row_shapes.items():
            if name in writer:
                continue
            chunks = (chunk_rows,) + tuple(1 if i < len(shape) - 1 else s for i, s in enumerate(shape))
            writer.create_array(name, shape=(n_rows,) + tuple(shape), chunks=chunks, dtype=dtypes[name],
                                compressors=[compressor()], fill_value=0)
        self._writers[run_id] = writer
        return writer

    def seal_segment(self, run_id: str, chunks: Mapping[str, FileRecord] | None = None) -> FileCatalog:
        """Write run `run_id`'s catalog: its chunk files' records (`chunks`, keys relative to the group; default:
        what this Store's writer recorded) and its metadata files', hashed now. Before the run's `runs` row."""
        self._check_writable(arrays=True)
        check_key(run_id, "run id")
        if chunks is None:
            writer = self._writers.get(run_id)
            if writer is None:
                raise RuntimeError(f"run {run_id}: no segment written through this Store; pass its chunk records")
            writer.sync()
            chunks = writer.records
        prefix = f"segments/{run_id}.zarr"
        files = {k: r for k, r in chunks.items() if not k.endswith("zarr.json")}
        for key, kind in self.files.listing(prefix):
            if key.endswith("zarr.json") and kind == "file":
                rel = key[len(prefix) + 1:]
                files[rel] = FileRecord.of(self.files.read(key, MAX_META_BYTES))
        catalog = FileCatalog(files, {"run_id": run_id})
        self.files.write_atomic(run_catalog_key(run_id), catalog.dump())
        self._writers.pop(run_id, None)
        return catalog

    def _ensure_sealed(self, run_id: str) -> None:
        """Before a run's `runs` row: its catalog, from this Store's writer if it wrote the segment. A run with
        no segment at all (tables-only test stores) is left without one: reading its arrays is then an error."""
        if run_id in self._writers:
            self.seal_segment(run_id)
        elif self.files.stamp(run_catalog_key(run_id)) is None and \
                self.files.path(f"segments/{check_key(run_id, 'run id')}.zarr").exists():
            raise RuntimeError(f"run {run_id} has no catalog: write its segment through this Store "
                               "(create_segment) or call seal_segment with its chunk records")

    def remove_segment(self, run_id: str) -> None:
        self._check_writable(arrays=True)
        check_key(run_id, "run id")
        shutil.rmtree(self.files.path(f"segments/{run_id}.zarr"), ignore_errors=True)
        self.files.unlink(run_catalog_key(run_id))
        self._writers.pop(run_id, None)

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
        """A per-model array through zarr-python (a local store only; read_model_array checks what it reads and
        is what the analyses use). Its metadata is checked first, so zarr never opens a codec tnstore did not
        write."""
        import zarr

        self._model_reader(name)
        if self.remote:
            raise TnstoreError(f"model_array reads local stores only; use read_model_array for {self.label}")
        return zarr.open_group(str(self.files.path("model/weights.zarr")), mode="r")[name]

    def read_model_array(self, name: str, layers: slice, dtype: type | None = np.float32,
                         out: np.ndarray | None = None) -> np.ndarray:
        """`model_array(name)[layers]` as `dtype` (None: as stored), read chunk by chunk, each chunk checked.

        With dtype None, `out` (C-contiguous, the stored dtype) may be given to read into (no fresh pages).
        """
        reader = self._model_reader(name)
        start, stop, _ = layers.indices(reader.shape[0])
        stop = max(start, stop)
        if out is not None and dtype is None:
            return reader.read(start, stop, None, out=out)
        values = as_dtype(_read_span(reader, start, stop, None), dtype)
        if out is not None:
            out[...] = values
            return out
        return values

    def model_array_dtype(self, name: str) -> np.dtype:
        """The stored dtype of a per-model array."""
        return np.dtype(self._model_reader(name).dtype)

    def _model_reader(self, name: str) -> ChunkReader:
        """The reader of per-model array `name`, its metadata checked against the model catalog and facts."""
        if name not in self._model_readers:
            if name not in MODEL_ARRAYS:
                raise ArgumentError("name", f"{{arg}} {name!r} is not one of {', '.join(MODEL_ARRAYS)}")
            payload = self.files.read(MODEL_CATALOG, MAX_JSON_BYTES)
            if payload is None:
                raise DamagedStoreError(f"{self.files.where(MODEL_CATALOG)} is missing: the model arrays cannot be "
                                        "checked (copy the file again)", self.label)
            try:
                catalog = FileCatalog.parse(payload, self.files.where(MODEL_CATALOG))
            except DamagedStoreError as exc:
                raise exc.for_store(self.label) from None
            cut = len(name) + 1
            records = {k[cut:]: r for k, r in catalog.files.items() if k.startswith(name + "/")}
            reader = ChunkReader.open(ArraySource(self.files, f"model/weights.zarr/{name}", records,
                                                  "the model arrays", self.check_reads))
            expected = array_shape(name, self.model_facts)
            if reader.shape != expected:
                raise DamagedStoreError(f"{self.files.where('model/weights.zarr/' + name + '/zarr.json')}: shape "
                                        f"{reader.shape}, but this model's must be {expected}", self.label)
            self._model_readers[name] = reader
        return self._model_readers[name]

    def has_model_arrays(self) -> bool:
        """Whether the per-model arrays are written (they appear whole or not at all)."""
        return self.files.path("model/weights.zarr").exists()

    def write_model_arrays(self, arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
        """Write the per-model arrays once: into a temp folder, their catalog, then the rename that makes them
        appear whole (a crash before it leaves no arrays, so the next capture writes them again)."""
        from tnstore.store.durable import ZarrWriter

        self._check_writable(arrays=True)
        if self.has_model_arrays():
            return
        final = self.files.path("model/weights.zarr")
        self.files.makedirs("model")
        tmp = final.with_name(f".weights.zarr.tmp-{uuid.uuid4().hex}")
        writer = ZarrWriter(tmp, mode="w")
        for name, value in arrays.items():
            chunks = (1,) + value.shape[1:]
            arr = writer.create_array(name, shape=value.shape, chunks=chunks, dtype=dtypes[name],
                                      compressors=[compressor()])
            arr[...] = np.asarray(value, dtype=dtypes[name])  # no copy when it is already the stored dtype
        writer.sync()
        self.files.write_atomic(MODEL_CATALOG, FileCatalog(writer.records, {"arrays": sorted(arrays)}).dump())
        os.replace(tmp, final)
        fsync_dir(final.parent)

    # ---------------------------------------------------------------- journal (unfinished runs)
    def journal_path(self, run_id: str) -> Path:
        return self.files.path(f"journal/{check_key(run_id, 'run id')}.json")

    def read_journal(self, run_id: str) -> dict[str, Any] | None:
        """The journal of an unfinished run; None if there is none or it is damaged (the run then starts over,
        rewriting every block, which is always safe)."""
        if self.remote:
            return None
        payload = self.files.read(f"journal/{check_key(run_id, 'run id')}.json", MAX_JSON_BYTES)
        if payload is None:
            return None
        try:
            return unseal(payload, str(self.journal_path(run_id)))
        except DamagedStoreError:
            return None

    def write_journal(self, run_id: str, entry: dict[str, Any]) -> None:
        self._check_writable(arrays=True)
        self.files.makedirs("journal")
        self.files.write_atomic(f"journal/{check_key(run_id, 'run id')}.json", seal(_jsonable(entry)))

    def pending_journals(self) -> list[dict[str, Any]]:
        if self.remote:
            return []
        out = []
        for key, kind in sorted(self.files.listing("journal")):
            if kind == "file" and key.endswith(".json") and not key.rsplit("/", 1)[-1].startswith("."):
                try:
                    out.append(unseal(self.files.read(key, MAX_JSON_BYTES) or b"", key))
                except DamagedStoreError:
                    continue
        return out

    def drop_journal(self, run_id: str) -> None:
        self._check_writable(arrays=True)
        self.files.unlink(f"journal/{check_key(run_id, 'run id')}.json")


def open_store(path: "str | Path | Store", mode: str = "a", results: "str | Path | None" = None,
               storage_options: Mapping[str, Any] | None = None) -> Store:
    """A Store for `path` (a folder or a URL; a Store passes through, its own mode kept)."""
    if isinstance(path, Store):
        return path
    return Store.open(path, mode, results=results, storage_options=storage_options)


def _parse_manifest(payload: bytes, files: "LocalFiles | RemoteFiles") -> dict[str, Any]:
    """The manifest, its format and version checked first (an older store gets the version message), then its
    checksum and model facts."""
    where = files.where(MANIFEST)
    label = files.label
    try:
        manifest = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DamagedStoreError(f"{where} is not valid JSON (truncated or damaged)", label) from None
    if not isinstance(manifest, dict) or manifest.get("format") != "tnstore":
        raise DamagedStoreError(f"{where} is not a tnstore manifest", label)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise TnstoreError(
            f"store {label} has format version {version}, this tnstore reads version {FORMAT_VERSION}; "
            + ("capture it again with this tnstore (its commands are in the store's runs table), or use "
               "tnstore 0.1 to read it" if isinstance(version, int) and version < FORMAT_VERSION
               else "use a tnstore release that matches the store"))
    try:
        manifest = unseal(payload, where)
    except DamagedStoreError as exc:
        raise exc.for_store(label) from None
    _check_facts(manifest.get("model"), where, label)
    return manifest


def _check_facts(facts: Any, where: str, label: str | None = None) -> None:
    if not isinstance(facts, dict):
        raise DamagedStoreError(f"{where}: the model facts are not an object", label)
    for name, bound in FACT_BOUNDS.items():
        value = facts.get(name)
        if type(value) is not int or not 1 <= value <= bound:
            raise DamagedStoreError(f"{where}: model fact {name} = {value!r} is not a size between 1 and {bound}",
                                    label)


def _open_results(results: str | Path, store: Store) -> LocalFiles:
    """The local results folder of `store`, created if missing; one that holds another store's results is
    refused (the model fingerprint and the store's location are recorded in it)."""
    if is_remote(results):
        raise ArgumentError("results", f"{{arg}} {results}: a results folder must be a local path")
    root = Path(results).absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgumentError("results", f"{{arg}} {root}: cannot create it ({exc.strerror})") from None
    files = LocalFiles(root)
    fingerprint = store.model_facts.get("fingerprint")
    payload = files.read(RESULTS_MANIFEST, 1 << 20)
    if payload is None:
        if any(root.iterdir()):
            raise ArgumentError("results", f"{{arg}} {root} is not empty and not a tnstore results folder; "
                                           "choose a new folder")
        files.write_atomic(RESULTS_MANIFEST, seal({"format": "tnstore-results", "format_version": FORMAT_VERSION,
                                                  "store": store.label, "fingerprint": fingerprint,
                                                  "created_at": _now().isoformat()}))
        return files
    held = unseal(payload, files.where(RESULTS_MANIFEST))
    if held.get("format") != "tnstore-results" or held.get("fingerprint") != fingerprint:
        raise ArgumentError("results", f"{{arg}} {root} holds results of store {held.get('store')!r} (model "
                                       f"{held.get('fingerprint')!r}), not of {store.label}; choose another folder")
    return files


def _run_id(row: dict[str, Any], store: Store) -> str:
    run_id, start, end = row.get("run_id"), row.get("row_start"), row.get("row_end")
    where = store.files.where("tables/runs")
    check_key(run_id if isinstance(run_id, str) else repr(run_id), f"{where} (run id)", store.label)
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end < 1 << 40):
        raise DamagedStoreError(f"{where}: run {run_id} has rows {start}..{end}, not a range of rows", store.label)
    return run_id


def _part_problem(data: bytes | None, accepted: Sequence[FileRecord]) -> str | None:
    """What is wrong with a table part's bytes against the versions the catalog accepts (None: nothing)."""
    if not accepted:
        return "is not in the table catalog"
    if data is None:
        return "is missing"
    sizes = {r.size for r in accepted}
    if len(data) not in sizes:
        return f"is {len(data)} bytes, the catalog says {accepted[0].size} (truncated or replaced)"
    found = digest(data)
    if not any(r.xxh3 == found and r.size == len(data) for r in accepted):
        return "does not match its checksum (corrupt)"
    return None


def _read_parquet(path: Path, columns: Sequence[str] | None, label: str) -> pa.Table:
    try:
        return pq.ParquetFile(path).read(columns=list(columns) if columns else None)
    except (pa.ArrowException, OSError) as exc:
        raise DamagedStoreError(f"{path} cannot be read as Parquet ({str(exc).splitlines()[0][:200]})", label) from None


def _cache_dir() -> Path:
    """Where remote table parts are kept once fetched: $TNSTORE_CACHE/remote-parts (default ~/.cache/tnstore)."""
    return Path(os.environ.get("TNSTORE_CACHE", Path.home() / ".cache" / "tnstore")) / "remote-parts"


def _write_synced(path: Path, payload) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(payload).cast("B")
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _read_span(reader: ChunkReader, a: int, b: int, second: int | slice | None) -> np.ndarray:
    """reader[a:b] or reader[a:b, second]."""
    return reader.read(a, b, second)


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

"""`tnstore verify`: check every file of a store against its catalogs, and name what to do about each bad one.

Checked: the manifest (its own checksum and model facts), the table catalog and every table part, each finished
run's catalog, that it lists every chunk of the run's arrays, and every file it lists, and the model arrays.
`fast` checks presence and sizes only (no file is read); the default also reads every file and compares its
XXH3-64 checksum. Where the files can be listed (a local folder, S3; not plain HTTP) files that no catalog names
are reported as unexpected, and symbolic links as unsafe. An unfinished capture (a journal) is not damage: it is
reported as pending, with the command that resumes it.

verify never raises for a damaged store: every problem becomes one `Problem` line. It reads stored text (a run's
recorded command) only to print it, escaped, never to run it.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

import xxhash

from tnstore.errors import DamagedStoreError, TnstoreError
from tnstore.store.chunks import MAX_META_BYTES, array_layout
from tnstore.store.files import LocalFiles, RemoteFiles, check_key, open_files
from tnstore.store.integrity import (
    MODEL_CATALOG, TABLES_CATALOG, FileCatalog, FileRecord, TableCatalog, run_catalog_key,
)

READ_BLOCK = 8 << 20


@dataclass(frozen=True)
class Problem:
    """One damaged file: where it is, what is wrong (missing, truncated, corrupt, unexpected, unsafe, damaged),
    what it belongs to (a run, a table, the manifest) and what to do."""

    file: str
    kind: str
    detail: str
    unit: str
    advice: str

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.file}: {self.kind}{detail} [{self.unit}]; {self.advice}"


@dataclass
class VerifyReport:
    """What verify found: `problems` (empty: the store is sound), the files and bytes checked, the time taken,
    and unfinished captures (`pending`, not damage)."""

    store: str
    fast: bool
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def gb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds else float("nan")

    def summary(self) -> str:
        what = "sizes of" if self.fast else "checksums of"
        verdict = "sound" if self.ok else f"{len(self.problems)} damaged file(s)"
        return (f"{self.store}: {verdict}; {what} {self.files} files ({self.bytes / 1e9:.2f} GB) checked in "
                f"{self.seconds:.1f} s" + ("" if self.fast else f" ({self.gb_per_s:.2f} GB/s)"))


def verify(store: Any, fast: bool = False, storage_options: Mapping[str, Any] | None = None,
           workers: int | None = None) -> VerifyReport:
    """Check the store at `store` (a path, a URL, or a Store) file by file; see the module docstring."""
    from tnstore.compute.parallel import workers as cores

    location = getattr(store, "files", None) or open_files(store, dict(storage_options or {}))
    return _Verifier(location, fast, workers or cores()).run()


class _Verifier:
    def __init__(self, files: LocalFiles | RemoteFiles, fast: bool, workers: int):
        self.files = files
        self.fast = fast
        self.workers = workers
        self.report = VerifyReport(files.label, fast)
        self.expected: set[str] = {"tnstore.json", "LOCK", TABLES_CATALOG}
        self.in_progress: list[str] = []  # key prefixes of unfinished runs: not unexpected
        self.lock = threading.Lock()
        self.facts: dict[str, Any] | None = None

    # ---------------------------------------------------------------- problems
    def problem(self, key: str, kind: str, detail: str, unit: str, advice: str) -> None:
        with self.lock:
            self.report.problems.append(Problem(self.files.where(key), kind, detail, unit, advice))

    def run(self) -> VerifyReport:
        t0 = time.perf_counter()
        self.manifest()
        catalog = self.tables()
        runs = self.runs(catalog) if catalog is not None else []
        for run in runs:
            self.run_files(run)
        self.model()
        self.pending()
        if self.files.can_list:
            self.unexpected()
        self.report.seconds = time.perf_counter() - t0
        self.report.problems.sort(key=lambda p: p.file)
        return self.report

    def manifest(self) -> None:
        from tnstore.store.store import _parse_manifest

        key = "tnstore.json"
        try:
            payload = self.files.read(key, 1 << 20)
        except DamagedStoreError as exc:
            self.problem(key, "unsafe", exc.detail, "the manifest", "copy tnstore.json again from the original store")
            return
        if payload is None:
            self.problem(key, "missing", "", "the manifest", "copy tnstore.json again from the original store; "
                         "without it this is not a store")
            return
        self.count(len(payload))
        try:
            self.facts = _parse_manifest(payload, self.files)["model"]
        except TnstoreError as exc:
            detail = exc.detail if isinstance(exc, DamagedStoreError) else str(exc)
            self.problem(key, "damaged", detail.split(": ", 1)[-1], "the manifest",
                         "copy tnstore.json again from the original store")

    def count(self, size: int) -> None:
        with self.lock:
            self.report.files += 1
            self.report.bytes += size

    # ---------------------------------------------------------------- tables
    def tables(self) -> TableCatalog | None:
        payload = self.read_small(TABLES_CATALOG, "the table catalog",
                                  "copy tables/catalog.json again from the original store")
        if payload is None:
            return None
        try:
            catalog = TableCatalog.parse(payload, TABLES_CATALOG)
        except DamagedStoreError as exc:
            self.problem(TABLES_CATALOG, "damaged", exc.detail.split(": ", 1)[-1], "the table catalog",
                         "copy tables/catalog.json again from the original store")
            return None
        jobs = []
        for table in sorted(set(catalog.parts) | {k.split("/", 1)[0] for k in catalog.pending}):
            for name in catalog.names(table):
                key = f"tables/{table}/{name}.parquet"
                try:
                    check_key(key)
                except DamagedStoreError as exc:
                    self.problem(TABLES_CATALOG, "unsafe", exc.detail, f"table {table}",
                                 "the catalog names a file outside the store; do not use this store")
                    continue
                self.expected.add(key)
                pending_only = name not in catalog.parts.get(table, {})
                jobs.append((key, tuple(catalog.accepted(table, name)), f"table {table}", _table_advice(table),
                             pending_only))
        self.check_all(jobs)
        self.catalog = catalog
        return catalog

    def runs(self, catalog: TableCatalog) -> list[dict[str, Any]]:
        """Finished runs from the runs table's parts (those that are sound)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        runs = []
        for name, record in sorted(catalog.parts.get("runs", {}).items()):
            key = f"tables/runs/{name}.parquet"
            if any(p.file == self.files.where(key) for p in self.report.problems):
                # Which runs the damaged part lists is unknown: their files are not reported as unexpected.
                self.in_progress.append("segments/")
                continue
            try:
                data = self.files.read(key, record.size)
                table = pq.read_table(pa.BufferReader(data), columns=["run_id", "row_start", "row_end", "command"])
            except (TnstoreError, pa.ArrowException, OSError, TypeError):
                continue
            for row in table.to_pylist():
                try:
                    check_key(str(row["run_id"]))
                except DamagedStoreError as exc:
                    self.problem(key, "unsafe", exc.detail, "table runs",
                                 "a run id names a path outside the store; do not use this store")
                    continue
                runs.append(row)
        return runs

    # ---------------------------------------------------------------- runs and model arrays
    def run_files(self, run: dict[str, Any]) -> None:
        run_id = run["run_id"]
        unit = f"run {run_id}"
        advice = (f"copy the file again from the original store, or capture the run again with its recorded "
                  f"command: {_printable(run.get('command') or '(none recorded)')}")
        catalog = self.file_catalog(run_catalog_key(run_id), unit, advice)
        if catalog is None:
            return
        self.group_files(f"segments/{run_id}.zarr", catalog, unit, advice,
                         rows=(run.get("row_end") or 0) - (run.get("row_start") or 0))

    def model(self) -> None:
        if not self.files.size(MODEL_CATALOG) and not self.files.size("model/weights.zarr/zarr.json") \
                and not self.catalog_has_runs():
            return  # a store with no capture yet has no model arrays
        advice = "copy the model folder again from the original store (or capture with the same model again)"
        catalog = self.file_catalog(MODEL_CATALOG, "the model arrays", advice)
        if catalog is not None:
            self.group_files("model/weights.zarr", catalog, "the model arrays", advice)

    def catalog_has_runs(self) -> bool:
        return bool(getattr(self, "catalog", None) and self.catalog.parts.get("runs"))

    def file_catalog(self, key: str, unit: str, advice: str) -> FileCatalog | None:
        payload = self.read_small(key, unit, advice)
        if payload is None:
            return None
        try:
            return FileCatalog.parse(payload, key)
        except DamagedStoreError as exc:
            self.problem(key, "damaged", exc.detail.split(": ", 1)[-1], unit, advice)
            return None

    def group_files(self, prefix: str, catalog: FileCatalog, unit: str, advice: str, rows: int | None = None) -> None:
        """Every file a group's catalog lists, and that it lists every chunk of every array it describes."""
        jobs = []
        for rel, record in sorted(catalog.files.items()):
            key = f"{prefix}/{rel}"
            try:
                check_key(key)
            except DamagedStoreError as exc:
                self.problem(prefix, "unsafe", exc.detail, unit, "its catalog names a file outside the store; do "
                             "not use this store")
                continue
            self.expected.add(key)
            jobs.append((key, (record,), unit, advice, False))
        self.check_all(jobs)
        for rel in sorted(k for k in catalog.files if k.endswith("/zarr.json")):
            array = rel[: -len("/zarr.json")]
            key = f"{prefix}/{rel}"
            if any(p.file == self.files.where(key) for p in self.report.problems):
                continue
            try:
                payload = self.files.read(key, MAX_META_BYTES)
                layout = array_layout(payload or b"", self.files.where(key))
            except TnstoreError as exc:
                detail = exc.detail if isinstance(exc, DamagedStoreError) else str(exc)
                self.problem(key, "damaged", detail.split(": ", 1)[-1], unit, advice)
                continue
            if rows is not None and layout.shape[0] != rows:
                self.problem(key, "damaged", f"{layout.shape[0]} rows, the run has {rows}", unit, advice)
            grid = _grid(layout.shape, layout.chunks)
            absent = [g for g in grid if f"{array}/{g}" not in catalog.files]
            if absent:
                self.problem(f"{prefix}/{array}", "incomplete", f"its catalog lacks {len(absent)} of {len(grid)} "
                             f"chunks, e.g. {absent[0]}", unit, "the run was not captured whole; capture it again")

    # ---------------------------------------------------------------- file checks
    def read_small(self, key: str, unit: str, advice: str) -> bytes | None:
        self.expected.add(key)
        try:
            payload = self.files.read(key, 256 << 20)
        except DamagedStoreError as exc:
            self.problem(key, "unsafe", exc.detail, unit, advice)
            return None
        except TnstoreError as exc:
            self.problem(key, "unreadable", str(exc), unit, advice)
            return None
        if payload is None:
            self.problem(key, "missing", "", unit, advice)
            return None
        self.count(len(payload))
        return payload

    def check_all(self, jobs: list[tuple[str, tuple[FileRecord, ...], str, str, bool]]) -> None:
        if self.files.remote and not self.fast:
            self.check_remote(jobs)
            return
        if self.workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(lambda job: self.check_one(*job), jobs))
        else:
            for job in jobs:
                self.check_one(*job)

    def check_one(self, key: str, accepted: tuple[FileRecord, ...], unit: str, advice: str,
                  pending_only: bool) -> None:
        try:
            size = self.files.size(key)
        except DamagedStoreError as exc:
            self.problem(key, "unsafe", exc.detail.split(": ", 1)[-1], unit, "replace the link with the file itself")
            return
        except TnstoreError as exc:
            self.problem(key, "unreadable", str(exc), unit, advice)
            return
        if size is None:
            if not pending_only:
                self.problem(key, "missing", "", unit, advice)
            return
        sizes = sorted({r.size for r in accepted})
        if size not in sizes:
            kind = "truncated" if size < max(sizes) else "damaged"
            self.problem(key, kind, f"{size} of {sizes[-1]} bytes", unit, advice)
            return
        if self.fast:
            self.count(size)
            return
        found = _hash_local(self.files, key) if isinstance(self.files, LocalFiles) else None
        self.count(size)
        if found is not None and not any(r.xxh3 == found and r.size == size for r in accepted):
            self.problem(key, "corrupt", "checksum mismatch", unit, advice)

    def check_remote(self, jobs: list[tuple[str, tuple[FileRecord, ...], str, str, bool]]) -> None:
        from tnstore.store.integrity import digest

        batch = max(1, 64 // max(1, len(jobs) // 1000 + 1))
        for start in range(0, len(jobs), batch):
            group = jobs[start:start + batch]
            try:
                datas = self.files.read_many([j[0] for j in group], max(r.size for j in group for r in j[1]),
                                             [max(r.size for r in j[1]) for j in group])
            except TnstoreError as exc:
                for key, _, unit, advice, _ in group:
                    self.problem(key, "unreadable", str(exc), unit, advice)
                continue
            for (key, accepted, unit, advice, pending_only), data in zip(group, datas):
                if data is None:
                    if not pending_only:
                        self.problem(key, "missing", "", unit, advice)
                    continue
                self.count(len(data))
                sizes = sorted({r.size for r in accepted})
                if len(data) not in sizes:
                    kind = "truncated" if len(data) < max(sizes) else "damaged"
                    self.problem(key, kind, f"{len(data)} of {sizes[-1]} bytes", unit, advice)
                elif not any(r.xxh3 == digest(data) for r in accepted):
                    self.problem(key, "corrupt", "checksum mismatch", unit, advice)

    # ---------------------------------------------------------------- unfinished runs, stray files
    def pending(self) -> None:
        if self.files.remote:
            return
        for key, kind in sorted(self.files.listing("journal")):
            name = key.rsplit("/", 1)[-1]
            if kind != "file" or not name.endswith(".json") or name.startswith("."):
                continue
            run_id = name[: -len(".json")]
            self.expected.add(key)
            self.in_progress.append(f"segments/{run_id}.zarr/")
            self.report.pending.append(f"run {run_id} is an unfinished capture ({key}); run the same capture "
                                       "command again to resume it")

    def unexpected(self) -> None:
        for key, kind in sorted(self.files.listing("")):
            if key in self.expected or any(key.startswith(p) for p in self.in_progress):
                continue
            if kind == "link":
                self.problem(key, "unsafe", "a symbolic link", "not part of the store",
                             "tnstore does not follow links inside a store; replace it with the file or delete it")
            elif key.rsplit("/", 1)[-1].startswith(".") and ".tmp-" in key:
                self.problem(key, "unexpected", "a temp file of an interrupted write", "not part of the store",
                             "delete it (the next write to the store also removes it)")
            else:
                self.problem(key, "unexpected", "no catalog lists it", "not part of the store",
                             "delete it, or copy the store again if it came with it")


def _hash_local(files: LocalFiles, key: str) -> str | None:
    """XXH3-64 of a local file, read in blocks into a reused buffer (no mapping: page faults would run with the
    GIL held inside the hash; reads release it, so several threads keep the disk busy)."""
    fd = files.open_fd(key)
    if fd is None:
        return None
    state = xxhash.xxh3_64()
    buffer = _buffers.get()
    view = memoryview(buffer)
    try:
        while True:
            n = os.readv(fd, [buffer])
            if not n:
                break
            state.update(view[:n])
    finally:
        os.close(fd)
    return state.hexdigest()


class _Buffers(threading.local):
    def get(self) -> bytearray:
        if not hasattr(self, "buffer"):
            self.buffer = bytearray(READ_BLOCK)
        return self.buffer


_buffers = _Buffers()


def _grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[str]:
    """Keys (relative to the array folder) of every chunk of a regular grid, first two axes chunked."""
    rows, cols = -(-shape[0] // chunks[0]), -(-shape[1] // chunks[1])
    tail = "/0" * (len(shape) - 2)
    return [f"c/{r}/{c}{tail}" for r in range(rows) for c in range(cols)]


def _table_advice(table: str) -> str:
    if table in ("runs", "sentences", "model"):
        return "copy the file again from the original store (it is part of the captured data)"
    return "copy the file again from the original store, or run the analysis that wrote it again"


def _printable(text: str) -> str:
    """Stored text shown to a person: control characters escaped, so it cannot drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))[:500]


def render(report: VerifyReport) -> str:
    """The lines `tnstore verify` prints: one per problem, then the pending runs and a summary."""
    lines = [p.line() for p in report.problems] + report.pending + [report.summary()]
    return "\n".join(lines)

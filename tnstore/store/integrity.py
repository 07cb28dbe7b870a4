"""Checksums and catalogs: what lets a reader tell a sound store from a damaged or partial copy.

Every file a store holds is listed, with its size and checksum, in a catalog written when the file is written:
    tables/catalog.json              every table part (size, xxh3, row count)
    segments/<run_id>.catalog.json   every file of a run's Zarr group (metadata and chunks)
    model/weights.catalog.json       every file of the per-model arrays
so a reader checks what it reads, `verify` checks everything, and a server that cannot list folders still serves
a store (a reader learns every file name from a catalog). JSON metadata (the manifest, catalogs, journals)
carries the checksum of its own canonical text under "xxh3", so a damaged byte in one is found too.

The checksum is xxHash's XXH3-64 (python-xxhash): 40+ GB/s on one core here against 15-20 for CRC32C and 2-3
for BLAKE3 (bench/bench_sharing.py measures them), so checking a chunk costs a small fraction of decompressing it.
It guards against damage (a truncated copy, a flipped bit, a lost write), not against someone forging a store:
untrusted stores are handled by never reading outside the store and never executing stored text (files.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import xxhash

from tnstore.errors import DamagedStoreError

HASH_NAME = "xxh3_64"
SEAL = "xxh3"  # the key under which a JSON file keeps the checksum of the rest of itself


def digest(data) -> str:
    """XXH3-64 of a bytes-like object (bytes, memoryview, mmap, contiguous numpy array), as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


@dataclass(frozen=True)
class FileRecord:
    """What a catalog knows of one file: its size in bytes and XXH3-64; `rows` for table parts."""

    size: int
    xxh3: str
    rows: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "xxh3": self.xxh3}
        if self.rows is not None:
            out["rows"] = self.rows
        return out

    @classmethod
    def from_json(cls, value: Any, where: str) -> "FileRecord":
        """A record from untrusted JSON: exact types, sane bounds, or DamagedStoreError naming `where`."""
        if not isinstance(value, dict):
            raise DamagedStoreError(f"{where}: a file record is not an object")
        size, xxh3, rows = value.get("size"), value.get("xxh3"), value.get("rows")
        if not (type(size) is int and 0 <= size < 1 << 48 and isinstance(xxh3, str) and len(xxh3) == 16
                and all(c in "0123456789abcdef" for c in xxh3)
                and (rows is None or type(rows) is int and 0 <= rows < 1 << 48)):
            raise DamagedStoreError(f"{where}: a file record is malformed")
        return cls(size, xxh3, rows)

    @classmethod
    def of(cls, data, rows: int | None = None) -> "FileRecord":
        return cls(len(memoryview(data).cast("B")), digest(data), rows)


# ------------------------------------------------------------------------------------------------ sealed JSON
def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal(obj: Mapping[str, Any]) -> bytes:
    """`obj` as indented JSON with the checksum of its canonical form under "xxh3"."""
    body = {k: v for k, v in obj.items() if k != SEAL}
    return json.dumps({**body, SEAL: digest(_canonical(body))}, indent=1, ensure_ascii=False).encode("utf-8")


def unseal(payload: bytes, where: str, required: bool = True) -> dict[str, Any]:
    """Parse a sealed JSON file and check its checksum; DamagedStoreError naming `where` if it does not hold.

    `required` False accepts a file without a seal (none is ever written without one; a caller that checks the
    format version first uses this so an older store gets the version message, not "damaged").
    """
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DamagedStoreError(f"{where} is not valid JSON (truncated or damaged)") from None
    if not isinstance(obj, dict):
        raise DamagedStoreError(f"{where} is not a JSON object")
    stored = obj.pop(SEAL, None)
    if stored is None and not required:
        return obj
    if stored != digest(_canonical(obj)):
        raise DamagedStoreError(f"{where} does not match its checksum (damaged)")
    return obj


def records(value: Any, where: str) -> dict[str, FileRecord]:
    """{key: FileRecord} from an untrusted JSON object (keys are checked where they are used, by files.py)."""
    if not isinstance(value, dict):
        raise DamagedStoreError(f"{where}: the file list is not an object")
    return {str(key): FileRecord.from_json(rec, f"{where} ({key})") for key, rec in value.items()}


# ------------------------------------------------------------------------------------------------ catalogs
TABLES_CATALOG = "tables/catalog.json"
TABLES_FORMAT = "tnstore-tables-catalog"
FILES_FORMAT = "tnstore-file-catalog"


def run_catalog_key(run_id: str) -> str:
    return f"segments/{run_id}.catalog.json"


MODEL_CATALOG = "model/weights.catalog.json"


@dataclass
class TableCatalog:
    """The parts of every table: {table: {part: FileRecord}}, and `pending`: parts a writer is replacing right
    now ({"table/part": FileRecord} of the new file), so a reader accepts either version while the rename happens
    and a writer that died half-way is rolled forward or back by the next one (Store.writing)."""

    parts: dict[str, dict[str, FileRecord]]
    pending: dict[str, FileRecord]

    @classmethod
    def empty(cls) -> "TableCatalog":
        return cls({}, {})

    @classmethod
    def parse(cls, payload: bytes, where: str) -> "TableCatalog":
        obj = unseal(payload, where)
        if obj.get("format") != TABLES_FORMAT or not isinstance(obj.get("parts"), dict):
            raise DamagedStoreError(f"{where} is not a tnstore table catalog")
        parts = {str(t): records(p, f"{where} [{t}]") for t, p in obj["parts"].items()}
        return cls(parts, records(obj.get("pending", {}), f"{where} [pending]"))

    def dump(self) -> bytes:
        return seal({"format": TABLES_FORMAT, "checksum": HASH_NAME,
                     "parts": {t: {p: r.to_json() for p, r in sorted(ps.items())}
                               for t, ps in sorted(self.parts.items())},
                     "pending": {k: r.to_json() for k, r in sorted(self.pending.items())}})

    def accepted(self, table: str, part: str) -> list[FileRecord]:
        """The versions of a part a reader may find on disk: the committed one and a pending one."""
        out = []
        if part in self.parts.get(table, {}):
            out.append(self.parts[table][part])
        if f"{table}/{part}" in self.pending:
            out.append(self.pending[f"{table}/{part}"])
        return out

    def names(self, table: str) -> list[str]:
        """Part names of a table, committed or pending, sorted."""
        pending = [k.split("/", 1)[1] for k in self.pending if k.split("/", 1)[0] == table]
        return sorted(set(self.parts.get(table, {})) | set(pending))


@dataclass
class FileCatalog:
    """Every file of one Zarr group (a run's segment or the model arrays): {key relative to the group: record}."""

    files: dict[str, FileRecord]
    info: dict[str, Any]

    @classmethod
    def parse(cls, payload: bytes, where: str) -> "FileCatalog":
        obj = unseal(payload, where)
        if obj.get("format") != FILES_FORMAT:
            raise DamagedStoreError(f"{where} is not a tnstore file catalog")
        info = obj.get("info", {})
        if not isinstance(info, dict):
            raise DamagedStoreError(f"{where}: info is not an object")
        return cls(records(obj.get("files"), where), info)

    def dump(self) -> bytes:
        return seal({"format": FILES_FORMAT, "checksum": HASH_NAME, "info": self.info,
                     "files": {k: r.to_json() for k, r in sorted(self.files.items())}})

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.files.values())

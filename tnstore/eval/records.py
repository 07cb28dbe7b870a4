"""Reading JSONL data files (plain or gzip) with errors that name the file and line."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from tnstore.errors import ArgumentError, TnstoreError


def jsonl_records(path: str | Path, arg: str = "data") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of every non-blank line of a .jsonl or .jsonl.gz file; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(arg, f"{{arg}} {path}: no such file")
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise TnstoreError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise TnstoreError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
                yield number, record
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TnstoreError(f"{path}: cannot read ({exc}); expected UTF-8 JSON lines, optionally gzip-compressed") from None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"

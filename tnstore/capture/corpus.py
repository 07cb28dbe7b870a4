"""Read a sentence corpus (JSONL, CSV or Parquet) into the rows of the `sentences` table.

Accepted shapes:
    parallel pairs   id?, en, <L2>           -> both sides, linked by pair_id, kind parallel (or --kind nonparallel)
    multi-parallel   id?, en, ja, nl, ...     -> every language column, one pair_id per line
    mono             id?, <lang>              -> kind mono
    long             lang, text, pair_id?, kind?
Language columns are ISO 639-1 codes, optionally with a region/script suffix (pt-BR, zh_Hans).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tnstore.errors import ArgumentError, TnstoreError

_ISO639_1 = set(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el "
    "en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu "
    "ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na "
    "nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so "
    "sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu".split()
)
_LANG_COLUMN = re.compile(r"^([a-z]{2})(?:[-_][A-Za-z0-9]{2,8})?$")
_KINDS = ("parallel", "nonparallel", "mono")


@dataclass(frozen=True)
class Corpus:
    """Sentences in corpus order, plus what identifies the input."""

    path: Path
    sha256: str
    langs: tuple[str, ...]
    rows: list[dict[str, Any]]  # lang, text, pair_id, kind, source, source_line


def is_lang_column(name: str) -> bool:
    match = _LANG_COLUMN.match(name)
    return bool(match) and match.group(1) in _ISO639_1


def load_corpus(path: str | Path, kind: str | None = None, limit: int | None = None) -> Corpus:
    """Read and validate a corpus file; `limit` keeps the first N records in file order."""
    path = Path(path)
    if kind is not None and kind not in _KINDS:
        raise ArgumentError("kind", f"{{arg}} {kind!r} is not one of {', '.join(_KINDS)}")
    if limit is not None and limit < 1:
        raise ArgumentError("limit", f"{{arg}} must be at least 1, got {limit}")
    if not path.is_file():
        raise TnstoreError(f"corpus {path} does not exist; pass a JSONL, CSV or Parquet file")
    payload = path.read_bytes()
    records = _read_records(path, payload)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise TnstoreError(f"corpus {path} has no records")
    columns = list(records[0][1])
    rows = _to_sentence_rows(path, records, columns, kind)
    langs = tuple(dict.fromkeys(r["lang"] for r in rows))
    return Corpus(path=path, sha256=hashlib.sha256(payload).hexdigest(), langs=langs, rows=rows)


def _read_records(path: Path, payload: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line or row number, record) pairs."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            table = pq.read_table(io.BytesIO(payload))
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise TnstoreError(f"corpus {path} is not a readable Parquet file ({exc})") from None
        return [(i + 1, rec) for i, rec in enumerate(table.to_pylist())]
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = payload[: exc.start].count(b"\n") + 1
        raise TnstoreError(f"corpus {path} line {line} is not valid UTF-8; re-encode the file as UTF-8") from None
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [(i + 2, dict(rec)) for i, rec in enumerate(reader)]
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path, text)
    raise TnstoreError(f"corpus {path}: unknown file type {suffix!r}; use .jsonl, .csv or .parquet")


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            raise TnstoreError(f"corpus {path} line {number} is empty; remove blank lines")
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TnstoreError(f"corpus {path} line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise TnstoreError(f"corpus {path} line {number} is not a JSON object")
        records.append((number, rec))
    return records


def _to_sentence_rows(
    path: Path, records: list[tuple[int, dict[str, Any]]], columns: list[str], kind: str | None
) -> list[dict[str, Any]]:
    if "text" in columns or "lang" in columns:
        return _long_rows(path, records, kind)
    unknown = [c for c in columns if c not in ("id", "pair_id") and not is_lang_column(c)]
    # "id" is also Indonesian's code; as a column it is always the record id (write Indonesian as id-ID).
    lang_columns = [c for c in columns if c not in ("id", "pair_id") and is_lang_column(c)]
    if unknown or not lang_columns:
        raise TnstoreError(
            f"corpus {path}: unknown columns {unknown or columns}; expected language-code columns "
            "(en, ja, ...) with an optional id, or lang/text[/pair_id]"
        )
    if kind is None:
        kind = "mono" if len(lang_columns) == 1 else "parallel"
    if kind != "mono" and len(lang_columns) < 2:
        raise ArgumentError("kind", f"corpus {path}: {{arg}} {kind} needs at least two language columns")
    id_column = "pair_id" if "pair_id" in columns else "id" if "id" in columns else None
    stem = path.name.split(".jsonl")[0].split(".csv")[0].split(".parquet")[0]
    by_lang: dict[str, list[dict[str, Any]]] = {lang: [] for lang in lang_columns}
    seen = set()
    for number, rec in records:
        if set(rec) != set(columns):
            raise TnstoreError(f"corpus {path} line {number} has columns {sorted(rec)}, the first line has {sorted(columns)}")
        local_id = str(rec[id_column]) if id_column else str(number)
        if local_id in seen:
            raise TnstoreError(f"corpus {path} line {number}: duplicate {id_column} {local_id!r}; ids must be unique")
        seen.add(local_id)
        pair_id = f"{stem}:{local_id}"
        for lang in lang_columns:
            by_lang[lang].append(_row(path, number, lang, rec[lang], pair_id, kind))
    return [row for lang in lang_columns for row in by_lang[lang]]


def _long_rows(path: Path, records: list[tuple[int, dict[str, Any]]], kind: str | None) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for number, rec in records:
        extra = set(rec) - {"lang", "text", "pair_id", "kind", "id"}
        if extra or "lang" not in rec or "text" not in rec:
            raise TnstoreError(
                f"corpus {path} line {number}: a long corpus has columns lang, text and optional pair_id, kind, id; "
                f"got {sorted(rec)}"
            )
        lang = str(rec["lang"])
        if not is_lang_column(lang):
            raise TnstoreError(f"corpus {path} line {number}: lang {lang!r} is not an ISO 639-1 code")
        pair_id = None if rec.get("pair_id") in (None, "") else str(rec["pair_id"])
        if pair_id is not None:
            if (pair_id, lang) in seen:
                raise TnstoreError(f"corpus {path} line {number}: duplicate pair_id {pair_id!r} for lang {lang}")
            seen.add((pair_id, lang))
        row_kind = kind or rec.get("kind") or ("parallel" if pair_id is not None else "mono")
        if row_kind not in _KINDS:
            raise TnstoreError(f"corpus {path} line {number}: kind {row_kind!r} is not one of {', '.join(_KINDS)}")
        rows.append(_row(path, number, lang, rec["text"], pair_id, row_kind))
    return _language_major(rows)


def _language_major(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by language in order of first appearance, file order within a language.

    Why: most reads select one language (a detection scores the L2 rows; a language's centroid), and a
    language's rows then fill whole chunks instead of sharing every chunk with the other languages.
    """
    first_seen = {lang: k for k, lang in reversed(list(enumerate(row["lang"] for row in rows)))}
    return sorted(rows, key=lambda row: first_seen[row["lang"]])


def _row(path: Path, number: int, lang: str, text: Any, pair_id: str | None, kind: str) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        raise TnstoreError(f"corpus {path} line {number}: the {lang} text is empty or not a string")
    return {"lang": lang, "text": text, "pair_id": pair_id, "kind": kind, "source": path.name, "source_line": number}

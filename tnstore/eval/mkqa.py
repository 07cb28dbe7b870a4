"""MKQA's release format (Longpre et al. 2021): one JSON object a line, optionally gzip-compressed:

    {"example_id": 563260143484355911, "query": "<English query>",
     "queries": {"en": "...", "ja": "...", ...},
     "answers": {"en": [{"type": "entity", "text": "Dave Edmunds", "aliases": [...]}, ...], "ja": [...], ...}}

Answer types: entity, long_answer, unanswerable, date, number, number_with_unit, short_phrase, binary. The gold
answers of a question in language L are L's answer texts (None read as "") plus their aliases, deduplicated, as
the official evaluation builds them; a binary answer's text is "yes" or "no".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.eval.records import file_sha256, jsonl_records
from tnstore.eval.scoring import MKQA_LANGS, Prediction

SKIPPED_TYPES = ("long_answer", "unanswerable")
# The authors' prompt labels (method §10): "{query}? " + label, no chat template.
QA_LABELS = {"en": "Answer: ", "ja": "答え: ", "nl": "Antwoord: ", "ko": "답변: ", "it": "Risposta: "}


@dataclass(frozen=True)
class QaItem:
    """One MKQA question in one language."""

    example_id: str
    lang: str
    query: str
    golds: tuple[str, ...]  # answer texts and aliases, deduplicated, sorted
    answer_types: tuple[str, ...]  # this language's answer types, sorted
    en_types: tuple[str, ...]  # the English answer types (what the skip rule reads)

    @property
    def answerable(self) -> bool:
        return self.golds != ("",)


@dataclass(frozen=True)
class QaData:
    path: str
    sha256: str
    items: dict[str, list[QaItem]]  # lang -> questions in file order
    n_records: int
    n_skipped: int  # per language: records left out by the skip rule


def check_lang(lang: str, arg: str = "langs") -> str:
    if lang not in MKQA_LANGS:
        raise ArgumentError(arg, f"{{arg}}: unknown language code {lang!r}; MKQA's codes are {', '.join(MKQA_LANGS)}")
    return lang


def default_template(lang: str) -> str:
    """The authors' prompt for `lang`: "{query}? " + the language's answer label."""
    if lang not in QA_LABELS:
        raise ArgumentError("template", f"no default prompt label for language {lang!r} (there are labels for "
                                        f"{', '.join(QA_LABELS)}); pass {{arg}} with a {{query}} placeholder")
    return "{query}? " + QA_LABELS[lang]


def read_mkqa(path: str | Path, langs: list[str], keep_all: bool = False, limit: int | None = None) -> QaData:
    """The questions of `langs` in an MKQA release file, in file order.

    Questions whose English answer type is long_answer or unanswerable are skipped (the authors' rule) unless
    `keep_all`; `limit` keeps the first N questions left. Errors name the line: a record without `queries` or
    `answers` for a language, an empty answer list, an answer without `type`.
    """
    if not langs:
        raise ArgumentError("langs", "{arg} is empty; name at least one language, e.g. ja")
    for lang in langs:
        check_lang(lang)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ArgumentError("limit", f"{{arg}} must be a positive integer, got {limit!r}")
    path = Path(path)
    items: dict[str, list[QaItem]] = {lang: [] for lang in langs}
    n_records = n_skipped = kept = 0
    seen: set[str] = set()
    for number, record in jsonl_records(path):
        n_records += 1
        where = f"{path} line {number}"
        if "example_id" not in record:
            raise TnstoreError(f"{where}: no example_id; is this MKQA's release format?")
        example_id = str(record["example_id"])
        if example_id in seen:
            raise TnstoreError(f"{where}: example_id {example_id} appears twice")
        seen.add(example_id)
        queries, answers = record.get("queries"), record.get("answers")
        if not isinstance(queries, dict) or not isinstance(answers, dict):
            raise TnstoreError(f"{where}: needs `queries` and `answers` objects keyed by language (MKQA's release format)")
        en_types = _types(answers["en"], where, "en") if "en" in answers else None
        parsed = {}
        for lang in langs:
            if lang not in answers:
                raise TnstoreError(f"{where}: no answers for language {lang!r}")
            if not isinstance(queries.get(lang), str) or not queries[lang].strip():
                raise TnstoreError(f"{where}: no query for language {lang!r}")
            types = _types(answers[lang], where, lang)
            parsed[lang] = QaItem(example_id, lang, queries[lang], _golds(answers[lang], where, lang), types,
                                  en_types if en_types is not None else types)
        skip_types = en_types if en_types is not None else parsed[langs[0]].answer_types
        if not keep_all and any(t in SKIPPED_TYPES for t in skip_types):
            n_skipped += 1
            continue
        if limit is not None and kept >= limit:
            continue
        kept += 1
        for lang, item in parsed.items():
            items[lang].append(item)
    if n_records == 0:
        raise TnstoreError(f"{path}: no records")
    return QaData(str(path), file_sha256(path), items, n_records, n_skipped)


def _types(answers: object, where: str, lang: str) -> tuple[str, ...]:
    if not isinstance(answers, list) or not answers:
        raise TnstoreError(f"{where}: answers[{lang!r}] must be a non-empty list of answers")
    types = []
    for answer in answers:
        if not isinstance(answer, dict) or not isinstance(answer.get("type"), str):
            raise TnstoreError(f"{where}: every answer in answers[{lang!r}] needs a `type`")
        types.append(answer["type"])
    return tuple(sorted(set(types)))


def _golds(answers: list, where: str, lang: str) -> tuple[str, ...]:
    golds: set[str] = set()
    for answer in answers:
        text = answer.get("text")
        aliases = answer.get("aliases") or []
        if (text is not None and not isinstance(text, str)) or not isinstance(aliases, list) \
                or not all(isinstance(a, str) for a in aliases):
            raise TnstoreError(f"{where}: answers[{lang!r}]: `text` must be a string or null and `aliases` a list "
                               "of strings")
        golds.add(text or "")
        golds.update(aliases)
    return tuple(sorted(golds))


def read_predictions(path: str | Path) -> list[Prediction]:
    """MKQA's official predictions format: JSON lines with `example_id`, `prediction` (text, "" = no answer),
    `binary_answer` ("yes", "no" or null/"", case-insensitive) and optionally `no_answer_prob`."""
    out: list[Prediction] = []
    seen: set[str] = set()
    for number, record in jsonl_records(path, arg="predictions"):
        where = f"{path} line {number}"
        if "example_id" not in record or "prediction" not in record:
            raise TnstoreError(f"{where}: a prediction needs `example_id` and `prediction` (MKQA's predictions format)")
        text, binary = record["prediction"], record.get("binary_answer")
        if text is not None and not isinstance(text, str):
            raise TnstoreError(f"{where}: `prediction` must be a string or null")
        if binary is not None and (not isinstance(binary, str) or binary.lower() not in ("yes", "no", "")):
            raise TnstoreError(f"{where}: `binary_answer` must be yes, no or null, got {binary!r}")
        prob = record.get("no_answer_prob", 0.0)
        if prob is None:
            prob = 0.0
        if isinstance(prob, bool) or not isinstance(prob, (int, float)):
            raise TnstoreError(f"{where}: `no_answer_prob` must be a number")
        example_id = str(record["example_id"])
        if example_id in seen:
            raise TnstoreError(f"{where}: example_id {example_id} has a second prediction")
        seen.add(example_id)
        out.append(Prediction(example_id, text or "", binary.lower() if binary else None, float(prob)))
    if not out:
        raise TnstoreError(f"{path}: the predictions file is empty")
    return out

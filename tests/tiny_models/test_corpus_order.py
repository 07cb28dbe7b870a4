"""Row order of a capture: grouped by language, file order within each, so a language's rows fill whole chunks."""
from __future__ import annotations

import json

from tests.conftest import MKQA, TATOEBA
from tnstore.capture.corpus import load_corpus


def test_pair_file_rows_are_all_english_then_all_l2_in_file_order():
    corpus = load_corpus(TATOEBA / "en-ja.parallel.train.jsonl", limit=5)
    langs = [row["lang"] for row in corpus.rows]
    assert langs == ["en"] * 5 + ["ja"] * 5
    lines = [row["source_line"] for row in corpus.rows]
    assert lines == [1, 2, 3, 4, 5] * 2
    assert [row["pair_id"] for row in corpus.rows[:5]] == [row["pair_id"] for row in corpus.rows[5:]]


def test_multi_parallel_file_keeps_its_column_order_of_languages():
    corpus = load_corpus(MKQA, limit=3)
    langs = [row["lang"] for row in corpus.rows]
    first = list(dict.fromkeys(langs))
    assert langs == [lang for lang in first for _ in range(3)]


def test_long_file_is_grouped_by_first_appearance_stably(tmp_path):
    records = [{"lang": "ja", "text": "一"}, {"lang": "en", "text": "one"}, {"lang": "ja", "text": "二"},
               {"lang": "ko", "text": "하나"}, {"lang": "en", "text": "two"}]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    rows = load_corpus(path).rows
    assert [(r["lang"], r["text"]) for r in rows] == [("ja", "一"), ("ja", "二"), ("en", "one"), ("en", "two"),
                                                      ("ko", "하나")]

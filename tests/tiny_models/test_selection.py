"""The one selection contract (tnstore.store.selection): defaults without SQL equal DuckDB's reading, a sentence
captured twice counts once everywhere, mixed conditions are refused, and pairs join on pair id and split."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import TATOEBA, capture_into
from tnstore.analysis.detect import detect
from tnstore.errors import ArgumentError
from tnstore.store import selection as S
from tnstore.store.store import Store


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    """en-ja train pairs captured twice (20, then 30 overlapping), 10 test pairs, 8 non-parallel pairs, and a
    replay of 6 pairs with two neurons deactivated."""
    path = tmp_path_factory.mktemp("selection") / "s"
    capture_into(path, TATOEBA / "en-ja.parallel.train.jsonl", "tiny-llama", limit=20)
    capture_into(path, TATOEBA / "en-ja.parallel.train.jsonl", "tiny-llama", limit=30)
    capture_into(path, TATOEBA / "en-ja.parallel.test.jsonl", "tiny-llama", limit=10, split="test")
    capture_into(path, TATOEBA / "en-ja.nonparallel.jsonl", "tiny-llama", limit=8, kind="nonparallel")
    store = Store.open(path)
    with store.writing("test"):
        store.write_rows("neuron_sets", pa.Table.from_pylist([
            {"name": "two", "origin": "test", "like_set_id": None, "seed": None, "match_layers": None, "source": None, "lang": None, "type": None,
             "layer_start": 0, "layer_end": 2, "layer": 1, "neuron": n} for n in (3, 9)]))
    from tnstore.capture.api import capture_corpus

    capture_corpus(store=path, corpus=TATOEBA / "en-ja.parallel.train.jsonl", model="tiny-llama", limit=6, device="cpu",
            storage_dtype="float32", progress=False, ablate="two", chunk_rows=64)
    return path


@pytest.mark.parametrize("default", [S.PLAIN, S.PLAIN_PARALLEL])
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_builtin_defaults_equal_the_sql_route(twice, default, split):
    store = Store.open(twice)
    fast = S.select(store, S.Scope(default, split))
    # the same text, but not the built-in string: DuckDB evaluates it
    slow = S.select(store, S.Scope(f" {default} AND TRUE", split))
    assert fast.table().equals(slow.table())
    assert len(fast) > 0


def test_a_sentence_captured_twice_counts_once(twice):
    store = Store.open(twice)
    sel = S.select(store, S.Scope(S.PLAIN_PARALLEL, "train"))
    assert sel.counts() == {"en": 30, "ja": 30}
    assert S.select(store, S.Scope(S.PLAIN, "train")).counts() == {"en": 38, "ja": 38}  # + 8 non-parallel pairs
    assert sel.rows.tolist() == sorted(sel.rows.tolist())
    first_run = store.query("SELECT row_end FROM runs ORDER BY row_start LIMIT 1").column("row_end")[0].as_py()
    # the lowest row of each sentence: the first run's 20 pairs come from the first run
    assert (sel.rows < first_run).sum() == 40
    pairs = S.pairs(sel, "ja", "parallel")
    assert len(pairs) == 30
    texts = {r["row"]: (r["pair_id"], r["lang"]) for r in store.query("SELECT row, pair_id, lang FROM sentences").to_pylist()}
    assert all(texts[e][0] == texts[j][0] and (texts[e][1], texts[j][1]) == ("en", "ja")
               for e, j in zip(pairs.en_rows, pairs.l2_rows))


def test_mixed_conditions_are_refused_and_one_condition_is_not(twice):
    store = Store.open(twice)
    mixed = S.select(store, S.Scope("TRUE", "train"))
    with pytest.raises(ArgumentError, match="several ablations"):
        S.check_one_condition(mixed)
    with pytest.raises(ArgumentError, match="several ablations"):
        S.pairs(mixed, "ja", "parallel")
    l2_side = S.select(store, S.Scope("lang = 'en' AND ablation IS NULL OR lang = 'ja' AND ablation = 'two'", "train"))
    S.check_one_condition(l2_side)
    assert len(S.pairs(l2_side, "ja", "parallel")) == 6


def test_detect_where_picks_the_sentences(twice):
    store = Store.open(twice)
    plain = detect(store, type=2, lang="ja", top=5)
    assert plain.n_sentences == 30 and plain.settings.analysis_id == "type2_ja_train_cosine_layers3-4"
    some = detect(store, type=2, lang="ja", top=5, where="ablation IS NULL AND source_line <= 10")
    assert some.n_sentences == 10 and some.settings.analysis_id.startswith("type2_ja_train_cosine_layers3-4_where-")
    assert store.query("SELECT DISTINCT where_sql FROM transfer_neurons ORDER BY 1").column(0).to_pylist() == [
        "ablation IS NULL", "ablation IS NULL AND source_line <= 10"]
    replayed = detect(store, type=2, lang="ja", top=5, where="ablation = 'two'")
    assert replayed.n_sentences == 6


def test_eta2_of_a_corpus_captured_twice_equals_once(twice, tmp_path):
    """The statistics count each sentence once: the same numbers as a store that captured it once."""
    from tnstore.analysis.stats import groups

    once = tmp_path / "once"
    capture_into(once, TATOEBA / "en-ja.parallel.train.jsonl", "tiny-llama", limit=30)
    copy = tmp_path / "twice"
    shutil.copytree(twice, copy)
    results = {}
    for name, path in (("once", once), ("twice", copy)):
        groups(path, where="kind = 'parallel' AND ablation IS NULL")
        results[name] = Store.open(path).query(
            "SELECT group_value, layer, neuron, n, shift + sum / n AS mean, sumsq - sum * sum / n AS m2 "
            "FROM group_stats ORDER BY ALL").to_pydict()
    assert results["once"]["n"] == results["twice"]["n"]
    # equal up to capture's batching noise: the twice-captured store keeps its first run's rows of pairs 1-20,
    # captured in other batches than the once-captured store's (float32 sums in another order)
    for column in ("mean", "m2"):
        once, again = np.asarray(results["once"][column]), np.asarray(results["twice"][column])
        np.testing.assert_allclose(again, once, rtol=1e-4, atol=1e-5 * np.abs(once).max())


def test_states_reads_what_the_selection_picks(twice):
    store = Store.open(twice)
    values, rows = store.states("hidden", where="lang = 'ja' AND ablation IS NULL", split="test", layers=[0, 4])
    assert values.shape == (10, 2, 64) and values.dtype == np.float32
    assert rows.column("lang").to_pylist() == ["ja"] * 10
    direct = store.read_rows("hidden", rows.column("row").to_numpy())
    np.testing.assert_array_equal(values, direct[:, [0, 4]])
    one = store.states("mlp_act", where="lang = 'en' AND kind = 'parallel' AND ablation IS NULL", split="train",
                       layers=2)
    assert one.values.shape == (30, 96)
    assert len(store.states("mlp_act", where="lang = 'en'", split="train", layers=2).values) == 30 + 8 + 6
    final = store.states("final_raw", split="test")
    assert final.values.shape == (20, 64)
    with pytest.raises(ArgumentError, match="layers"):
        store.states("hidden", split="test", layers=[5])
    with pytest.raises(ArgumentError, match="array"):
        store.states("logits")
    with pytest.raises(ArgumentError, match="max_bytes"):
        store.states("hidden", split="all", max_bytes=1000)

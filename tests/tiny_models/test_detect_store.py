"""What detection and random baselines write into a store: ids, replace-vs-add, selection rules, shipped SQL."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TATOEBA, capture_into
from tnstore import queries
from tnstore.analysis.detect import detect
from tnstore.analysis.neurons import list_sets, random_baseline
from tnstore.errors import TnstoreError
from tnstore.store.store import Store

DETECT_TABLES = ("centroids", "neuron_scores", "transfer_neurons")


@pytest.fixture()
def store(tiny_store_factory, tmp_path) -> Path:
    """A private copy of a tiny-llama store with en-ja and en-ko train pairs (40 each)."""
    target = tmp_path / "store"
    shutil.copytree(tiny_store_factory("tiny-llama", ("ja", "ko"), 40), target)
    return target


def snapshot(path: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Hash of every file (the writer lock's note excepted), skipping tables named in `skip` (their files, and
    their entries in the table catalog, which lists every part)."""
    out = {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "LOCK" and not any(p.is_relative_to(path / "tables" / t) for t in skip)
    }
    if (path / "tables" / "catalog.json").is_file():
        from tnstore.store.integrity import TableCatalog

        catalog = TableCatalog.parse((path / "tables" / "catalog.json").read_bytes(), "catalog")
        kept = {t: parts for t, parts in catalog.parts.items() if t not in skip}
        out["tables/catalog.json"] = hashlib.sha256(repr(sorted(kept.items())).encode()).hexdigest()
    return out


def parts(path: Path, table: str) -> list[str]:
    return sorted(p.stem for p in (path / "tables" / table).glob("*.parquet"))


def test_detect_writes_three_tables_and_nothing_else(store):
    before = snapshot(store)
    result = detect(store, type=1, lang="ja", top=25)
    assert snapshot(store, skip=DETECT_TABLES) == before
    s = result.settings
    assert (s.analysis_id, s.set_id) == ("type1_ja_train_cosine_layers0-3", "type1_ja_train_cosine_layers0-3_top25")
    assert parts(store, "centroids") == parts(store, "neuron_scores") == [s.analysis_id]
    assert parts(store, "transfer_neurons") == [s.set_id]
    assert (result.n_sentences, result.n_pairs, result.n_candidates) == (40, 40, 3 * 96)


def test_ranking_is_the_top_of_the_scores(store):
    detect(store, type=2, lang="ko", top=30, dist="euclidean")
    db = Store.open(store)
    ranked = db.query("SELECT rank, layer, neuron, score FROM transfer_neurons ORDER BY rank").to_pylist()
    best = db.query("SELECT layer, neuron, score FROM neuron_scores ORDER BY score DESC, layer, neuron LIMIT 30").to_pylist()
    assert [r["rank"] for r in ranked] == list(range(1, 31))
    assert [(r["layer"], r["neuron"], r["score"]) for r in ranked] == [(b["layer"], b["neuron"], b["score"]) for b in best]
    meta = db.query("SELECT DISTINCT lang, type, split, dist, layer_start, layer_end, top FROM transfer_neurons").to_pylist()
    assert meta == [{"lang": "ko", "type": 2, "split": "train", "dist": "euclidean", "layer_start": 3, "layer_end": 4,
                     "top": 30}]


def test_same_settings_replace_other_settings_add(store):
    detect(store, type=1, lang="ja", top=10)
    first = snapshot(store)
    detect(store, type=1, lang="ja", top=10)  # same settings: same parts, same rows
    assert snapshot(store).keys() == first.keys()
    db = Store.open(store)
    counts = lambda: {t: db.query(f"SELECT count(*) AS n FROM {t}").column("n")[0].as_py() for t in DETECT_TABLES}  # noqa: E731
    assert counts() == {"centroids": 3, "neuron_scores": 3 * 96, "transfer_neurons": 10}

    detect(store, type=1, lang="ja", top=20)  # another top: a new ranking, the same analysis (scores replaced)
    assert counts() == {"centroids": 3, "neuron_scores": 3 * 96, "transfer_neurons": 30}
    detect(store, type=1, lang="ja", top=10, dist="euclidean")  # another analysis: everything added
    detect(store, type=2, lang="ko", top=10, layers=range(1, 4))
    assert counts() == {"centroids": 9, "neuron_scores": 9 * 96, "transfer_neurons": 50}
    assert parts(store, "transfer_neurons") == [
        "type1_ja_train_cosine_layers0-3_top10", "type1_ja_train_cosine_layers0-3_top20",
        "type1_ja_train_euclidean_layers0-3_top10", "type2_ko_train_cosine_layers1-4_top10"]
    # the untouched sets kept their bytes
    after = snapshot(store)
    for key in ("tables/transfer_neurons/type1_ja_train_cosine_layers0-3_top10.parquet",):
        assert after[key] == first[key]


def test_rerun_replaces_when_the_data_changed(store, tmp_path):
    detect(store, type=2, lang="ja", top=5)
    capture_into(store, TATOEBA / "en-ja.parallel.train.jsonl", "tiny-llama", limit=60)  # 20 more pairs (40 repeat)
    result = detect(store, type=2, lang="ja", top=5)
    assert result.n_sentences == 60  # pair ids captured twice count once
    db = Store.open(store)
    assert db.query("SELECT DISTINCT n FROM centroids").column("n").to_pylist() == [60]
    assert db.query("SELECT count(*) AS n FROM transfer_neurons").column("n")[0].as_py() == 5


def test_selection_ignores_nonparallel_rows_and_other_languages_pairs(store):
    capture_into(store, TATOEBA / "en-ja.nonparallel.jsonl", "tiny-llama", limit=10, kind="nonparallel")
    result = detect(store, type=1, lang="ja", top=5)
    assert (result.n_sentences, result.n_pairs) == (40, 40)


def test_replayed_captures_do_not_count(store):
    from tnstore.capture.api import capture_corpus

    first = detect(store, type=1, lang="ja", top=20)
    before = Store.open(store).query("SELECT score FROM neuron_scores ORDER BY layer, neuron").column("score").to_numpy()
    capture_corpus(store=store, corpus=TATOEBA / "en-ja.parallel.train.jsonl", model="tiny-llama", limit=50,
                   batch_size=8, device="cpu", storage_dtype="float32", progress=False, ablate=first.settings.set_id)
    db = Store.open(store)
    assert db.query("SELECT count(*) AS n FROM sentences WHERE ablation IS NOT NULL").column("n")[0].as_py() == 100
    again = detect(store, type=1, lang="ja", top=20)
    assert (again.n_sentences, again.n_pairs) == (40, 40)
    after = db.query("SELECT score FROM neuron_scores ORDER BY layer, neuron").column("score").to_numpy()
    np.testing.assert_array_equal(after, before)


def test_split_selects_the_sentences(store):
    capture_into(store, TATOEBA / "en-ja.parallel.test.jsonl", "tiny-llama", limit=12, split="test")
    train = detect(store, type=1, lang="ja", top=5)
    test = detect(store, type=1, lang="ja", top=5, split="test")
    assert (test.n_sentences, test.n_pairs) == (12, 12)
    assert test.settings.analysis_id == "type1_ja_test_cosine_layers0-3"
    db = Store.open(store)
    scores = {s: db.query("SELECT score FROM neuron_scores WHERE split = ? ORDER BY layer, neuron", [s]).column("score")
              .to_numpy() for s in ("train", "test")}
    assert not np.allclose(scores["train"], scores["test"])
    assert train.settings.split == "train"


def test_random_baseline_is_stored_like_its_set(store):
    detect(store, type=1, lang="ja", top=40)
    drawn = random_baseline(store, {"type": 1, "lang": "ja"}, seed=3)
    assert drawn.name == "random_type1_ja_train_cosine_layers0-3_top40_seed3"
    db = Store.open(store)
    rows = db.query("SELECT * FROM neuron_sets WHERE name = ?", [drawn.name]).to_pylist()
    tn = {(r["layer"], r["neuron"]) for r in db.query("SELECT layer, neuron FROM transfer_neurons").to_pylist()}
    picked = {(r["layer"], r["neuron"]) for r in rows}
    assert len(rows) == len(picked) == 40
    assert not picked & tn
    assert all(0 <= layer < 3 for layer, _ in picked)
    assert {(r["origin"], r["like_set_id"], r["seed"], r["lang"], r["type"], r["layer_start"], r["layer_end"])
            for r in rows} == {("random", "type1_ja_train_cosine_layers0-3_top40", 3, "ja", 1, 0, 3)}

    again = random_baseline(store, {"type": "1", "lang": "ja"}, seed=3)  # same name: replaced, same draw
    assert db.query("SELECT count(*) AS n FROM neuron_sets").column("n")[0].as_py() == 40
    assert set(zip(again.layers.tolist(), again.neurons.tolist())) == picked
    other = random_baseline(store, {"type": 1, "lang": "ja"}, seed=4, name="baseline-b")
    assert set(zip(other.layers.tolist(), other.neurons.tolist())) != picked

    listing = {r["name"]: r for r in list_sets(store).to_pylist()}
    assert list_sets(store).pl().height == len(listing)
    assert listing["type1_ja_train_cosine_layers0-3_top40"]["n"] == 40
    assert listing["baseline-b"]["origin"] == "random" and listing["baseline-b"]["seed"] == 4


def test_random_baseline_picks_one_set_or_explains(store):
    detect(store, type=2, lang="ja", top=10)
    detect(store, type=2, lang="ja", top=20)
    with pytest.raises(TnstoreError, match="2 transfer-neuron sets match"):
        random_baseline(store, {"type": 2, "lang": "ja"})
    assert len(random_baseline(store, {"type": 2, "lang": "ja"}, top=20).layers) == 20
    assert len(random_baseline(store, {"type": 2, "lang": "ja", "top": 10, "layers": "3:4"}).layers) == 10
    assert len(random_baseline(store, {"type": 2, "lang": "ja", "top": 10, "layers": range(3, 4)}).layers) == 10
    with pytest.raises(TnstoreError, match="no transfer-neuron set matches"):
        random_baseline(store, {"type": 1, "lang": "ja"})


def test_shipped_queries_answer_their_questions(store):
    for lang in ("ja", "ko"):
        detect(store, type=1, lang=lang, top=50)
    db = Store.open(store)
    assert {"ranking", "distribution", "overlap"} <= set(queries.names())
    edit = lambda name: queries.load(name).replace("1000 AS top", "50 AS top")  # noqa: E731  (as a user edits params)

    ranking = db.query(edit("ranking")).to_pylist()
    assert [r["rank"] for r in ranking] == list(range(1, 51))

    distribution = db.query(edit("distribution")).to_pylist()
    assert [r["layer"] for r in distribution] == [0, 1, 2]  # every candidate layer, empty ones too
    assert sum(r["n"] for r in distribution) == 50
    assert sum(r["pct"] for r in distribution) == pytest.approx(100, abs=0.05)

    overlap = {r["layer"]: r for r in db.query(edit("overlap")).to_pylist()}
    sets = {lang: {(r["layer"], r["neuron"]) for r in db.query(
        "SELECT layer, neuron FROM transfer_neurons WHERE lang = ?", [lang]).to_pylist()} for lang in ("ja", "ko")}
    shared = sets["ja"] & sets["ko"]
    assert (overlap[None]["n_a"], overlap[None]["n_b"], overlap[None]["n_shared"]) == (50, 50, len(shared))
    assert overlap[None]["jaccard"] == pytest.approx(len(shared) / len(sets["ja"] | sets["ko"]), abs=1e-4)
    assert sum(r["n_shared"] for k, r in overlap.items() if k is not None) == len(shared)
    with pytest.raises(TnstoreError, match="no query named"):
        queries.load("nope")

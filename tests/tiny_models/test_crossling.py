"""`tnstore replay cross-lingual` (App. I): cos(C_L2, C_L2 with L1's transfer neurons deactivated) for every
L1 x L2, checked against a numpy computation written here from the raw Zarr arrays and Parquet tables."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.cli_runner import run_cli
from tests.conftest import TATOEBA, capture_into
from tests.stats_helpers import pq_rows
from tests.tiny_models.test_latent_store import raw
from tnstore.analysis.crossling import cross_lingual
from tnstore.analysis.detect import detect
from tnstore.errors import TnstoreError

LANGS = ["ja", "it", "nl"]
N_TEST = 8


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("crossling") / "s"
    for lang in LANGS:
        capture_into(path, TATOEBA / f"en-{lang}.parallel.train.jsonl", "tiny-llama", limit=20)
        capture_into(path, TATOEBA / f"en-{lang}.parallel.test.jsonl", "tiny-llama", limit=N_TEST, split="test")
        detect(path, type=1, lang=lang, top=12)
        detect(path, type=2, lang=lang, top=12)
    return path


@pytest.fixture()
def store_path(base, tmp_path):
    shutil.copytree(base, tmp_path / "s")
    return tmp_path / "s"


def _reference(path, set_id: str, l2: str, index: int, limit: int | None = None) -> tuple[float, int]:
    """Centroids of the plain and the replayed L2 test sentences, paired by pair id, in float64."""
    sentences = pq_rows(path / "tables" / "sentences")
    scope = {r["run_id"]: r["ablation_scope"] for r in pq_rows(path / "tables" / "runs")}
    # A replay's `limit` takes the first sentences in corpus order (a run stores its rows longest first).
    plain = sorted((r["source"], r["source_line"], r["row"], r["pair_id"]) for r in sentences
                   if r["ablation"] is None and r["lang"] == l2 and r["split"] == "test" and r["kind"] == "parallel")
    plain = [(row, pair) for _, _, row, pair in (plain[:limit] if limit else plain)]
    ablated = {r["pair_id"]: r["row"] for r in sentences if r["ablation"] == set_id and r["lang"] == l2
               and scope[r["run_id"]] == "last"}
    hidden = raw(path, "hidden")
    before = hidden[[row for row, _ in plain], index].mean(axis=0)
    after = hidden[[ablated[pair] for _, pair in plain], index].mean(axis=0)
    return float(before @ after / np.linalg.norm(before) / np.linalg.norm(after)), len(plain)


@pytest.mark.parametrize("type_", [1, 2])
def test_matrix_equals_a_numpy_computation_at_the_report_layer(store_path, type_):
    result = cross_lingual(store_path, type=type_, langs=LANGS, device="cpu")
    report = 3 if type_ == 1 else 4  # tiny models: Type-1 candidates 0:3 -> output of layer 3; Type-2 the final one
    rows = result.table_arrow.to_pylist()
    assert len(rows) == len(LANGS) ** 2 and {r["hidden_index"] for r in rows} == {report}
    assert all(r["report_layer"] and r["type"] == type_ and r["split"] == "test" for r in rows)
    for r in rows:
        assert r["set_id"] == result.sets[r["set_lang"]] and r["set_id"].startswith(f"type{type_}_{r['set_lang']}_")
        cosine, n = _reference(store_path, r["set_id"], r["input_lang"], report)
        assert r["n"] == n == N_TEST
        assert r["cosine"] == pytest.approx(cosine, abs=1e-12)
    matrix = result.matrix()
    assert matrix.column_names == ["set_lang", *LANGS]
    same = {l: matrix.column(l).to_pylist()[LANGS.index(l)] for l in LANGS}
    assert all(same[l] == next(r["cosine"] for r in rows if r["set_lang"] == r["input_lang"] == l) for l in LANGS)


def test_every_layer_and_a_limit_reuse_the_replays(store_path, monkeypatch):
    cross_lingual(store_path, type=1, langs=LANGS[:2], device="cpu")
    import tnstore.models.registry as registry

    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("the replays are in the store"))
    every = cross_lingual(store_path, type=1, langs=LANGS[:2], all_layers=True, device="cpu")
    assert every.replay.model is None and every.hidden_indices == list(range(5))
    for r in every.table_arrow.to_pylist():
        assert r["report_layer"] == (r["hidden_index"] == 3)
        assert r["cosine"] == pytest.approx(_reference(store_path, r["set_id"], r["input_lang"], r["hidden_index"])[0],
                                            abs=1e-12)
    zero = [r["cosine"] for r in every.table_arrow.to_pylist() if r["hidden_index"] == 0]
    assert zero == pytest.approx([1.0] * 4)  # embeddings come before any MLP
    few = cross_lingual(store_path, type=1, langs=LANGS[:2], layer=2, limit=5, device="cpu")
    for r in few.table_arrow.to_pylist():
        cosine, n = _reference(store_path, r["set_id"], r["input_lang"], 2, limit=5)
        assert r["n"] == n == 5 and r["cosine"] == pytest.approx(cosine, abs=1e-12)
    stored = {(r["input_lang"], r["set_id"], r["hidden_index"]): r["n"]
              for r in pq_rows(store_path / "tables" / "crossling_deactivation")}
    assert stored[("ja", few.sets["it"], 2)] == 5 and stored[("ja", few.sets["it"], 3)] == N_TEST  # merged


def test_cli_prints_the_matrix_and_refuses_what_it_cannot_do(store_path, capsys, monkeypatch):
    code, out, err = run_cli(monkeypatch, capsys, "replay", "cross-lingual", store_path, "--type", "1", "--langs",
                             "ja,it", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "hidden index 3:" in out and "set_lang" in out and "sentences per input language" in out
    assert "ja 8, it 8" in out and "wrote 4 rows to crossling_deactivation" in out
    for args, message in [
        (("--type", "3"), "--type 3 is not 1 or 2"),
        (("--type", "1", "--layer", "2", "--all-layers"), "--layer and --all-layers exclude each other"),
        (("--type", "1", "--layer", "9"), "--layer 9: a hidden index 0..4"),
        (("--type", "1", "--langs", "ko"), "no transfer-neuron set matches type=1,lang=ko"),
    ]:
        code, _, err = run_cli(monkeypatch, capsys, "replay", "cross-lingual", store_path, *args)
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_several_sets_of_one_language_must_be_narrowed(store_path):
    detect(store_path, type=1, lang="ja", top=5)
    with pytest.raises(TnstoreError, match="2 transfer-neuron sets match"):
        cross_lingual(store_path, type=1, langs=["ja"], device="cpu")
    assert cross_lingual(store_path, type=1, langs=["ja"], top=5, device="cpu").sets["ja"].endswith("_top5")

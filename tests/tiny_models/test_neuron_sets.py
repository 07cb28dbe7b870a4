"""Neuron sets (method §5): random baselines (size, layer distribution, disjoint from the set, seeded, recorded),
and moving sets between stores and people (`neurons import` / `export`), on a synthetic store (no model)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli_runner import run_cli
from tests.stats_helpers import random_neurons, snapshot, write_synthetic_store, write_tn_set
from tnstore.analysis.neurons import draw_random, export_set, import_set, load_set, random_baseline
from tnstore.errors import TnstoreError
from tnstore.models.deactivation import NeuronSet
from tnstore.store.store import Store

N_LAYERS, D_MLP = 6, 100
SET_ID = "type1_ja_train_cosine_layers0-4_top60"


@pytest.fixture()
def store(tmp_path) -> Store:
    s = write_synthetic_store(tmp_path / "s", np.zeros((4, N_LAYERS, D_MLP)), ["en", "ja", "en", "ja"])
    # A set concentrated in its first layers, as Type-1 sets are: a layer-matched baseline must follow it.
    neurons = random_neurons(np.random.default_rng(1), 40, (0, 1), D_MLP) + random_neurons(
        np.random.default_rng(2), 15, (1, 2), D_MLP) + [(3, 5), (3, 9), (2, 0), (2, 99), (1, 99)]
    write_tn_set(s, SET_ID, "ja", 1, list(dict.fromkeys(neurons)), layers=(0, 4))
    return Store.open(s.path)


def _pairs(layers, neurons) -> set[tuple[int, int]]:
    return set(zip(np.asarray(layers).tolist(), np.asarray(neurons).tolist()))


def _set_pairs(store: Store, set_id: str = SET_ID) -> set[tuple[int, int]]:
    got = store.query("SELECT layer, neuron FROM transfer_neurons WHERE set_id = ?", [set_id])
    return _pairs(got.column("layer").to_numpy(), got.column("neuron").to_numpy())


@pytest.mark.parametrize("match_layers", [False, True])
def test_random_baseline_size_layers_disjoint_seeded_and_recorded(store, match_layers):
    tn = _set_pairs(store)
    drawn = random_baseline(store, {"type": 1, "lang": "ja"}, match_layers=match_layers)
    assert drawn.seed == 42  # the authors' default
    assert drawn.name == f"random_{SET_ID}_seed42" + ("_matched" if match_layers else "")
    got = _pairs(drawn.layers, drawn.neurons)
    assert len(got) == len(drawn.layers) == len(tn)  # same size, without replacement
    assert not got & tn  # disjoint from the set
    assert all(0 <= layer < 4 and 0 <= neuron < D_MLP for layer, neuron in got)  # the candidate layers
    per_layer = lambda pairs: np.bincount([layer for layer, _ in pairs], minlength=N_LAYERS).tolist()  # noqa: E731
    if match_layers:
        assert per_layer(got) == per_layer(tn)  # exactly the set's count in every layer
    else:
        assert per_layer(got) != per_layer(tn)  # 40 of 60 in layer 0 would be a striking accident
    rows = store.query("SELECT DISTINCT origin, like_set_id, seed, match_layers, layer_start, layer_end, lang, type "
                       "FROM neuron_sets WHERE name = ?", [drawn.name]).to_pylist()
    assert rows == [{"origin": "random", "like_set_id": SET_ID, "seed": 42, "match_layers": match_layers,
                     "layer_start": 0, "layer_end": 4, "lang": "ja", "type": 1}]
    again = random_baseline(store, SET_ID, match_layers=match_layers, name="again")
    other = random_baseline(store, SET_ID, match_layers=match_layers, seed=7, name="other")
    assert _pairs(again.layers, again.neurons) == got
    assert _pairs(other.layers, other.neurons) != got


def test_layer_matched_draw_is_uniform_within_each_layer():
    tn_layers, tn_neurons = np.array([0, 0, 2]), np.array([1, 2, 0])
    counts = np.zeros((3, 6))
    for seed in range(1500):
        layers, neurons = draw_random(tn_layers, tn_neurons, 0, 3, 6, seed, match_layers=True)
        assert layers.tolist() == [0, 0, 2]
        np.add.at(counts, (layers, neurons), 1)
    assert counts[1].sum() == 0 and counts[0, 1] == counts[0, 2] == counts[2, 0] == 0
    for layer, k in ((0, 2), (2, 1)):
        pool = [n for n in range(6) if counts[layer, n] > 0]
        expected = 1500 * k / len(pool)
        assert len(pool) == 6 - (2 if layer == 0 else 1)
        assert np.abs(counts[layer, pool] - expected).max() < 5 * np.sqrt(expected)
    with pytest.raises(TnstoreError, match="does not fit"):
        draw_random(np.zeros(6, int), np.arange(6), 0, 1, 6, 0, match_layers=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_then_import_round_trips_a_set(store, tmp_path, suffix):
    out = tmp_path / f"ja_tn{suffix}"
    exported = export_set(store, SET_ID, out)
    table = pq.read_table(out) if suffix == ".parquet" else pa.csv.read_csv(out)
    assert table.column_names == ["layer", "neuron", "rank", "score"]
    assert table.column("rank").to_pylist() == list(range(1, exported.n + 1))  # rank order
    other = write_synthetic_store(tmp_path / "other", np.zeros((2, N_LAYERS, D_MLP)), ["en", "ja"])
    imported = import_set(other, out, "paper_ja", lang="ja", type=1)
    assert imported.digest == exported.digest == load_set(store, SET_ID).digest()
    assert load_set(Store.open(other.path), "paper_ja").digest() == exported.digest
    row = other.query("SELECT DISTINCT origin, lang, type, layer_start, layer_end, source FROM neuron_sets").to_pylist()
    assert row == [{"origin": "import", "lang": "ja", "type": 1, "layer_start": 0, "layer_end": 4,
                    "source": str(out.resolve())}]
    # an imported set can have a baseline too, from its layers
    drawn = random_baseline(other, "paper_ja", match_layers=True)
    assert not _pairs(drawn.layers, drawn.neurons) & _pairs(imported.layers, imported.neurons)
    again = export_set(other, "paper_ja", tmp_path / f"again{suffix}")
    assert again.digest == exported.digest and again.origin == "import"


def _write_csv(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("content, message", [
    ("layer,neuron\n0,1\n2,5\n0,1\n", "row 4 repeats (layer 0, neuron 1) of row 2"),
    ("layer,neuron\n0,1\n6,0\n", f"row 3: (layer 6, neuron 0) is outside this model's {N_LAYERS} layers"),
    ("layer,neuron\n0,100\n", f"x {D_MLP} neurons"),
    ("layer,neuron\n-1,3\n", "outside this model"),
    ("layer,neuron\n0,1.5\n", "row 2: neuron 1.5 is not an integer"),
    ("layer,neuron\n0,\n", "row 2: neuron is empty"),
    ("layer,unit\n0,1\n", "has no column neuron"),
    ("layer,neuron\n", "holds no neurons"),
])
def test_import_refuses_bad_files_in_one_line_and_changes_nothing(store, tmp_path, capsys, monkeypatch, content,
                                                                  message):
    path = _write_csv(tmp_path / "bad.csv", content)
    before = snapshot(store.path)
    code, out, err = run_cli(monkeypatch, capsys, "neurons", "import", store.path, path, "--name", "x")
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert snapshot(store.path) == before


@pytest.mark.parametrize("args, message", [
    (("--name", "none"), "means no deactivation"),
    (("--name", SET_ID), "is a transfer-neuron set_id"),
    (("--name", "bad name"), "letters, digits"),
    (("--name", "ok", "--layers", "1:3"), "must lie within 0:6 and hold every layer"),
    (("--name", "ok", "--type", "3"), "--type 3 is not 1 or 2"),
])
def test_import_refuses_bad_names_and_options(store, tmp_path, capsys, monkeypatch, args, message):
    path = _write_csv(tmp_path / "ok.csv", "layer,neuron\n0,1\n2,3\n")
    code, out, err = run_cli(monkeypatch, capsys, "neurons", "import", store.path, path, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_import_keeps_an_existing_name_unless_replace(store, tmp_path, capsys, monkeypatch):
    first = _write_csv(tmp_path / "a.csv", "layer,neuron\n0,1\n2,3\n")
    second = _write_csv(tmp_path / "b.csv", "neuron,layer,note\n7,1,x\n")  # column order free, extras ignored
    code, out, _ = run_cli(monkeypatch, capsys, "neurons", "import", store.path, first, "--name", "mine")
    assert code == 0 and "stored 2 neurons" in out and "per layer 0: 1, 2: 1" in out
    code, _, err = run_cli(monkeypatch, capsys, "neurons", "import", store.path, second, "--name", "mine")
    assert code == 2 and "already a stored neuron set" in err and "--replace" in err
    code, _, err = run_cli(monkeypatch, capsys, "neurons", "import", store.path, second, "--name", "mine", "--replace")
    assert code == 0, err
    assert load_set(Store.open(store.path), "mine").digest() == NeuronSet.from_pairs("m", [1], [7]).digest()
    code, out, err = run_cli(monkeypatch, capsys, "neurons", "export", store.path, "mine", "--out", tmp_path / "m.csv")
    assert code == 0 and "wrote 1 neurons of mine (import" in out, err
    code, _, err = run_cli(monkeypatch, capsys, "neurons", "export", store.path, "nope", "--out", tmp_path / "n.csv")
    assert code == 2 and "no neuron set or transfer-neuron set_id 'nope'" in err
    code, _, err = run_cli(monkeypatch, capsys, "neurons", "export", store.path, "mine", "--out", tmp_path / "m.txt")
    assert code == 2 and "--out" in err and ".csv or .parquet" in err


def test_cli_random_defaults_to_seed_42_and_matches_layers(store, capsys, monkeypatch):
    code, out, err = run_cli(monkeypatch, capsys, "neurons", "random", store.path, "--like", "type=1,lang=ja",
                             "--match-layers", "--name", "rand_ja")
    assert code == 0, err
    assert "seed 42" in out and "the same count in each of its layers" in out and "rand_ja" in out
    code, out, _ = run_cli(monkeypatch, capsys, "neurons", "list", store.path, "--format", "csv")
    assert '"rand_ja","random"' in out and ",42,true" in out

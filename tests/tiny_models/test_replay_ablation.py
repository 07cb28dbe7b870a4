"""The replay runner: capture with neurons deactivated (alpha_i := 0), into the same store (method §5)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.conftest import TATOEBA
from tests.reference import mlp_contribution
from tnstore.capture.api import capture_corpus
from tnstore.errors import TnstoreError
from tnstore.models.registry import load_model
from tnstore.store.store import Store

CORPUS = TATOEBA / "en-nl.parallel.test.jsonl"
ABLATED = {1: [3, 17, 40], 2: [0, 5]}


@pytest.fixture(scope="module")
def replay_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "s"
    common = dict(store=path, corpus=CORPUS, model="tiny-gemma3", limit=6, split="test", device="cpu",
                  storage_dtype="float32", progress=False)
    capture_corpus(**common)
    store = Store.open(path)
    rows = [{"name": "handpicked", "origin": "test", "like_set_id": None, "lang": None, "type": None, "seed": None, "match_layers": None, "source": None, "layer_start": 1,
             "layer_end": 3, "layer": l, "neuron": n} for l, ns in ABLATED.items() for n in ns]
    with store.writing("test"):
        store.write_rows("neuron_sets", pa.Table.from_pylist(rows))
    capture_corpus(**common, ablate="handpicked", ablate_scope="last")
    capture_corpus(**common, ablate="handpicked", ablate_scope="all")
    return Store.open(path)


def _rows(store: Store, ablation: str | None, scope: str | None = None) -> np.ndarray:
    where = "s.ablation IS NULL" if ablation is None else f"s.ablation = '{ablation}' AND r.ablation_scope = '{scope}'"
    table = store.query(f"SELECT s.row FROM sentences s JOIN runs r USING (run_id) WHERE {where} ORDER BY s.row")
    return table.column("row").to_numpy()


def test_replay_appends_runs_marked_with_the_set(replay_store):
    runs = replay_store.query("SELECT ablation, ablation_scope, n_sentences FROM runs ORDER BY row_start").to_pylist()
    assert runs == [
        {"ablation": None, "ablation_scope": None, "n_sentences": 12},
        {"ablation": "handpicked", "ablation_scope": "last", "n_sentences": 12},
        {"ablation": "handpicked", "ablation_scope": "all", "n_sentences": 12},
    ]


@pytest.mark.parametrize("scope", ["last", "all"])
def test_ablated_neurons_are_zero_and_the_rest_follows_from_them(replay_store, scope):
    rows = _rows(replay_store, "handpicked", scope)
    plain_rows = _rows(replay_store, None)
    alpha = replay_store.read_rows("mlp_act", rows)
    out = replay_store.read_rows("mlp_out", rows)
    lm = load_model("tiny-gemma3")
    layers = lm.adapter.layers(lm.model)
    for layer, neurons in ABLATED.items():
        assert np.all(alpha[:, layer, neurons] == 0)
        for i in range(len(rows)):
            np.testing.assert_allclose(out[i, layer], mlp_contribution(layers[layer], alpha[i, layer]), atol=2e-5, rtol=1e-4)
    plain = replay_store.read_rows("hidden", plain_rows)
    ablated = replay_store.read_rows("hidden", rows)
    # Layers before the first ablated one are untouched; the outputs of ablated layers change.
    np.testing.assert_array_equal(ablated[:, :2], plain[:, :2])
    assert np.abs(ablated[:, 2] - plain[:, 2]).max() > 1e-4


def test_last_scope_matches_an_independent_last_position_ablation(replay_store):
    """Reference: run the model with a hook written here that zeroes the same alphas at the final position."""
    rows = _rows(replay_store, "handpicked", "last")
    texts = replay_store.query(f"SELECT text FROM sentences WHERE row IN ({', '.join(map(str, rows))}) ORDER BY row")
    lm = load_model("tiny-gemma3")
    layers = lm.adapter.layers(lm.model)
    stored = replay_store.read_rows("hidden", rows)
    for i, text in enumerate(texts.column("text").to_pylist()):
        handles = []
        for layer, neurons in ABLATED.items():
            def zero_final(module, args, neurons=neurons):
                x = args[0].clone()
                x[:, -1, neurons] = 0
                return (x,)
            handles.append(layers[layer].mlp.down_proj.register_forward_pre_hook(zero_final))
        try:
            with torch.no_grad():
                enc = lm.tokenizer(text, return_tensors="pt")
                hidden = lm.model(**enc, output_hidden_states=True).hidden_states
        finally:
            for h in handles:
                h.remove()
        want = torch.stack([h[0, -1] for h in hidden]).numpy()
        np.testing.assert_allclose(stored[i], want, atol=1e-4, rtol=1e-4)


def test_all_scope_differs_from_last_scope(replay_store):
    last = replay_store.read_rows("hidden", _rows(replay_store, "handpicked", "last"))
    every = replay_store.read_rows("hidden", _rows(replay_store, "handpicked", "all"))
    assert np.abs(last[:, -1] - every[:, -1]).max() > 1e-4


def test_unknown_set_and_scope_are_refused(replay_store):
    with pytest.raises(TnstoreError, match="no neuron set"):
        capture_corpus(store=replay_store.path, corpus=CORPUS, model="tiny-gemma3", limit=2, ablate="nope", progress=False)
    with pytest.raises(TnstoreError, match="ablate_scope"):
        capture_corpus(store=replay_store.path, corpus=CORPUS, model="tiny-gemma3", limit=2, ablate="handpicked",
                       ablate_scope="middle", progress=False)

"""Type-1 detection on smollm2-135m with the first 200 real en-ja training pairs (float32): the fast path's top-1000
set against a slow path written from Eq. 6-9 that forms r + alpha_i v_i explicitly for every sentence and layer."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TATOEBA
from tnstore.analysis.detect import detect
from tnstore.store.store import Store

TOP = 1000


@pytest.fixture(scope="module")
def smollm2_store(tmp_path_factory, shared_data):
    from tnstore.capture.api import capture_corpus

    store = tmp_path_factory.mktemp("smollm2") / "store"
    capture_corpus(store=store, corpus=TATOEBA / "en-ja.parallel.train.jsonl", model="smollm2-135m", limit=200,
                   batch_size=32, device="cpu", dtype="float32", storage_dtype="float32", progress=False)
    return store


def slow_type1_scores(store: Store, layers: range) -> np.ndarray:
    """Eq. 6-9 in float64: a Python loop over layers and sentences, every neuron's r + alpha_i v_i formed explicitly."""
    sentences = store.read_table("sentences").to_pylist()
    ja = [s for s in sentences if s["lang"] == "ja"]
    en_row = {s["pair_id"]: s["row"] for s in sentences if s["lang"] == "en"}
    ja_rows = np.array([s["row"] for s in ja])
    en_rows = np.array([en_row[s["pair_id"]] for s in ja])
    values = np.asarray(store.model_array("down_proj")[:], dtype=np.float64)
    gain = np.asarray(store.model_array("mlp_out_gain")[:], dtype=np.float64)
    scores = np.zeros((len(layers), values.shape[1]))
    for j, layer in enumerate(layers):
        h_en = store.read_rows("hidden", en_rows, layer + 1).astype(np.float64)
        h_ja = store.read_rows("hidden", ja_rows, layer + 1).astype(np.float64)
        centroid = ((h_en + h_ja) / 2).mean(axis=0)  # Eq. 6
        resid = store.read_rows("resid_pre_mlp", ja_rows, layer).astype(np.float64)
        alpha = store.read_rows("mlp_act", ja_rows, layer).astype(np.float64)
        scale = store.read_rows("mlp_out_scale", ja_rows, layer).astype(np.float64)
        value_vectors = values[layer] * gain[layer]
        for k in range(len(ja_rows)):
            r = resid[k]
            moved = r + (alpha[k] * scale[k])[:, None] * value_vectors  # (d_mlp, d): row i is r + alpha_i v_i
            n_cos = moved @ centroid / (np.sqrt(np.einsum("id,id->i", moved, moved)) * np.linalg.norm(centroid))  # Eq. 8
            l_cos = r @ centroid / (np.linalg.norm(r) * np.linalg.norm(centroid))  # Eq. 7
            scores[j] += n_cos - l_cos
        scores[j] /= len(ja_rows)  # Eq. 9
    return scores


@pytest.mark.real_model
def test_fast_and_slow_top1000_agree_on_smollm2(smollm2_store):
    result = detect(smollm2_store, type=1, lang="ja", top=TOP)
    assert (result.n_sentences, result.n_pairs) == (200, 200)
    store = Store.open(smollm2_store)
    layers = range(result.settings.layer_start, result.settings.layer_end)
    assert (layers.start, layers.stop) == (0, 19)  # round(30 * 20 / 32) = 19 of smollm2's 30 layers
    slow = slow_type1_scores(store, layers)
    fast = store.query("SELECT score FROM neuron_scores ORDER BY layer, neuron").column("score").to_numpy()
    assert np.abs(fast - slow.ravel()).max() < 1e-5
    slow_top = set(np.argsort(-slow.ravel(), kind="stable")[:TOP].tolist())
    ranked = store.query("SELECT layer, neuron FROM transfer_neurons ORDER BY rank").to_pylist()
    fast_top = {(r["layer"] - layers.start) * slow.shape[1] + r["neuron"] for r in ranked}
    assert len(fast_top) == TOP
    assert len(fast_top & slow_top) >= 995

"""`detect` against a slow reference written straight from Eq. 5-9 (method §4), on tiny LLaMA and Gemma 3 stores.

The reference selects sentences in plain Python from the sentences table, builds each centroid with an explicit
loop over sentences (pairs), and for every sentence, layer and neuron forms r + a_i v_i explicitly in float64.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tnstore.analysis.detect import default_layers, detect
from tnstore.store.store import Store

TOLERANCE = 1e-5


def reference_scores(store: Store, type_: int, lang: str, layers: range, dist: str, split: str = "train") -> np.ndarray:
    """Score_i^l for l in `layers`, i in 0..d_mlp-1, by loops over layers, sentences and neurons; (len(layers), d_mlp)."""
    sentences = [s for s in store.read_table("sentences").to_pylist() if s["ablation"] is None]
    l2 = [s for s in sentences if s["lang"] == lang and s["split"] == split and s["kind"] != "nonparallel"]
    l2_rows = np.array([s["row"] for s in l2])
    en_by_pair = {s["pair_id"]: s["row"] for s in sentences
                  if s["lang"] == "en" and s["split"] == split and s["kind"] == "parallel"}
    pairs = [(en_by_pair[s["pair_id"]], s["row"]) for s in l2 if s["kind"] == "parallel" and s["pair_id"] in en_by_pair]

    hidden = {row: store.read_rows("hidden", np.array([row]))[0].astype(np.float64)
              for row in set(l2_rows) | {en for en, _ in pairs}}
    resid = store.read_rows("resid_pre_mlp", l2_rows).astype(np.float64)
    alpha = store.read_rows("mlp_act", l2_rows).astype(np.float64)
    scale = store.read_rows("mlp_out_scale", l2_rows).astype(np.float64)
    values = np.asarray(store.model_array("down_proj")[:], dtype=np.float64)
    gain = np.asarray(store.model_array("mlp_out_gain")[:], dtype=np.float64)

    def distance(x: np.ndarray, c: np.ndarray) -> float:
        if dist == "cosine":
            return float(x @ c / (np.linalg.norm(x) * np.linalg.norm(c)))
        return -float(np.linalg.norm(x - c))

    scores = np.zeros((len(layers), values.shape[1]))
    for j, layer in enumerate(layers):
        if type_ == 1:  # Eq. 6: mean over pairs of the pair mean, hidden_states[layer + 1]
            centroid = np.mean([(hidden[en][layer + 1] + hidden[ja][layer + 1]) / 2 for en, ja in pairs], axis=0)
        else:  # Eq. 5
            centroid = np.mean([hidden[row][layer + 1] for row in l2_rows], axis=0)
        for k in range(len(l2_rows)):
            r = resid[k, layer]
            before = distance(r, centroid)  # Eq. 7
            for i in range(values.shape[1]):
                contribution = alpha[k, layer, i] * scale[k, layer] * (gain[layer] * values[layer, i])
                scores[j, i] += distance(r + contribution, centroid) - before  # Eq. 8 minus Eq. 7
        scores[j] /= len(l2_rows)  # Eq. 9
    return scores


@pytest.fixture()
def store_copy(tiny_store_factory, tmp_path):
    def make(model: str) -> Store:
        target = tmp_path / model
        shutil.copytree(tiny_store_factory(model, ("ja",), 40), target)
        return Store.open(target)
    return make


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gemma3"])
@pytest.mark.parametrize("type_", [1, 2])
@pytest.mark.parametrize("dist", ["cosine", "euclidean"])
def test_every_score_matches_the_reference(store_copy, model, type_, dist):
    store = store_copy(model)
    n_layers = store.model_facts["n_layers"]
    for layers in (default_layers(type_, n_layers), (0, n_layers)):
        result = detect(store.path, type=type_, lang="ja", top=10, layers=layers, dist=dist, max_rows=24)
        analysis_id = result.settings.analysis_id
        fast = store.query("SELECT layer, neuron, score FROM neuron_scores WHERE analysis_id = ? ORDER BY layer, neuron",
                         [analysis_id])
        expected = reference_scores(store, type_, "ja", range(*layers), dist)
        assert fast.num_rows == expected.size
        np.testing.assert_array_equal(fast.column("layer").to_numpy(), np.repeat(np.arange(*layers), expected.shape[1]))
        got = fast.column("score").to_numpy().reshape(expected.shape)
        assert np.abs(got - expected).max() < TOLERANCE, (layers, np.abs(got - expected).max())
        # the scores are not trivially tiny: the tolerance is meaningful
        assert np.abs(expected).max() > 100 * TOLERANCE


@pytest.mark.parametrize("type_", [1, 2])
def test_stored_centroids_are_eq5_and_eq6(store_copy, type_):
    store = store_copy("tiny-gemma3")
    detect(store.path, type=type_, lang="ja", top=5, layers=(0, 4))
    rows = store.query("SELECT * FROM centroids ORDER BY layer").to_pylist()
    sentences = store.read_table("sentences").to_pylist()
    ja = [s["row"] for s in sentences if s["lang"] == "ja"]
    en = [s["row"] for s in sentences if s["lang"] == "en"]
    hidden = store.read_rows("hidden", np.arange(store.n_rows())).astype(np.float64)
    for row in rows:
        index = row["layer"] + 1
        assert row["hidden_index"] == index
        if type_ == 1:
            expected = (hidden[en, index].mean(0) + hidden[ja, index].mean(0)) / 2
            assert (row["target"], row["n"]) == ("shared", 40)
        else:
            expected = hidden[ja, index].mean(0)
            assert (row["target"], row["n"]) == ("L2", 40)
        np.testing.assert_allclose(row["centroid"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model", ["tiny-gemma2", "tiny-gemma3", "tiny-llama"])
def test_frozen_norm_terms_sum_to_the_stored_mlp_output(tiny_store_factory, model):
    """alpha_i * s * (gain * v_i) summed over neurons is the MLP's real contribution (Gemma's post-MLP norm held fixed)."""
    store = Store.open(tiny_store_factory(model, ("ja",), 40))
    rows = np.arange(store.n_rows())
    alpha = store.read_rows("mlp_act", rows).astype(np.float64)
    scale = store.read_rows("mlp_out_scale", rows).astype(np.float64)
    mlp_out = store.read_rows("mlp_out", rows).astype(np.float64)
    values = np.asarray(store.model_array("down_proj")[:], dtype=np.float64)
    gain = np.asarray(store.model_array("mlp_out_gain")[:], dtype=np.float64)
    terms_sum = np.einsum("kli,lid->kld", alpha * scale[..., None], values * gain[:, None, :])
    np.testing.assert_allclose(terms_sum, mlp_out, rtol=1e-5, atol=1e-5 * np.abs(mlp_out).max())
    if model.startswith("tiny-gemma"):
        # the norm is real here: without the frozen scale and gain the plain sum would be far off
        plain = np.einsum("kli,lid->kld", alpha, values)
        assert np.abs(plain - mlp_out).max() > 0.1 * np.abs(mlp_out).max()

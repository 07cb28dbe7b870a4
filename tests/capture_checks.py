"""Capture assertions shared by the tiny-model unit tests and the real-model integration tests.

Each takes the loaded model, a store captured from `texts` (rows 0..n-1, float32 storage) and the texts. A run
stores its rows in its own order (by language, longest first), so checks that pair rows with texts read which
text each row holds from the sentences table (`row_texts`).
"""
from __future__ import annotations

import numpy as np
import torch

from tests.reference import gated_activation, mlp_contribution, mlp_input, plain_hidden_states
from tnstore.capture.forward import capture_block, forward_last_token, token_counts

# Batched capture pads on the right; in float32 the batched matmuls differ from single-sentence ones only by
# summation order (observed <= 5e-6 absolute on the tiny models). Tolerances are relative to each array's scale.
BATCH_RTOL = 1e-4


def _close(actual, expected, rtol, what):
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(np.asarray(actual) - np.asarray(expected)).max())
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol:g} x scale {scale:.3g}"


def row_texts(store, texts) -> list[str]:
    """The texts of rows 0..n-1 as the store holds them: the same texts as `texts`, in the run's order."""
    held = store.query("SELECT text FROM sentences ORDER BY row").column("text").to_pylist()
    assert sorted(held) == sorted(texts), "the store holds other sentences than were captured"
    return held


def check_batched_equals_single(lm, texts):
    batched = capture_block(lm, texts, token_counts(lm, texts), batch_size=len(texts))
    for i, text in enumerate(texts):
        single = forward_last_token(lm, [text])
        for name, values in single.items():
            _close(batched[name][i], values[0], BATCH_RTOL, f"{lm.spec} {name} sentence {i}")


def check_hidden_equals_plain_forward(lm, store, texts):
    texts = row_texts(store, texts)
    stored = store.read_rows("hidden", np.arange(len(texts)))
    for i, text in enumerate(texts):
        plain = plain_hidden_states(lm.model, lm.tokenizer, text)
        for h in range(plain.shape[0]):
            _close(stored[i, h], plain[h], BATCH_RTOL, f"{lm.spec} hidden[{h}] sentence {i}")


def check_residual_activation_contribution(lm, store, texts, rtol=1e-4):
    texts = row_texts(store, texts)
    rows = np.arange(len(texts))
    hidden, final_raw = store.read_rows("hidden", rows), store.read_rows("final_raw", rows)
    resid, alpha, out = (store.read_rows(n, rows) for n in ("resid_pre_mlp", "mlp_act", "mlp_out"))
    layers = lm.adapter.layers(lm.model)
    L = len(layers)
    for i in range(len(texts)):
        raw_outputs = np.concatenate([hidden[i, 1:L], final_raw[i][None]])
        for l, layer in enumerate(layers):
            # raw output of layer l == residual before its MLP + the MLP's contribution
            _close(resid[i, l] + out[i, l], raw_outputs[l], rtol, f"{lm.spec} layer {l} resid+out")
            x = mlp_input(layer, lm.adapter.family, resid[i, l], hidden[i, l])
            _close(alpha[i, l], gated_activation(layer, x), rtol, f"{lm.spec} layer {l} alpha")
            _close(out[i, l], mlp_contribution(layer, alpha[i, l]), rtol, f"{lm.spec} layer {l} contribution")


def check_final_norm(lm, store, texts):
    rows = np.arange(len(texts))
    norm = lm.adapter.decoder(lm.model).norm
    with torch.no_grad():
        normed = norm(torch.from_numpy(store.read_rows("final_raw", rows))).numpy()
    _close(store.read_rows("hidden", rows)[:, -1], normed, BATCH_RTOL, f"{lm.spec} final norm")


def check_frozen_norm_terms(lm, store, texts, rtol=1e-4):
    """Per-neuron contributions alpha_i * s * (gain * v_i), with stored s and gain, add up to mlp_out."""
    rows = np.arange(len(texts))
    alpha, scale, out = (store.read_rows(n, rows) for n in ("mlp_act", "mlp_out_scale", "mlp_out"))
    values, gain = store.model_array("down_proj")[...], store.model_array("mlp_out_gain")[...]
    for l in range(values.shape[0]):
        summed = (alpha[:, l] * scale[:, l, None]) @ (values[l] * gain[l])
        _close(summed, out[:, l], rtol, f"{lm.spec} layer {l} frozen-norm sum")
    if lm.adapter.mlp_out_norm is None:
        assert np.all(scale == 1.0) and np.all(gain == 1.0)
    else:
        assert not np.allclose(scale, 1.0)


def check_value_vectors(lm, store):
    for l, layer in enumerate(lm.adapter.layers(lm.model)):
        weight = layer.mlp.down_proj.weight.detach().float().numpy()
        np.testing.assert_array_equal(store.model_array("down_proj")[l, 3], weight[:, 3])


def check_sentences_table(lm, store, texts):
    table = store.query("SELECT row, lang, text, split, n_tokens, source_line FROM sentences ORDER BY row").to_pylist()
    assert [r["row"] for r in table] == list(range(len(texts)))
    assert sorted(r["text"] for r in table) == sorted(texts)
    assert [r["n_tokens"] for r in table] == [len(lm.tokenizer(r["text"]).input_ids) for r in table]
    # The run's order: grouped by language, longest first within each, ties in corpus order.
    langs = [r["lang"] for r in table]
    assert langs == [lang for lang in dict.fromkeys(langs) for _ in range(langs.count(lang))]
    keys = [(langs.index(r["lang"]), -r["n_tokens"], r["source_line"]) for r in table]
    assert keys == sorted(keys)


class CaptureContract:
    """The capture tests, shared: a subclass named Test* provides a `captured` fixture -> (lm, store, texts)."""

    def test_batched_capture_equals_one_sentence_at_a_time(self, captured):
        lm, _, texts = captured
        check_batched_equals_single(lm, texts)

    def test_stored_hidden_states_equal_plain_forward(self, captured):
        check_hidden_equals_plain_forward(*captured)

    def test_residual_activations_and_contributions_match_the_weights(self, captured):
        check_residual_activation_contribution(*captured)

    def test_final_hidden_state_is_final_norm_of_raw_output(self, captured):
        check_final_norm(*captured)

    def test_frozen_norm_neuron_terms_sum_to_the_mlp_contribution(self, captured):
        check_frozen_norm_terms(*captured)

    def test_value_vectors_are_down_proj_columns(self, captured):
        lm, store, _ = captured
        check_value_vectors(lm, store)

    def test_sentences_table_indexes_the_tensors(self, captured):
        check_sentences_table(*captured)

"""Capture correctness on the real packaged models with real Tatoeba sentences (en and ja)."""
from __future__ import annotations

import json

import pytest

from tests import capture_checks as checks
from tests.conftest import TATOEBA, capture_into
from tnstore.models.registry import load_model
from tnstore.store.store import Store

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma-3-270m"])
def real_capture(request, tmp_path_factory, shared_data):
    spec = request.param
    records = [json.loads(line) for line in (TATOEBA / "en-ja.parallel.test.jsonl").read_text("utf-8").splitlines()[:3]]
    texts = [rec[lang] for rec in records for lang in ("en", "ja")]
    corpus = tmp_path_factory.mktemp(spec) / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"lang": "en", "text": t}) + "\n" for t in texts), "utf-8")
    store = capture_into(tmp_path_factory.mktemp(spec) / "store", corpus, spec, batch_size=6)
    return load_model(spec, device="cpu"), Store.open(store), texts


def test_batched_capture_equals_one_sentence_at_a_time(real_capture):
    lm, _, texts = real_capture
    checks.check_batched_equals_single(lm, texts)


def test_stored_hidden_states_equal_plain_forward(real_capture):
    checks.check_hidden_equals_plain_forward(*real_capture)


def test_residual_activations_and_contributions_match_the_weights(real_capture):
    checks.check_residual_activation_contribution(*real_capture)


def test_final_hidden_state_is_final_norm_of_raw_output(real_capture):
    checks.check_final_norm(*real_capture)


def test_frozen_norm_neuron_terms_sum_to_the_mlp_contribution(real_capture):
    checks.check_frozen_norm_terms(*real_capture)


def test_value_vectors_are_down_proj_columns(real_capture):
    lm, store, _ = real_capture
    checks.check_value_vectors(lm, store)

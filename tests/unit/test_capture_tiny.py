"""Capture correctness on a tiny random model of every supported family (method.md §2)."""
from __future__ import annotations

import json

import pytest

from tests import capture_checks as checks
from tests.conftest import capture_into
from tnstore.models.registry import load_model
from tnstore.models.tiny import TINY_FAMILIES
from tnstore.store.store import Store


@pytest.fixture(scope="module")
def demo_texts() -> list[str]:
    from importlib import resources

    lines = resources.files("tnstore.data").joinpath("demo_corpus.jsonl").read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines[:4]]
    return [rec[lang] for rec in records for lang in ("en", "ja", "ko")]


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def tiny_capture(request, tmp_path_factory, demo_texts):
    spec = request.param
    lm = load_model(spec, device="cpu")
    corpus = tmp_path_factory.mktemp(spec) / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"lang": "en", "text": t}) + "\n" for t in demo_texts), "utf-8")
    store = capture_into(tmp_path_factory.mktemp(spec) / "store", corpus, spec, batch_size=5)
    return lm, Store.open(store), demo_texts


def test_batched_capture_equals_one_sentence_at_a_time(tiny_capture):
    lm, _, texts = tiny_capture
    checks.check_batched_equals_single(lm, texts)


def test_stored_hidden_states_equal_plain_forward(tiny_capture):
    checks.check_hidden_equals_plain_forward(*tiny_capture)


def test_residual_activations_and_contributions_match_the_weights(tiny_capture):
    checks.check_residual_activation_contribution(*tiny_capture)


def test_final_hidden_state_is_final_norm_of_raw_output(tiny_capture):
    checks.check_final_norm(*tiny_capture)


def test_frozen_norm_neuron_terms_sum_to_the_mlp_contribution(tiny_capture):
    checks.check_frozen_norm_terms(*tiny_capture)


def test_value_vectors_are_down_proj_columns(tiny_capture):
    lm, store, _ = tiny_capture
    checks.check_value_vectors(lm, store)


def test_sentences_table_indexes_the_tensors(tiny_capture):
    checks.check_sentences_table(*tiny_capture)

"""Capture correctness on the real packaged models with real Tatoeba sentences (en and ja)."""
from __future__ import annotations

import json

import pytest

from tests.capture_checks import CaptureContract
from tests.conftest import TATOEBA, capture_into
from tnstore.models.registry import load_model
from tnstore.store.store import Store

pytestmark = pytest.mark.real_model


class TestRealModelCapture(CaptureContract):
    @pytest.fixture(scope="class", params=["smollm2-135m", "gemma-3-270m"])
    @classmethod
    def captured(cls, request, tmp_path_factory, shared_data):
        spec = request.param
        lines = (TATOEBA / "en-ja.parallel.test.jsonl").read_text("utf-8").splitlines()[:3]
        texts = [json.loads(line)[lang] for line in lines for lang in ("en", "ja")]
        corpus = tmp_path_factory.mktemp(spec) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"lang": "en", "text": t}) + "\n" for t in texts), "utf-8")
        store = capture_into(tmp_path_factory.mktemp(spec) / "store", corpus, spec, batch_size=6)
        return load_model(spec, device="cpu"), Store.open(store), texts

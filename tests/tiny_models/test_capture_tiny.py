"""Capture correctness on a tiny random model of every supported family (method.md §2)."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from tests.capture_checks import CaptureContract
from tests.conftest import capture_into
from tnstore.models.registry import load_model
from tnstore.models.tiny import TINY_FAMILIES
from tnstore.store.store import Store


def demo_texts() -> list[str]:
    lines = resources.files("tnstore.data").joinpath("demo_corpus.jsonl").read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines[:4]]
    return [rec[lang] for rec in records for lang in ("en", "ja", "ko")]


class TestTinyCapture(CaptureContract):
    @pytest.fixture(scope="class", params=sorted(TINY_FAMILIES))
    @classmethod
    def captured(cls, request, tmp_path_factory):
        spec, texts = request.param, demo_texts()
        corpus = tmp_path_factory.mktemp(spec) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"lang": "en", "text": t}) + "\n" for t in texts), "utf-8")
        store = capture_into(tmp_path_factory.mktemp(spec) / "store", corpus, spec, batch_size=5)
        return load_model(spec, device="cpu"), Store.open(store), texts

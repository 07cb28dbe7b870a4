"""Resume after kill -9, one writer at a time, appends, and float16 overflow (issue: store + capture)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MKQA, TATOEBA, capture_into
from tnstore.capture.forward import PER_SENTENCE_ARRAYS
from tnstore.store.store import Store

TNSTORE = [sys.executable, "-m", "tnstore.cli.app"]


def _capture_cmd(store: Path, corpus: Path, *extra: str) -> list[str]:
    return TNSTORE + ["capture", "--model", "tiny-llama", "--corpus", str(corpus), "--store", str(store),
                      "--device", "cpu", "--chunk-rows", "32", "--batch-size", "4", "--quiet", *extra]


def _all_arrays(store: Path) -> dict[str, np.ndarray]:
    opened = Store.open(store)
    rows = np.arange(opened.n_rows())
    return {name: opened.read_rows(name, rows) for name in PER_SENTENCE_ARRAYS}


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the capture to make progress")
        time.sleep(0.02)


def _done_blocks(store: Path) -> int:
    journals = list((store / "journal").glob("*.json")) if (store / "journal").is_dir() else []
    try:
        return max((len(json.loads(p.read_text())["done_blocks"]) for p in journals), default=0)
    except ValueError:  # caught mid-replace
        return 0


def test_kill_9_then_same_command_resumes_to_identical_arrays(tmp_path):
    corpus = MKQA
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_capture_cmd(killed, corpus, "--limit", "300"), stderr=subprocess.PIPE)
    _wait_for(lambda: _done_blocks(killed) >= 3 or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial_blocks = _done_blocks(killed)
    assert 3 <= partial_blocks < 47, "the kill should land mid-run (300 records x 5 languages = 47 blocks)"
    assert Store.open(killed).n_rows() == 0, "an unfinished run's rows must not be visible"

    resumed = subprocess.run(_capture_cmd(killed, corpus, "--limit", "300"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not list((killed / "journal").glob("*.json"))

    clean = tmp_path / "clean"
    subprocess.run(_capture_cmd(clean, corpus, "--limit", "300"), check=True, capture_output=True)
    got, want = _all_arrays(killed), _all_arrays(clean)
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    sentences = "SELECT row, lang, text, pair_id FROM sentences ORDER BY row"
    assert Store.open(killed).query(sentences).equals(Store.open(clean).query(sentences))


def test_second_writer_refuses_while_first_runs(tmp_path):
    store = tmp_path / "store"
    first = subprocess.Popen(_capture_cmd(store, MKQA), stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _done_blocks(store) >= 1)
        second = subprocess.run(_capture_cmd(store, TATOEBA / "en-ja.parallel.train.jsonl", "--limit", "10"),
                                capture_output=True, text=True)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "busy" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_append_keeps_earlier_rows_and_numbers_new_ones_after_them(tmp_path, tiny_store_factory):
    store = capture_into(tmp_path / "s", TATOEBA / "en-ja.parallel.train.jsonl", "tiny-llama", limit=10)
    before = _all_arrays(store)
    capture_into(store, TATOEBA / "en-ja.parallel.test.jsonl", "tiny-llama", limit=5, split="test")
    after = _all_arrays(store)
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(after[name][:20], before[name])
    counts = Store.open(store).query("SELECT split, min(row) AS lo, max(row) AS hi FROM sentences GROUP BY split ORDER BY lo")
    assert counts.to_pylist() == [{"split": "train", "lo": 0, "hi": 19}, {"split": "test", "lo": 20, "hi": 29}]


def test_same_capture_twice_is_a_no_op(tmp_path):
    corpus = TATOEBA / "en-ko.parallel.train.jsonl"
    store = capture_into(tmp_path / "s", corpus, "tiny-llama", limit=6)
    again = subprocess.run(_capture_cmd(store, corpus, "--limit", "6", "--storage-dtype", "float32"),
                           capture_output=True, text=True)
    assert again.returncode == 0 and "already captured" in again.stdout
    assert Store.open(store).n_rows() == 12


def test_float16_overflow_is_refused_and_leaves_nothing_behind(tmp_path):
    """A model whose activations exceed float16's range: capture must say so, not store inf."""
    import torch

    from tnstore.models.tiny import build_tiny_model

    model, tokenizer = build_tiny_model("tiny-llama")
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1e7)  # init std 0.02: the embedding output is then ~2e5
    folder = tmp_path / "loud-model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    store = tmp_path / "s"
    corpus = TATOEBA / "en-it.parallel.train.jsonl"
    ok = subprocess.run(TNSTORE + ["capture", "--model", str(folder), "--corpus", str(corpus), "--store", str(store),
                                   "--limit", "4", "--storage-dtype", "float32", "--quiet"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    before = _all_arrays(store)
    bad = subprocess.run(TNSTORE + ["capture", "--model", str(folder), "--corpus", str(corpus), "--store", str(store),
                                    "--limit", "8", "--quiet"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "float16" in bad.stderr and "--storage-dtype float32" in bad.stderr and bad.stderr.count("\n") == 1
    after = _all_arrays(store)
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(after[name], before[name])
    assert not list((store / "journal").glob("*.json"))
    assert len(list((store / "segments").glob("*.zarr"))) == len(list((store / "segments").glob("*.catalog.json"))) == 1


@pytest.mark.parametrize("storage_dtype", ["float16", "float32"])
def test_storage_dtype_is_what_is_written(tmp_path, storage_dtype):
    store = capture_into(tmp_path / "s", TATOEBA / "en-nl.parallel.train.jsonl", "tiny-qwen2", limit=3,
                         storage_dtype=storage_dtype)
    segment = Store.open(store).segments()[0]
    assert str(segment.reader("mlp_act").dtype) == storage_dtype
    assert str(segment.reader("mlp_out_scale").dtype) == "float32"
    assert os.path.isdir(store / "model" / "weights.zarr")

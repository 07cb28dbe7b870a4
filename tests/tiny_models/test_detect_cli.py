"""`tnstore detect` and `tnstore neurons` from the command line: output, and one-line errors with exit code 2 that
leave the store as it was. Commands run in-process through the CLI's real entry point (`main`), plus one
subprocess call of the installed `tnstore` script."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import capture_into
from tests.tiny_models.test_detect_store import snapshot
from tests.cli_runner import run_cli

TNSTORE = Path(sys.executable).with_name("tnstore")




@pytest.fixture()
def store(tiny_store_factory, tmp_path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(tiny_store_factory("tiny-llama", ("ja",), 40), target)
    return target


def test_detect_prints_a_summary_and_the_top_neurons(store, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "detect", store, "--type", "1", "--lang", "ja", "--top", "50")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Type-1 transfer neurons for ja: top 50 of 288 candidates (layers 0:3 of 4, cosine, "
                               "split train: 40 ja sentences, 40 en-ja pairs) in ")
    assert lines[1].startswith("set_id type1_ja_train_cosine_layers0-3_top50")
    assert lines[2].split() == ["rank", "layer", "neuron", "score"]
    assert [line.split()[0] for line in lines[3:]] == ["1", "2", "3", "4", "5"]

    code, out, _ = run_cli(monkeypatch, capsys, "sql", store,
                           "SELECT rank, layer, neuron FROM transfer_neurons ORDER BY rank LIMIT 1", "--format", "json")
    first = json.loads(out.splitlines()[0])
    assert [first["layer"], first["neuron"]] == [int(x) for x in lines[3].split()[1:3]]


def test_neurons_random_and_list(store, monkeypatch, capsys):
    run_cli(monkeypatch, capsys, "detect", store, "--type", "2", "--lang", "ja", "--top", "20")
    code, out, err = run_cli(monkeypatch, capsys, "neurons", "random", store, "--like", "type=2,lang=ja", "--seed", "0")
    assert code == 0, err
    assert out.strip() == ("stored 20 random neurons from layers 3:4 (excluding type2_ja_train_cosine_layers3-4_top20, "
                           "seed 0) as neuron set random_type2_ja_train_cosine_layers3-4_top20_seed0")
    code, out, _ = run_cli(monkeypatch, capsys, "neurons", "list", store, "--format", "csv")
    assert code == 0
    assert out.splitlines()[0].replace('"', "") == ("name,origin,lang,type,layer_start,layer_end,n,like_set_id,seed,"
                                                    "match_layers")
    assert len(out.splitlines()) == 3


ERRORS = [
    (["detect", "{store}", "--type", "1", "--lang", "ko", "--top", "5"], "--lang ko: the store has no ko sentences (it has: en, ja)"),
    (["detect", "{store}", "--type", "1", "--lang", "ja", "--split", "test", "--top", "5"], "--split test: no ja sentences"),
    (["detect", "{store}", "--type", "1", "--lang", "en", "--top", "5"], "--lang en: Type-1"),
    (["detect", "{store}", "--type", "3", "--lang", "ja", "--top", "5"], "--type 3"),
    (["detect", "{store}", "--type", "1", "--lang", "ja", "--dist", "manhattan", "--top", "5"], "--dist 'manhattan'"),
    (["detect", "{store}", "--type", "1", "--lang", "ja", "--layers", "2:9", "--top", "5"], "--layers 2:9: need 0 <= A < B <= 4"),
    (["detect", "{store}", "--type", "1", "--lang", "ja", "--layers", "two", "--top", "5"], "--layers 'two' must look like A:B"),
    (["detect", "{store}", "--type", "1", "--lang", "ja", "--top", "289"], "--top 289: layers 0:3 hold 288"),
    (["detect", "{store}", "--type", "2", "--lang", "ja", "--top", "0"], "--top 0"),
    (["detect", "{store}/missing", "--type", "1", "--lang", "ja", "--top", "5"], "does not exist"),
    (["neurons", "random", "{store}", "--like", "type=1,lang=ja"], "no transfer-neuron set matches type=1,lang=ja"),
    (["neurons", "random", "{store}", "--like", "kind=1"], "--like 'kind=1'"),
    (["neurons", "random", "{store}", "--like", "type=2,lang=ja", "--name", "a/b"], "--name 'a/b'"),
    (["neurons", "random", "{store}", "--like", "type=2,lang=ja", "--seed", "-1"], "--seed -1"),
]


@pytest.mark.parametrize("args, message", ERRORS, ids=[" ".join(a[2:]) for a, _ in ERRORS])
def test_errors_are_one_line_exit_2_and_change_nothing(store, monkeypatch, capsys, args, message):
    run_cli(monkeypatch, capsys, "detect", store, "--type", "2", "--lang", "ja", "--top", "10")  # something to keep
    before = snapshot(store)
    code, out, err = run_cli(monkeypatch, capsys, *[a.format(store=store) for a in args])
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert snapshot(store) == before


def test_type1_without_parallel_pairs_is_refused(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "ja.jsonl"
    corpus.write_text("".join(json.dumps({"ja": t}, ensure_ascii=False) + "\n" for t in ("猫です。", "犬です。", "鳥です。")))
    store = capture_into(tmp_path / "store", corpus, "tiny-llama")
    before = snapshot(store)
    code, _, err = run_cli(monkeypatch, capsys, "detect", store, "--type", "1", "--lang", "ja", "--top", "5")
    assert code == 2 and err.strip() == (
        "error: split train has no parallel en-ja pairs; Type-1 needs them for the shared centroid (Eq. 6): "
        "capture an en-ja parallel corpus with --split train")
    assert snapshot(store) == before
    # Type-2 needs no English: mono L2 sentences are enough
    code, out, _ = run_cli(monkeypatch, capsys, "detect", store, "--type", "2", "--lang", "ja", "--top", "5")
    assert code == 0 and "3 ja sentences" in out


def test_installed_script_exits_2_with_one_line(store):
    done = subprocess.run([str(TNSTORE), "detect", str(store), "--type", "2", "--lang", "xx", "--top", "5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --lang xx: the store has no xx sentences (it has: en, ja)"

"""Bad input ends in one line on stderr, exit code 2, and an unchanged store."""
from __future__ import annotations

import hashlib
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TATOEBA, capture_into
from tests.cli_runner import run_cli

PAIRS = TATOEBA / "en-ja.parallel.train.jsonl"




def tree_digest(root: Path) -> str:
    """Hash of every file's path and bytes under `root` (the LOCK file's holder note excluded)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "LOCK"):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def existing_store(tmp_path_factory) -> Path:
    return capture_into(tmp_path_factory.mktemp("errors") / "store", PAIRS, "tiny-llama", limit=4)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def write(tmp_path: Path, name: str, payload: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


BAD_CORPORA = {
    "missing": (None, "does not exist"),
    "unknown_columns.jsonl": (b'{"id": 0, "en": "Hi.", "foo": "bar"}\n', "unknown columns"),
    "empty_line.jsonl": (b'{"id": 0, "en": "Hi.", "ja": "\xe3\x82\x84\xe3\x81\x82"}\n\n', "line 2 is empty"),
    "empty_text.jsonl": (b'{"id": 0, "en": "  ", "ja": "x"}\n', "empty"),
    "not_utf8.jsonl": (b'{"id": 0, "en": "Hi.", "ja": "ok"}\n{"id": 1, "en": "\xff\xfe", "ja": "x"}\n', "line 2 is not valid UTF-8"),
    "duplicate_ids.jsonl": (b'{"id": 0, "en": "A.", "ja": "x"}\n{"id": 0, "en": "B.", "ja": "y"}\n', "duplicate id"),
    "bad_json.jsonl": (b'{"id": 0, "en": "A."\n', "not valid JSON"),
    "empty.jsonl": (b"", "no records"),
    "table.txt": (b"hello\n", "unknown file type"),
}


@pytest.mark.parametrize("name", sorted(BAD_CORPORA))
def test_bad_corpus_is_refused_and_store_untouched(name, tmp_path, existing_store, monkeypatch, capsys):
    payload, message = BAD_CORPORA[name]
    corpus = tmp_path / name if payload is None else write(tmp_path, name, payload)
    before = tree_digest(existing_store)
    code, _, err = run_cli(monkeypatch, capsys, "capture", "--model", "tiny-llama", "--corpus", str(corpus),
                           "--store", str(existing_store), "--quiet")
    assert_one_line_error(code, err, message, name.split(".")[0] if payload is None else name)
    assert tree_digest(existing_store) == before


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--model", "tiny-gemma3"], "holds captures of model 'tiny-llama'"),
    (["--model", "tiny-llama", "--storage-dtype", "bfloat16"], "bfloat16 has no Zarr/NumPy type"),
    (["--model", "tiny-llama", "--storage-dtype", "int8"], "--storage-dtype"),
    (["--model", "tiny-llama", "--dtype", "float64"], "--dtype"),
    (["--model", "tiny-llama", "--kind", "sideways"], "--kind"),
    (["--model", "tiny-llama", "--device", "tpu"], "--device"),
    (["--model", "tiny-llama", "--limit", "0"], "--limit"),
])
def test_bad_options_are_refused_and_store_untouched(args, message, existing_store, monkeypatch, capsys):
    before = tree_digest(existing_store)
    code, _, err = run_cli(monkeypatch, capsys, "capture", "--corpus", str(PAIRS), "--store", str(existing_store),
                           "--quiet", *args)
    assert_one_line_error(code, err, message)
    assert tree_digest(existing_store) == before


def test_model_folder_with_other_weights_is_refused(tmp_path, existing_store, monkeypatch, capsys):
    """Same architecture and spec family but different weights: the fingerprint tells them apart."""
    from tnstore.models.tiny import build_tiny_model

    model, tokenizer = build_tiny_model("tiny-llama", seed=7)
    folder = tmp_path / "other"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    other_store = capture_into(tmp_path / "s", PAIRS, str(folder), limit=2)
    before = tree_digest(other_store)
    retrained = build_tiny_model("tiny-llama", seed=8)[0]
    retrained.save_pretrained(folder)
    code, _, err = run_cli(monkeypatch, capsys, "capture", "--model", str(folder), "--corpus", str(PAIRS),
                           "--store", str(other_store), "--limit", "3", "--quiet")
    assert_one_line_error(code, err, "weights")
    assert tree_digest(other_store) == before


def test_unsupported_architecture_is_refused_by_name(tmp_path, monkeypatch, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tnstore.models.tiny import byte_tokenizer

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=260)).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    code, _, err = run_cli(monkeypatch, capsys, "capture", "--model", str(folder), "--corpus", str(PAIRS),
                           "--store", str(tmp_path / "s"), "--limit", "2", "--quiet")
    assert_one_line_error(code, err, "unsupported architecture GPT2LMHeadModel")
    assert not (tmp_path / "s").exists()


@contextmanager
def read_only(path: Path):
    """`path` without write permission bits (restored after). Root ignores them unless it runs without
    CAP_DAC_OVERRIDE, which `cli_without_override` takes away from its child alone: nothing on the host changes."""
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
        yield
    finally:
        path.chmod(mode)


def _drop_dac_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE from the bounding set, so the program run as root is
    bound by permission bits (prctl PR_CAPBSET_DROP = 24, CAP_DAC_OVERRIDE = 1)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def cli_without_override(*args: str) -> tuple[int, str, str]:
    """`tnstore ARGS` in a child process that permission bits bind (root included)."""
    import sys

    done = subprocess.run([sys.executable, "-m", "tnstore.cli.app", *args], capture_output=True, text=True,
                          preexec_fn=_drop_dac_override if os.geteuid() == 0 else None)
    return done.returncode, done.stdout, done.stderr


def test_read_only_store_is_refused(tmp_path):
    store = capture_into(tmp_path / "s", PAIRS, "tiny-llama", limit=2)
    before = tree_digest(store)
    with read_only(store):
        code, _, err = cli_without_override("capture", "--model", "tiny-llama", "--corpus", str(PAIRS),
                                            "--store", str(store), "--limit", "3", "--quiet")
    assert_one_line_error(code, err, "not writable")
    assert tree_digest(store) == before


def test_store_path_that_cannot_be_created_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    with read_only(parent):
        code, _, err = cli_without_override("capture", "--model", "tiny-llama", "--corpus", str(PAIRS),
                                            "--store", str(parent / "new"), "--limit", "3", "--quiet")
    assert_one_line_error(code, err, "not writable")
    assert not (parent / "new").exists()


def test_sql_errors_and_missing_store(existing_store, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "sql", str(existing_store), "SELECT nope FROM sentences")
    assert_one_line_error(code, err, "SQL failed")
    code, _, err = run_cli(monkeypatch, capsys, "info", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run_cli(monkeypatch, capsys, "sql", str(existing_store), "SELECT 1", "--out", str(tmp_path / "x.txt"))
    assert_one_line_error(code, err, ".parquet or .csv")


def test_sql_formats_and_out_file(existing_store, tmp_path, monkeypatch, capsys):
    query = "SELECT lang, split, count(*) AS n FROM sentences GROUP BY ALL ORDER BY lang"
    code, out, _ = run_cli(monkeypatch, capsys, "sql", str(existing_store), query, "--format", "csv")
    assert code == 0 and out.splitlines() == ['"lang","split","n"', '"en","train",4', '"ja","train",4']
    code, out, _ = run_cli(monkeypatch, capsys, "sql", str(existing_store), query, "--format", "json")
    assert out.splitlines()[0] == '{"lang": "en", "split": "train", "n": 4}'
    code, out, _ = run_cli(monkeypatch, capsys, "sql", str(existing_store), query)
    assert "(2 rows)" in out and out.splitlines()[0].split() == ["lang", "split", "n"]
    target = tmp_path / "r.parquet"
    code, out, _ = run_cli(monkeypatch, capsys, "sql", str(existing_store), query, "--out", str(target))
    import pyarrow.parquet as pq

    assert code == 0 and pq.read_table(target).num_rows == 2

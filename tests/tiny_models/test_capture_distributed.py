"""Capture with torchrun: two gloo ranks on the CPU write the store a one-process capture writes; killing a rank
leaves a run that the same command resumes; a failing rank fails the run on every rank, committing nothing; the
writer lock holds for the whole run. Also: the length-sorted row order and the one-process pipeline.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MKQA
from tnstore.errors import TnstoreError
from tnstore.store.lock import writer_lock
from tnstore.store.store import Store

REPO = Path(__file__).resolve().parents[2]
# Columns of the runs row that say when and how a run was made, not what it holds.
RUN_PROVENANCE = {"seconds", "started_at", "finished_at", "device", "command"}


def _torchrun(ranks: int, *args: str, port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
            str(port), "-m", "tnstore", *args]


def _capture_args(store: Path, corpus: Path, *extra: str, model: str = "tiny-llama") -> list[str]:
    return ["capture", "--model", model, "--corpus", str(corpus), "--store", str(store), "--device", "cpu",
            "--batch-size", "4", "--quiet", *extra]


def _env() -> dict[str, str]:
    # One thread per process: two ranks on two cores, as a one-process capture with as many threads would be.
    return {**os.environ, "TNSTORE_THREADS": "1", "PYTHONPATH": str(REPO)}


def _files(store: Path) -> dict[str, str]:
    """Hash of every file of the store's arrays (segments: chunks, zarr.json, run catalogs; model arrays). A
    killed writer's half-written temp file (`.name.*.partial`, never renamed into place) is not part of it."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("segments", "model") for p in sorted((store / sub).rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _tables(store: Path) -> dict[str, list[dict]]:
    s = Store.open(store)
    runs = [{k: v for k, v in row.items() if k not in RUN_PROVENANCE} for row in s.read_table("runs").to_pylist()]
    return {"sentences": s.query("SELECT * FROM sentences ORDER BY row").to_pylist(), "runs": runs}


def _one_process(store: Path, corpus: Path, limit: int, chunk_rows: int) -> None:
    """The same capture in this process (no interpreter start: the thread count does not change the bytes)."""
    from tnstore.capture.api import capture_corpus

    capture_corpus(store=store, corpus=corpus, model="tiny-llama", limit=limit, batch_size=4, device="cpu",
                   chunk_rows=chunk_rows, progress=False)


def _assert_same_store(got: Path, want: Path) -> None:
    files_got, files_want = _files(got), _files(want)
    assert files_got.keys() == files_want.keys()
    assert [k for k in files_got if files_got[k] != files_want[k]] == []
    assert _tables(got) == _tables(want)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A one-process capture of 60 MKQA questions in 5 languages (300 rows, blocks of 16)."""
    store = tmp_path_factory.mktemp("one") / "store"
    _one_process(store, MKQA, 60, 16)
    return store


def test_two_gloo_ranks_write_the_one_process_store(reference, tmp_path):
    store = tmp_path / "two"
    done = subprocess.run(_torchrun(2, *_capture_args(store, MKQA, "--limit", "60", "--chunk-rows", "16"),
                                    port=29611), capture_output=True, text=True, env=_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("captured 300 sentences") == 1 and "on 2 ranks" in done.stdout
    _assert_same_store(store, reference)
    run = Store.open(store).read_table("runs").to_pylist()[0]
    assert run["device"] == "cpu (2 ranks)"
    assert not list((store / "journal").iterdir())


def test_rows_are_length_sorted_per_language(reference):
    s = Store.open(reference)
    rows = s.query("SELECT row, lang, n_tokens, source_line FROM sentences ORDER BY row").to_pylist()
    langs = [r["lang"] for r in rows]
    assert langs == [lang for lang in dict.fromkeys(langs) for _ in range(60)]  # grouped by language
    for lang in dict.fromkeys(langs):
        own = [r for r in rows if r["lang"] == lang]
        assert len(own) == 60 and [r["row"] for r in own] == list(range(own[0]["row"], own[0]["row"] + 60))
        keys = [(-r["n_tokens"], r["source_line"]) for r in own]
        assert keys == sorted(keys), f"{lang}: longest first, ties in corpus order"


def _journal_blocks(store: Path) -> int:
    journals = list((store / "journal").glob("*.json")) if (store / "journal").is_dir() else []
    try:
        return max((len(json.loads(p.read_text())["done_blocks"]) for p in journals), default=0)
    except ValueError:  # caught mid-replace
        return 0


def _rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes (from their RANK environment variable)."""
    import psutil

    out = {}
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            rank = child.environ().get("RANK")
        except (psutil.Error, OSError):
            continue
        if rank is not None and child.name().startswith("python"):
            out[int(rank)] = child.pid
    return out


@pytest.mark.parametrize("victim", [1])
def test_kill_a_rank_then_the_same_command_resumes(reference, tmp_path, victim):
    store = tmp_path / "killed"
    args = _capture_args(store, MKQA, "--limit", "60", "--chunk-rows", "16")
    launcher = subprocess.Popen(_torchrun(2, *args, port=29612), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(), cwd=REPO)
    deadline = time.monotonic() + 180
    pids: dict[int, int] = {}
    while len(pids) < 2 and launcher.poll() is None:  # the ranks' processes, while they load
        assert time.monotonic() < deadline, "torchrun started no ranks"
        pids = _rank_pids(launcher)
        time.sleep(0.05)
    while _journal_blocks(store) < 2 and launcher.poll() is None:
        assert time.monotonic() < deadline, "the capture made no progress"
        time.sleep(0.005)
    # The writer lock holds across ranks: another writer is refused while the run goes on.
    with pytest.raises(TnstoreError, match="is busy"):
        with writer_lock(store / "LOCK", "test", 0.0):
            pass
    os.kill(pids[victim], signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    blocks = _journal_blocks(store)
    assert 2 <= blocks < 19, "the kill should land mid-run (300 rows = 19 blocks)"
    assert Store.open(store).n_rows() == 0, "an unfinished run's rows must not be visible"
    # The same command, here with one process, resumes the run and ends with the one-process store.
    _one_process(store, MKQA, 60, 16)
    _assert_same_store(store, reference)


def _loud_model(folder: Path, trigger: str) -> Path:
    """A tiny model whose activations overflow float16 for sentences holding `trigger`, and only those."""
    import torch

    from tnstore.models.tiny import build_tiny_model

    model, tokenizer = build_tiny_model("tiny-llama")
    token = tokenizer(trigger, add_special_tokens=False)["input_ids"][-1]
    with torch.no_grad():
        model.model.embed_tokens.weight[token].mul_(1e7)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_failing_rank_fails_the_run_on_every_rank(tmp_path):
    """Sentences of different lengths, blocks of 2 rows: the trigger sits in the 2nd longest block (rank 1's)."""
    corpus = tmp_path / "c.jsonl"
    texts = ["a" * n for n in (30, 28)] + ["b" * 26, "~" * 24] + ["c" * n for n in (22, 20, 18, 16)]
    corpus.write_text("".join(json.dumps({"id": i, "en": t}) + "\n" for i, t in enumerate(texts)), "utf-8")
    model = _loud_model(tmp_path / "loud", "~")
    store = tmp_path / "s"
    done = subprocess.run(_torchrun(2, *_capture_args(store, corpus, "--chunk-rows", "2", model=str(model)),
                                    port=29613), capture_output=True, text=True, env=_env(), cwd=REPO)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2, done.stderr  # one line per rank, the same line
    assert len(set(lines)) == 1 and "float16" in lines[0] and "--storage-dtype float32" in lines[0]
    s = Store.open(store)
    assert s.n_rows() == 0 and s.read_table("runs").num_rows == 0
    assert not list((store / "journal").glob("*.json")) and not list((store / "segments").glob("*.zarr"))


def test_taps_packed_into_one_copy_equal_the_taps(tmp_path):
    """The GPU path's single device-to-host copy per batch (forced here on the CPU) returns every tap unchanged."""
    import torch

    from tnstore.capture.forward import to_host

    g = torch.Generator().manual_seed(0)
    rows = {(0, "mlp_act"): torch.randn(3, 7, generator=g, dtype=torch.bfloat16),
            (0, "hidden"): torch.randn(3, 5, generator=g), (1, "hidden"): torch.randn(3, 5, generator=g)}
    packed, plain = to_host(rows, torch.device("cpu"), pack=True), to_host(rows, torch.device("cpu"), pack=False)
    assert packed.keys() == plain.keys() == rows.keys()
    for key in rows:
        assert packed[key].dtype == torch.float32 and torch.equal(packed[key], plain[key])


def test_device_map_auto_captures_what_one_device_captures(tmp_path):
    from tnstore.capture.api import capture_corpus

    corpus = MKQA
    for name, extra in (("plain", {}), ("mapped", {"device_map": "auto", "device": "auto"})):
        capture_corpus(store=tmp_path / name, corpus=corpus, model="tiny-gemma3", limit=6, progress=False,
                       chunk_rows=8, **({"device": "cpu"} | extra))
    _assert_same_store(tmp_path / "mapped", tmp_path / "plain")

"""Integrity and durability (issue 10): damaged copies are found, never read as data; interrupted captures resume
to exactly the uninterrupted arrays; `tnstore verify` names each damaged file and what to do."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import tnstore
from tests.cli_runner import run_cli
from tests.conftest import TATOEBA
from tnstore.capture.forward import PER_SENTENCE_ARRAYS
from tnstore.errors import DamagedStoreError
from tnstore.store.store import Store

CORPUS = TATOEBA / "en-ja.parallel.train.jsonl"


def _capture(store: Path, **extra) -> None:
    tnstore.capture_corpus(store=store, corpus=CORPUS, model="tiny-llama", limit=40, device="cpu",
                           storage_dtype="float32", chunk_rows=16, batch_size=8, **extra)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A captured store with a detection and a PCA in it (tables of several kinds)."""
    path = tmp_path_factory.mktemp("integrity") / "store"
    _capture(path)
    tnstore.detect(path, type=1, lang="ja", top=5)
    tnstore.latent.pca(path, layers=[1, 2])
    return path


@pytest.fixture
def store(base, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    return copy


def _chunk(store: Path, array: str = "mlp_act", coords: str = "3/2/0") -> Path:
    """A chunk file; the default is rows 48..63 (ja sentences, which detect reads) of layer 2."""
    run = next(p for p in (store / "segments").iterdir() if p.suffix == ".zarr")
    return run / array / "c" / coords


def _part(store: Path, table: str) -> Path:
    return sorted((store / "tables" / table).glob("*.parquet"))[0]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
            and p.name != "LOCK"}


def _one_line_error(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in err, err


def test_a_sound_store_verifies(store, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store)
    assert code == 0 and "sound" in out and out.count("\n") == 1, out
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store, "--fast")
    assert code == 0 and "sound; sizes of" in out


def test_a_missing_chunk_is_an_error_not_zeros(store, monkeypatch, capsys):
    chunk = _chunk(store)
    chunk.unlink()
    before = _snapshot(store)
    code, _, err = run_cli(monkeypatch, capsys, "detect", store, "--type", "1", "--lang", "ja", "--top", "5")
    _one_line_error(code, err, "mlp_act/c/3/2/0", "missing", f"tnstore verify {store}")
    assert _snapshot(store) == before, "a failed command leaves the store as it was"
    with pytest.raises(DamagedStoreError, match="missing"):
        tnstore.open(store).states("mlp_act", layers=[2])
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store)
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(chunk)), out  # one line per damaged file, then the summary
    assert "missing" in lines[0] and "[run " in lines[0]
    assert "capture the run again with its recorded command" in lines[0]
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store, "--fast")
    assert code == 1 and "missing" in out


def test_a_flipped_byte_is_corrupt_when_read_and_in_verify(store, monkeypatch, capsys):
    _flip(_chunk(store, "resid_pre_mlp", "3/1/0"))
    code, _, err = run_cli(monkeypatch, capsys, "detect", store, "--type", "1", "--lang", "ja", "--top", "5")
    _one_line_error(code, err, "resid_pre_mlp/c/3/1/0", "checksum", "tnstore verify")
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store)
    assert code == 1 and "resid_pre_mlp/c/3/1/0: corrupt (checksum mismatch)" in out
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store, "--fast")
    assert code == 0, "fast checks sizes only: a flipped byte keeps the size"


def test_a_chunk_that_decompresses_to_the_wrong_size_is_refused(store):
    """A chunk file replaced by a valid Blosc frame of another size, catalogued as if it were right: the
    decompressed size is checked too, so the reader never writes past or short of its destination."""
    from numcodecs import blosc

    from tnstore.store.integrity import FileCatalog, FileRecord, run_catalog_key

    s = Store.open(store)
    seg = s.segments()[0]
    frame = blosc.compress(np.zeros(7, np.float32).tobytes(), b"lz4", 5, 1, 4)
    _chunk(store, "mlp_act", "0/0/0").write_bytes(frame)
    catalog = seg.catalog()
    catalog.files["mlp_act/c/0/0/0"] = FileRecord.of(frame)
    s.files.write_atomic(run_catalog_key(seg.run_id), FileCatalog(catalog.files, catalog.info).dump())
    with pytest.raises(DamagedStoreError, match="decompresses to 28 bytes"):
        Store.open(store).states("mlp_act", layers=[0])


@pytest.mark.parametrize("command", [
    ["info"], ["sql", "{store}", "SELECT count(*) FROM sentences"],
    ["detect", "{store}", "--type", "1", "--lang", "ja", "--top", "5"],
    ["stats", "corr-ratio", "{store}"], ["latent", "pca", "{store}"], ["neurons", "list", "{store}"],
    ["export", "{store}", "{store}-out"],
])
def test_a_truncated_table_part_is_one_line_for_every_command(store, monkeypatch, capsys, command):
    part = _part(store, "sentences")
    part.write_bytes(part.read_bytes()[:-100])
    args = [a.replace("{store}", str(store)) for a in command] + ([str(store)] if command == ["info"] else [])
    code, _, err = run_cli(monkeypatch, capsys, *args)
    _one_line_error(code, err, str(part), "table sentences", "truncated", "tnstore verify")
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store, "--fast")
    assert code == 1 and f"{part}: truncated" in out and "[table sentences]" in out


def test_a_damaged_manifest_or_catalog_is_one_line(store, base, monkeypatch, capsys):
    _flip(store / "tnstore.json")
    code, _, err = run_cli(monkeypatch, capsys, "info", store)
    assert code == 2 and err.count("\n") == 1 and "tnstore.json" in err and "tnstore verify" in err, err
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store)
    assert code == 1 and "tnstore.json: damaged" in out
    shutil.copy(base / "tnstore.json", store / "tnstore.json")
    (store / "tables" / "catalog.json").write_text("{")
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store)
    assert code == 1 and "catalog.json: damaged" in out


def test_unexpected_files_and_links_are_reported(store, monkeypatch, capsys, tmp_path):
    (store / "tables" / "sentences" / "stray.parquet").write_bytes(b"x")
    secret = tmp_path / "secret"
    secret.write_text("outside the store")
    os.symlink(secret, store / "segments" / "link")
    code, out, _ = run_cli(monkeypatch, capsys, "verify", store)
    assert code == 1
    assert "stray.parquet: unexpected (no catalog lists it)" in out
    assert "segments/link: unsafe (a symbolic link)" in out


# ------------------------------------------------------------------------------------------------ durability
def _arrays(store: Path) -> dict[str, np.ndarray]:
    s = Store.open(store, mode="r")
    rows = np.arange(s.n_rows())
    return {name: s.read_rows(name, rows) for name in PER_SENTENCE_ARRAYS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, np.ndarray]:
    path = tmp_path_factory.mktemp("whole") / "store"
    _capture(path)
    return _arrays(path)


class Stop(BaseException):
    """The process dying (not an error the runner handles)."""


def _stopped_capture(store: Path, monkeypatch, after_blocks: int, where: str) -> None:
    """Capture until `after_blocks` blocks are journaled, then stop: "journal" right after the next block's chunk
    files are written, before its journal entry; "after" right after a journal entry."""
    from tnstore.store import store as store_module

    real = store_module.Store.write_journal
    calls = {"n": 0}

    def write_journal(self, run_id, entry):
        if entry.get("done_blocks") and len(entry["done_blocks"]) > after_blocks and where == "journal":
            raise Stop()  # the block's chunks are on disk; its journal entry never is
        real(self, run_id, entry)
        calls["n"] += 1
        if where == "after" and len(entry.get("done_blocks", [])) >= after_blocks:
            raise Stop()

    monkeypatch.setattr(store_module.Store, "write_journal", write_journal)
    with pytest.raises(Stop):
        _capture(store)
    monkeypatch.setattr(store_module.Store, "write_journal", real)


def test_stopped_between_chunk_writes_and_journal_resumes_exactly(tmp_path, monkeypatch, uninterrupted):
    store = tmp_path / "s"
    _stopped_capture(store, monkeypatch, after_blocks=2, where="journal")
    assert Store.open(store).n_rows() == 0
    # The writer thread reports blocks as they become durable, one or more at a time: the journal holds the first
    # blocks (at most two), and chunk files of a block it does not list are on disk.
    [done] = [j["done_blocks"] for j in Store.open(store).pending_journals()]
    assert done == list(range(len(done))) and 1 <= len(done) <= 2
    assert list(store.glob(f"segments/*.zarr/hidden/c/{len(done)}"))  # the next block's chunks, unjournaled
    _capture(store)
    got = _arrays(store)
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(got[name], uninterrupted[name], err_msg=name)
    assert not list((store / "journal").glob("*.json"))
    assert tnstore.verify(store).ok


def test_a_store_whose_last_blocks_chunks_were_dropped_resumes_exactly(tmp_path, monkeypatch, uninterrupted):
    """A power loss on a disk that lost files the journal had counted: resume finds them gone and redoes them."""
    store = tmp_path / "s"
    _stopped_capture(store, monkeypatch, after_blocks=3, where="after")
    run = next(p for p in (store / "segments").iterdir() if p.suffix == ".zarr")
    dropped = sorted(p for p in run.glob("*/c/2/**/*") if p.is_file())  # every chunk file of block 2
    assert dropped
    for path in dropped[::2]:
        path.unlink()
    _capture(store)
    got = _arrays(store)
    for name in PER_SENTENCE_ARRAYS:
        np.testing.assert_array_equal(got[name], uninterrupted[name], err_msg=name)
    assert tnstore.verify(store).ok


def test_a_blocks_files_are_fsynced_before_its_journal_entry(tmp_path, monkeypatch):
    """The order of durable writes: every chunk file of block k, and the folders that got new entries, are
    fsynced before the journal write that records block k."""
    from tnstore.store import store as store_module

    events: list[tuple[str, str]] = []
    real_fsync, real_journal = os.fsync, store_module.Store.write_journal

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def write_journal(self, run_id, entry):
        events.append(("journal", ",".join(map(str, entry.get("done_blocks", [])))))
        return real_journal(self, run_id, entry)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store_module.Store, "write_journal", write_journal)
    store = tmp_path / "s"
    _capture(store)
    catalog = Store.open(store).segments()[0].catalog()
    run = f"segments/{Store.open(store).segments()[0].run_id}.zarr"
    synced: set[str] = set()
    for kind, what in events:
        if kind == "fsync":
            synced.add(what)
        elif what:
            block = int(what.split(",")[-1])
            for key in catalog.files:
                parts = key.split("/")
                if len(parts) > 2 and parts[1] == "c" and parts[2] == str(block):
                    chunk = str(store / run / key)
                    assert any(s.startswith(chunk.rsplit("/", 1)[0]) for s in synced), key
                    folder = str(Path(chunk).parent)
                    assert folder in synced, f"folder of {key} not fsynced before block {block}'s journal entry"


@pytest.mark.parametrize("stop_at", ["rename", "commit"])
def test_a_table_write_that_died_half_way_is_read_whole_and_recovered(store, monkeypatch, stop_at):
    """A writer that dies after naming a part pending (before its rename, or before the catalog commits it):
    readers see the part whole (old or new), and the next writer commits or drops what was left."""
    from tnstore.store import store as store_module

    before = Store.open(store).query("SELECT * FROM transfer_neurons ORDER BY rank")
    real_replace, real_write = os.replace, store_module.LocalFiles.write_atomic
    writes = {"catalog": 0}

    def replace(src, dst):
        if stop_at == "rename" and str(dst).endswith(".parquet"):
            raise Stop()
        return real_replace(src, dst)

    def write_atomic(self, key, payload):
        if key == "tables/catalog.json":
            writes["catalog"] += 1
            if stop_at == "commit" and writes["catalog"] == 2:
                raise Stop()
        return real_write(self, key, payload)

    monkeypatch.setattr(store_module.os, "replace", replace)
    monkeypatch.setattr(store_module.LocalFiles, "write_atomic", write_atomic)
    with pytest.raises(Stop):
        tnstore.detect(store, type=1, lang="ja", top=7)
    monkeypatch.setattr(store_module.os, "replace", real_replace)
    monkeypatch.setattr(store_module.LocalFiles, "write_atomic", real_write)
    catalog = json.loads((store / "tables" / "catalog.json").read_text())
    assert catalog["pending"], "the dead writer left parts pending"
    seen = Store.open(store, mode="r").query("SELECT count(*) AS n FROM transfer_neurons")["n"][0].as_py()
    assert seen in (before.num_rows, before.num_rows + 7)  # whole: the old set alone, or with the new one
    tnstore.neurons.random_baseline(store, {"type": "1", "lang": "ja", "top": "5"}, seed=2)  # the next writer
    catalog = json.loads((store / "tables" / "catalog.json").read_text())
    assert not catalog["pending"]
    assert not [p for p in (store / "tables").rglob(".*tmp-*")]
    assert tnstore.verify(store).ok

"""Sharing stores (issue 10): `export` writes a smaller valid store that analyses like the original; a store
from someone else cannot make tnstore read or write outside it, allocate absurd memory, or run its text."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tnstore
from tests.cli_runner import run_cli
from tests.conftest import TATOEBA
from tests.loopback import http_server
from tnstore.errors import DamagedStoreError, TnstoreError
from tnstore.store.integrity import FileCatalog, FileRecord, TableCatalog, run_catalog_key, seal
from tnstore.store.store import Store

DETECT_ARRAYS = ["hidden", "resid_pre_mlp", "mlp_act", "mlp_out_scale"]


@pytest.fixture(scope="module")
def original(tiny_store_factory, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sharing") / "store"
    shutil.copytree(tiny_store_factory("tiny-llama", ("ja", "ko"), 40), path)
    tnstore.detect(path, type=1, lang="ja", top=10)
    tnstore.detect(path, type=1, lang="ko", top=10)
    tnstore.latent.pca(path, layers=[1, 2])
    return path


@pytest.fixture
def copy(original, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(original, target)
    return target


# ------------------------------------------------------------------------------------------------ export
def test_export_is_a_smaller_store_that_verifies_and_analyses_like_the_original(original, tmp_path):
    out = tmp_path / "subset"
    result = tnstore.export(original, out, arrays=DETECT_ARRAYS, where="lang IN ('en', 'ja')")
    assert result.n_rows == 120 and result.arrays == tuple(DETECT_ARRAYS)  # 40 en-ja + 40 en-ko en sides + 40 ja
    assert tnstore.verify(out).ok
    source, subset = Store.open(original, mode="r"), Store.open(out)
    assert subset.info().n_rows == 120 and subset.query("SELECT DISTINCT lang FROM sentences ORDER BY lang")[
        "lang"].to_pylist() == ["en", "ja"]
    assert sum(p.stat().st_size for p in out.rglob("*")) < sum(p.stat().st_size for p in original.rglob("*"))
    # rows renumbered from 0 in order; exported_rows maps each back, and the arrays agree row by row
    mapping = subset.query("SELECT row, source_row FROM exported_rows ORDER BY row")
    assert mapping["row"].to_pylist() == list(range(120))
    assert mapping["source_row"].to_pylist() == sorted(mapping["source_row"].to_pylist())
    for array in DETECT_ARRAYS:
        np.testing.assert_array_equal(subset.read_rows(array, mapping["row"].to_numpy()),
                                      source.read_rows(array, mapping["source_row"].to_numpy()))
    # the same analysis on both gives the same result
    mine = tnstore.detect(out, type=1, lang="ja", top=10).ranking_arrow
    theirs = source.query("SELECT * FROM transfer_neurons WHERE lang = 'ja' ORDER BY rank")
    assert mine.select(["rank", "layer", "neuron", "score"]).equals(theirs.select(["rank", "layer", "neuron", "score"]))
    # the copied results came along; latent_pca's rows were renumbered to the rows kept
    pca = subset.query("SELECT p.row, s.lang FROM latent_pca p JOIN sentences s USING (row)")
    assert pca.num_rows and set(pca["lang"].to_pylist()) <= {"en", "ja"}
    with pytest.raises(TnstoreError, match="has no array mlp_out"):
        subset.states("mlp_out", layers=[0])


def test_export_tables_none_or_a_list_and_cli_errors(original, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "export", original, tmp_path / "a", "--arrays", "hidden",
                             "--tables", "none", "--where", "lang = 'ko'")
    assert code == 0, err
    a = Store.open(tmp_path / "a")
    assert a.info().tables["transfer_neurons"] == 0 and a.info().n_rows == 40
    code, _, _ = run_cli(monkeypatch, capsys, "verify", tmp_path / "a")
    assert code == 0
    tnstore.export(original, tmp_path / "b", tables=["transfer_neurons"])
    b = Store.open(tmp_path / "b").info().tables
    assert b["transfer_neurons"] == 20 and b["latent_pca"] == 0 and b["neuron_scores"] == 0
    for args, flag in (([ "--arrays", "nope"], "--arrays"), (["--where", "lang = 'zz'"], "--where"),
                       (["--tables", "nope"], "--tables")):
        code, _, err = run_cli(monkeypatch, capsys, "export", original, tmp_path / "c", *args)
        assert code == 2 and err.startswith(f"error: {flag}") and err.count("\n") == 1, err


def test_export_from_a_remote_store_and_capture_into_an_export(original, tmp_path, monkeypatch):
    monkeypatch.setenv("TNSTORE_CACHE", str(tmp_path / "cache"))
    with http_server(original) as (url, _):
        tnstore.export(url, tmp_path / "r", arrays=["hidden"], where="lang = 'ja'", tables="none")
    local = tnstore.export(original, tmp_path / "l", arrays=["hidden"], where="lang = 'ja'", tables="none")
    r, l_ = Store.open(tmp_path / "r"), Store.open(local.out)
    np.testing.assert_array_equal(r.read_rows("hidden", np.arange(40)), l_.read_rows("hidden", np.arange(40)))
    assert tnstore.verify(tmp_path / "r").ok
    # the exported run has a new id: capturing the same corpus again is a new run, not "already captured"
    done = tnstore.capture_corpus(store=tmp_path / "l", corpus=TATOEBA / "en-ja.parallel.train.jsonl",
                                  model="tiny-llama", limit=40, device="cpu", storage_dtype="float32", chunk_rows=64)
    assert not done.already_done and Store.open(tmp_path / "l").n_rows() == 120


# ------------------------------------------------------------------------------------------------ untrusted
def _reseal_tables(store: Path, edit) -> None:
    """Rewrite tables/catalog.json after `edit(catalog)`, with a valid checksum (a hostile author can)."""
    path = store / "tables" / "catalog.json"
    catalog = TableCatalog.parse(path.read_bytes(), "catalog")
    edit(catalog)
    path.write_bytes(catalog.dump())


def _edit_parts(store: Path, table: str, column: str, value, first_only: bool = False) -> None:
    """Set `column` to `value` in every part of `table` (or the first), each catalogued with its right checksum."""
    parts = sorted((store / "tables" / table).glob("*.parquet"))
    for part in parts[:1] if first_only else parts:
        data = pq.read_table(part)
        data = data.set_column(data.schema.get_field_index(column), column, pa.array([value] * data.num_rows))
        pq.write_table(data, part)
        _reseal_tables(store, lambda c, p=part, n=data.num_rows: c.parts[table].__setitem__(
            p.stem, FileRecord.of(p.read_bytes(), n)))


def _edit_run_catalog(store: Path, edit) -> None:
    s = Store.open(store)
    seg = s.segments()[0]
    catalog = seg.catalog()
    edit(catalog.files, store / "segments" / f"{seg.run_id}.zarr")
    (store / run_catalog_key(seg.run_id)).write_bytes(FileCatalog(catalog.files, catalog.info).dump())


def test_path_traversal_in_a_part_name_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"x": [1]}), outside)
    _reseal_tables(copy, lambda c: c.parts.setdefault("neuron_sets", {}).__setitem__(
        "../../../outside", FileRecord.of(outside.read_bytes(), 1)))
    with pytest.raises(DamagedStoreError, match="leaves the store"):
        Store.open(copy).query("SELECT count(*) FROM neuron_sets")
    report = tnstore.verify(copy)
    assert any(p.kind == "unsafe" and "leaves the store" in p.detail for p in report.problems)


def test_absolute_and_dotdot_paths_in_a_run_catalog_are_refused(copy):
    def edit(files, _):
        files["mlp_act/c/../../../../etc/passwd"] = FileRecord(1, "0" * 16)
        files["/etc/hostname"] = FileRecord(1, "0" * 16)
    _edit_run_catalog(copy, edit)
    report = tnstore.verify(copy)
    assert sum(p.kind == "unsafe" for p in report.problems) == 2
    # reads only ever build keys from the chunk grid, so the stray entries are never opened
    assert Store.open(copy).states("mlp_act", layers=[0]).values.shape[0] > 0


def test_a_run_id_that_escapes_the_store_is_refused(copy):
    _edit_parts(copy, "runs", "run_id", "../../escape", first_only=True)
    with pytest.raises(DamagedStoreError, match="leaves the store"):
        Store.open(copy).states("hidden", layers=[0])
    assert any(p.kind == "unsafe" for p in tnstore.verify(copy).problems)


def test_symbolic_links_are_never_followed(copy, tmp_path):
    run = next(p for p in (copy / "segments").iterdir() if p.suffix == ".zarr")
    chunk = run / "hidden" / "c" / "0" / "0" / "0"
    outside = tmp_path / "outside-chunk"
    shutil.copy(chunk, outside)  # the same bytes: only the link check can stop the read
    chunk.unlink()
    os.symlink(outside, chunk)
    with pytest.raises(DamagedStoreError, match="symbolic link"):
        Store.open(copy).states("hidden", layers=[0])
    # a linked folder
    chunk.unlink()
    shutil.copy(outside, chunk)
    folder = run / "mlp_act"
    shutil.move(folder, tmp_path / "mlp_act")
    os.symlink(tmp_path / "mlp_act", folder)
    with pytest.raises(DamagedStoreError, match="symbolic link"):
        Store.open(copy).states("mlp_act", layers=[0])
    # LOCK pointing at a file of the user's: a writer refuses and the file is untouched
    victim = tmp_path / "bashrc"
    victim.write_text("precious")
    (copy / "LOCK").unlink()
    os.symlink(victim, copy / "LOCK")
    with pytest.raises(DamagedStoreError, match="LOCK is a symbolic link"):
        tnstore.neurons.random_baseline(copy, {"type": "1", "lang": "ja"}, seed=1)
    assert victim.read_text() == "precious"
    assert {p.kind for p in tnstore.verify(copy).problems} == {"unsafe"}


def test_absurd_shapes_are_refused_before_any_allocation(copy):
    def edit(files, run):
        meta = run / "mlp_act" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["shape"] = [doc["shape"][0], doc["shape"][1], 10**12]
        doc["chunk_grid"]["configuration"]["chunk_shape"][2] = 10**12
        meta.write_text(json.dumps(doc))
        files["mlp_act/zarr.json"] = FileRecord.of(meta.read_bytes())
    _edit_run_catalog(copy, edit)
    with pytest.raises(DamagedStoreError, match="larger than any tnstore writes"):
        Store.open(copy).states("mlp_act", layers=[0])
    manifest = json.loads((copy / "tnstore.json").read_text())
    manifest["model"]["d_mlp"] = 10**12
    (copy / "tnstore.json").write_bytes(seal(manifest))
    with pytest.raises(DamagedStoreError, match="d_mlp = 1000000000000 is not a size"):
        Store.open(copy)


class _Canary:
    """Unpickling this creates a file: proof that stored bytes were unpickled."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_stored_bytes_are_never_unpickled(copy, tmp_path):
    canary = tmp_path / "unpickled"
    _Canary.path = str(canary)

    def edit(files, run):
        meta = run / "hidden" / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["data_type"] = "object"
        doc["codecs"] = [{"name": "numcodecs.pickle", "configuration": {"protocol": 4}}]
        meta.write_text(json.dumps(doc))
        files["hidden/zarr.json"] = FileRecord.of(meta.read_bytes())
        chunk = run / "hidden" / "c" / "0" / "0" / "0"
        chunk.write_bytes(pickle.dumps(np.array([_Canary()], dtype=object)))
        files["hidden/c/0/0/0"] = FileRecord.of(chunk.read_bytes())
    _edit_run_catalog(copy, edit)
    with pytest.raises(DamagedStoreError, match="not an array in the layout tnstore writes"):
        Store.open(copy).states("hidden", layers=[0])
    assert not tnstore.verify(copy).ok
    with pytest.raises(DamagedStoreError):
        tnstore.export(copy, tmp_path / "out", arrays=["hidden"])
    assert not canary.exists()


def test_stored_sql_is_never_executed(copy, monkeypatch, capsys):
    """where_sql, sets_sql, grouping and label_spec are stored text: analyses compare them, never run them."""
    boom = "error('stored SQL was executed')"
    _edit_parts(copy, "transfer_neurons", "where_sql", boom)
    _edit_parts(copy, "group_stats", "grouping", boom) if (copy / "tables" / "group_stats").is_dir() else None
    _edit_parts(copy, "runs", "command", "touch /tmp/never; \x1b[2J")
    for args in (["neurons", "list", copy], ["neurons", "random", copy, "--like", "type=1,lang=ja"],
                 ["stats", "corr-ratio", copy], ["stats", "jaccard", copy, "--type", "1", "--top", "10"],
                 ["info", copy], ["verify", copy], ["export", copy, copy.parent / "exported", "--tables", "all"]):
        code, out, err = run_cli(monkeypatch, capsys, *args)
        assert code == 0, (args, err)
        assert "\x1b" not in out
    assert not Path("/tmp/never").exists()

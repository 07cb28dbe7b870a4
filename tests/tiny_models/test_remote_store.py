"""Remote, read-only stores (issue 10): a real tiny store served over loopback HTTP (Range requests, no folder
listings) and from a moto S3 server on 127.0.0.1 gives every result the local store gives; reads fetch only the
chunks they need; writes are refused in one line, or go to a local results folder."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import tnstore
from tests.cli_runner import run_cli
from tests.loopback import S3_ENV, env_for_s3, http_server, s3_options, s3_server, upload
from tnstore.errors import RemoteStoreError

VOLATILE = {"seconds", "created_at", "finished_at", "started_at"}


@pytest.fixture(scope="module")
def pristine(tiny_store_factory, tmp_path_factory) -> Path:
    """A captured store with a detection in it (what a teammate would share)."""
    path = tmp_path_factory.mktemp("remote") / "store"
    shutil.copytree(tiny_store_factory("tiny-llama", ("ja",), 40), path)
    tnstore.detect(path, type=1, lang="ja", top=8)
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TNSTORE_CACHE", str(tmp_path / "cache"))
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def http(pristine):
    with http_server(pristine) as (url, requests):
        yield url, requests


@pytest.fixture(scope="module")
def s3(pristine):
    import os

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        with s3_server() as (endpoint, requests):
            yield upload(pristine, endpoint, "teammate"), endpoint, requests
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _same(a: pa.Table, b: pa.Table) -> None:
    keep = [c for c in a.column_names if c not in VOLATILE]
    assert a.select(keep).equals(b.select(keep)), (a.select(keep).slice(0, 3), b.select(keep).slice(0, 3))


def _results(store, results_dir: Path | None) -> dict[str, object]:
    """Every kind of read and analysis, on a Store; results written to `results_dir` for a remote store."""
    s = tnstore.open(store, results=results_dir) if results_dir else tnstore.open(store)
    out: dict[str, object] = {"info": s.info().to_dict()["tables"], "sql": s.query(
        "SELECT lang, count(*) AS n FROM sentences GROUP BY lang ORDER BY lang")}
    out["states"] = s.states("hidden", where="lang = 'ja'", layers=[0, 2]).values
    out["mlp_act"] = s.states("mlp_act", split="train", layers=[1]).values
    out["detect"] = tnstore.detect(s, type=2, lang="ja", top=6).ranking_arrow
    out["random"] = tnstore.neurons.random_baseline(s, {"type": "1", "lang": "ja"}, seed=3).neurons
    out["corr"] = tnstore.stats.corr_ratio(s, label="language").summary_arrow
    out["pca"] = tnstore.latent.pca(s, layers=[1, 3]).table_arrow
    out["knn"] = tnstore.latent.knn(s, [3], layers=[2]).table_arrow
    out["listed"] = tnstore.neurons.list_sets(s).arrow()
    return out


def _compare(remote: dict, local: dict) -> None:
    assert remote["info"] == local["info"]
    for key in ("sql", "detect", "corr", "pca", "knn", "listed"):
        _same(remote[key], local[key])
    for key in ("states", "mlp_act"):
        np.testing.assert_array_equal(remote[key], local[key])
    np.testing.assert_array_equal(np.asarray(remote["random"]), np.asarray(local["random"]))


@pytest.fixture(scope="module")
def local_results(pristine, tmp_path_factory):
    copy = tmp_path_factory.mktemp("local") / "store"
    shutil.copytree(pristine, copy)
    return _results(copy, None)


def test_http_store_gives_every_result_the_local_store_gives(http, pristine, local_results, tmp_path):
    url, _ = http
    before = sorted(p.name for p in pristine.rglob("*"))
    _compare(_results(url, tmp_path / "results"), local_results)
    assert sorted(p.name for p in pristine.rglob("*")) == before, "nothing is written to the served store"
    assert (tmp_path / "results" / "tables" / "transfer_neurons").is_dir()


def test_s3_store_gives_every_result_the_local_store_gives(s3, local_results, tmp_path):
    url, endpoint, _ = s3
    opened = tnstore.open(url, storage_options=s3_options(endpoint), results=tmp_path / "results")
    _compare(_results(opened, None), local_results)


def test_reads_fetch_only_the_chunks_they_need(http, s3):
    for url, requests, options in ((http[0], http[1], None), (s3[0], s3[2], s3_options(s3[1]))):
        s = tnstore.open(url, storage_options=options)
        seg = s.segments()[0]
        seg.reader("mlp_act")  # metadata (the run's catalog, zarr.json) is read once per Store
        requests.clear()
        rows = s.query("SELECT row FROM sentences WHERE lang = 'ja' ORDER BY row")["row"].to_numpy()
        requests.clear()
        s.read_rows("mlp_act", rows, 1)
        chunk_rows = seg.reader("mlp_act").chunks[0]
        wanted = {f"mlp_act/c/{r}/1/0" for r in sorted(set((rows // chunk_rows).tolist()))}
        fetched = [p for p in requests.paths("GET")]
        assert len(fetched) == len(wanted), fetched
        assert {p.split(".zarr/", 1)[1] for p in fetched} == wanted, fetched
        assert not requests.paths("HEAD")


def test_http_server_needs_no_folder_listing(http):
    url, requests = http
    requests.clear()
    tnstore.open(url).info()
    assert all(not p.endswith("/") for p in requests.paths("GET")), "every request names a file from a catalog"


def test_writes_to_a_remote_store_are_refused_in_one_line(http, monkeypatch, capsys, tmp_path):
    url, _ = http
    with pytest.raises(RemoteStoreError, match="remote and read-only; pass results LOCAL_DIR"):
        tnstore.detect(url, type=1, lang="ja", top=5)
    code, _, err = run_cli(monkeypatch, capsys, "detect", url, "--type", "1", "--lang", "ja", "--top", "5")
    assert code == 2 and err.count("\n") == 1 and "pass --results LOCAL_DIR" in err, err
    code, _, err = run_cli(monkeypatch, capsys, "capture", "--model", "tiny-llama", "--store", url, "--corpus",
                           str(Path(tnstore.__file__).parent / "data" / "demo_corpus.jsonl"))
    assert code == 2 and err.count("\n") == 1, err
    # With --results the analysis runs, and a later command given the same folder sees its tables.
    results = tmp_path / "mine"
    code, out, err = run_cli(monkeypatch, capsys, "detect", url, "--type", "1", "--lang", "ja", "--top", "4",
                             "--results", results)
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "sql", url, "SELECT count(*) AS n FROM transfer_neurons "
                             "WHERE top = 4", "--results", results, "--format", "csv")
    assert code == 0 and out.strip().splitlines()[-1] == "4", (out, err)


def test_cli_on_s3_and_verify(s3, pristine):
    """The installed command on an s3:// URL in a fresh process, its endpoint from the environment."""
    url, endpoint, _ = s3
    env = {**env_for_s3(), "AWS_ENDPOINT_URL": endpoint, "TNSTORE_CACHE": str(pristine.parent / "cli-cache")}
    cli = [sys.executable, "-m", "tnstore.cli.app"]
    done = subprocess.run(cli + ["info", url], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "80 captured sentences" in done.stdout
    done = subprocess.run(cli + ["verify", url], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "sound" in done.stdout, done.stdout + done.stderr


def test_verify_a_remote_store_finds_a_damaged_chunk(pristine, tmp_path):
    copy = tmp_path / "served"
    shutil.copytree(pristine, copy)
    chunk = sorted(p for p in (copy / "segments").rglob("mlp_act/c/*/*/0"))[0]
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with http_server(copy) as (url, _):
        report = tnstore.verify(url)
        assert not report.ok and len(report.problems) == 1
        assert report.problems[0].kind == "corrupt" and report.problems[0].file.endswith(
            str(chunk.relative_to(copy)))
        assert tnstore.verify(url, fast=True).ok


def test_a_results_folder_belongs_to_one_store(http, tmp_path):
    """A results folder records the store and model it belongs to; another store's is refused."""
    from tests.stats_helpers import write_synthetic_store
    from tnstore.errors import ArgumentError

    url, _ = http
    results = tmp_path / "results"
    tnstore.neurons.random_baseline(tnstore.open(url, results=results), {"type": "1", "lang": "ja"}, seed=5)
    other = write_synthetic_store(tmp_path / "other", np.zeros((8, 2, 3)), ["en", "ja"] * 4)
    with pytest.raises(ArgumentError, match="holds results of store"):
        tnstore.open(other.path, results=results)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(ArgumentError, match="not empty and not a tnstore results folder"):
        tnstore.open(url, results=tmp_path / "full")

"""The streaming passes on a dask.distributed LocalCluster (2 worker processes on loopback) give the local results.

Tolerances. The cluster runs the same per-block arithmetic as the local pass; what differs is the order of float64
additions (partials merged in a tree) and, for detect, the float32 products: OpenBLAS rounds them differently with
its thread count (a worker has one thread, the test process two), exactly as two local runs with different
OPENBLAS_NUM_THREADS do. Hence: group_stats shifts and counts equal, sums within 1e-9 of the layer's largest
value (measured ~1e-16); η², F, p relative 1e-9; gathered activations (Mann-Whitney) equal; detect scores within
1e-6 of the largest score (measured ~4e-9) with the same top set; latent centroid cosines within 1e-12.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tnstore
from tests.cli_runner import run_cli
from tests.conftest import TATOEBA
from tests.stats_helpers import random_neurons, write_tn_set
from tnstore.compute import cluster
from tnstore.kernels import group_stats as GS
from tnstore.store.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """A float16 tiny-llama store: en-ja and en-nl train pairs (two runs, so two segments), chunks of 16 rows."""
    path = tmp_path_factory.mktemp("dask") / "store"
    for lang in ("ja", "nl"):
        from tnstore.capture.api import capture_corpus

        capture_corpus(store=path, corpus=TATOEBA / f"en-{lang}.parallel.train.jsonl", model="tiny-llama",
                       limit=60, device="cpu", storage_dtype="float16", progress=False, chunk_rows=16)
    store = Store.open(path)
    rng = np.random.default_rng(1)
    n_layers, d_mlp = store.model_facts["n_layers"], store.model_facts["d_mlp"]
    for lang in ("ja", "nl"):
        write_tn_set(store, f"{lang}-t1", lang, 1, random_neurons(rng, 25, (0, 3), d_mlp), layers=(0, 3))
        write_tn_set(store, f"{lang}-t2", lang, 2, random_neurons(rng, 15, (3, n_layers), d_mlp),
                     layers=(3, n_layers))
    return path


@pytest.fixture(scope="module")
def client():
    with cluster.session(tnstore.Scheduler.local(2)) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        yield c


def _copy(path: Path, tmp_path: Path, name: str) -> Path:
    """A private copy of the captured store (no group_stats yet), so each pass computes its own statistics."""
    return Path(shutil.copytree(path, tmp_path / name))


def _stats(path: Path, stats_id: str) -> dict[str, np.ndarray]:
    table = Store.open(path).query("SELECT * FROM group_stats WHERE stats_id = ? ORDER BY group_value, layer, "
                                   "neuron", [stats_id])
    return {c: table.column(c).to_numpy() for c in ("layer", "neuron", "n", "shift", "sum", "sumsq")}


def test_group_stats_on_the_cluster_equal_the_local_pass(store_path, client, monkeypatch, tmp_path):
    here, there = _copy(store_path, tmp_path, "here"), _copy(store_path, tmp_path, "there")
    local = tnstore.stats.groups(here)
    local_stats = _stats(here, local.stats_id)
    monkeypatch.setattr(GS, "TASK_ROWS", 16)  # 15 tasks per layer: a two-level tree of merges, across segments
    far = tnstore.stats.groups(there, scheduler=client)
    assert far.stats_id == local.stats_id and not far.reused and far.group_counts == local.group_counts
    far_stats = _stats(there, far.stats_id)
    for column in ("layer", "neuron", "n", "shift"):
        np.testing.assert_array_equal(far_stats[column], local_stats[column])
    for column in ("sum", "sumsq"):
        scale = np.abs(local_stats[column]).max()
        np.testing.assert_allclose(far_stats[column], local_stats[column], rtol=0, atol=1e-9 * scale)


def test_corr_ratio_and_lang_neurons_on_the_cluster(store_path, client, monkeypatch, tmp_path):
    def rows(path: Path, table: str) -> dict[str, np.ndarray]:
        t = Store.open(path).query(f"SELECT * FROM {table} ORDER BY ALL")
        return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}

    here, there = _copy(store_path, tmp_path, "here"), _copy(store_path, tmp_path, "there")
    local = tnstore.stats.corr_ratio(here, label="language")
    local_rows = rows(here, "tn_corr_ratio")
    local_lang = tnstore.stats.lang_neurons(here)
    local_lang_rows = rows(here, "lang_neurons")
    monkeypatch.setattr(GS, "TASK_ROWS", 32)
    # Reused stats (the local pass's): the Mann-Whitney activations are still gathered on the cluster.
    far = tnstore.stats.corr_ratio(here, label="language", scheduler=client)
    assert far.reused_stats and far.group_counts == local.group_counts
    far_rows = rows(here, "tn_corr_ratio")
    np.testing.assert_array_equal(far_rows["mwu_p"], local_rows["mwu_p"])
    for column in ("eta2", "anova_f", "anova_p"):
        np.testing.assert_allclose(far_rows[column], local_rows[column], rtol=1e-9)
    # Fresh stats on the cluster, the Mann-Whitney activations gathered in the same pass.
    far = tnstore.stats.corr_ratio(there, label="language", scheduler=client)
    assert not far.reused_stats
    far_rows = rows(there, "tn_corr_ratio")
    np.testing.assert_array_equal(far_rows["mwu_p"], local_rows["mwu_p"])
    for column in ("eta2", "anova_f", "anova_p"):
        np.testing.assert_allclose(far_rows[column], local_rows[column], rtol=1e-9)
    far_lang = tnstore.stats.lang_neurons(there, scheduler=client)
    assert far_lang.counts_arrow.equals(local_lang.counts_arrow)
    np.testing.assert_allclose(rows(there, "lang_neurons")["eta2"], local_lang_rows["eta2"], rtol=1e-9)


@pytest.mark.parametrize("type_", [1, 2])
def test_detect_on_the_cluster(store_path, client, type_):
    def scores(analysis_id: str) -> np.ndarray:
        return Store.open(store_path).query("SELECT score FROM neuron_scores WHERE analysis_id = ? ORDER BY layer, "
                                            "neuron", [analysis_id]).column("score").to_numpy()

    local = tnstore.detect(store_path, type=type_, lang="ja", top=30, max_rows=32)
    local_scores = scores(local.settings.analysis_id)
    local_centroids = Store.open(store_path).query("SELECT centroid FROM centroids WHERE analysis_id = ? ORDER BY "
                                                   "layer", [local.settings.analysis_id]).column(0).to_pylist()
    far = tnstore.detect(store_path, type=type_, lang="ja", top=30, max_rows=32, scheduler=client)
    assert far.set_id == local.set_id and far.n_sentences == local.n_sentences == 60
    np.testing.assert_allclose(scores(far.settings.analysis_id), local_scores, rtol=0,
                               atol=1e-6 * np.abs(local_scores).max())
    assert set(zip(*(far.ranking_arrow.column(c).to_pylist() for c in ("layer", "neuron")))) == \
        set(zip(*(local.ranking_arrow.column(c).to_pylist() for c in ("layer", "neuron"))))
    far_centroids = Store.open(store_path).query("SELECT centroid FROM centroids WHERE analysis_id = ? ORDER BY "
                                                 "layer", [far.settings.analysis_id]).column(0).to_pylist()
    np.testing.assert_allclose(np.array(far_centroids), np.array(local_centroids), rtol=1e-6)


def test_latent_centroids_on_the_cluster(store_path, client):
    local = tnstore.latent.centroids(store_path, where="ablation IS NULL")
    # By address, as `--scheduler tcp://HOST:PORT` connects to a running scheduler.
    far = tnstore.latent.centroids(store_path, where="ablation IS NULL",
                                   scheduler=tnstore.Scheduler.at(client.scheduler.address))
    assert far.analysis_ids == local.analysis_ids
    for column in ("hidden_index", "lang_a", "lang_b", "n_a", "n_b"):
        assert far.table_arrow.column(column).equals(local.table_arrow.column(column))
    np.testing.assert_allclose(far.table_arrow.column("cosine").to_numpy(),
                               local.table_arrow.column("cosine").to_numpy(), rtol=0, atol=1e-12)


def test_cli_scheduler_local_and_errors(store_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "detect", store_path, "--type", "2", "--lang", "nl", "--top", "5",
                             "--scheduler", "local:2")
    assert code == 0, err
    assert "Type-2 transfer neurons for nl" in out
    code, out, err = run_cli(monkeypatch, capsys, "stats", "groups", store_path, "--scheduler", "nowhere")
    assert code == 2 and err.startswith("error: --scheduler 'nowhere' must be a dask scheduler address")
    code, out, err = run_cli(monkeypatch, capsys, "stats", "groups", store_path, "--scheduler", "local:0")
    assert code == 2 and "--scheduler local:0: give a positive number" in err
    with pytest.raises(tnstore.ArgumentError, match="scheduler"):
        tnstore.stats.groups(store_path, scheduler="local:2")  # the library takes a typed Scheduler, not text


def test_unreachable_scheduler_is_one_line(store_path, monkeypatch, capsys):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    code, out, err = run_cli(monkeypatch, capsys, "latent", "centroids", store_path, "--where", "ablation IS NULL",
                             "--scheduler", "tcp://127.0.0.1:9")
    assert code == 2 and err.startswith("error: cannot reach the dask scheduler at tcp://127.0.0.1:9")
    assert len(err.strip().splitlines()) == 1


def test_without_scheduler_dask_is_not_imported(store_path):
    script = ("import sys, tnstore; s = tnstore.open(sys.argv[1]); tnstore.stats.groups(s); "
              "tnstore.detect(s, type=1, lang='ja', top=5); tnstore.latent.centroids(s, where='ablation IS NULL'); "
              "print([m for m in ('dask', 'distributed') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", script, str(store_path)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

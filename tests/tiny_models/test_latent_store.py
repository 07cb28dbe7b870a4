"""`tnstore latent ...` on a tiny-model store (MKQA en/ja/nl/ko/it + Tatoeba en-ja non-parallel pairs), checked
against references that read the raw Zarr arrays and pick the sentences in plain Python from their definitions."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from sklearn.decomposition import PCA

from tests.conftest import MKQA, TATOEBA, capture_into
from tests.tiny_models.test_latent_kernels import _cos, _dims_reference, _mutual_knn_reference, _probe_reference
from tests.cli_runner import run_cli
from tnstore.analysis import latent
from tnstore.capture.api import capture_corpus
from tnstore.errors import TnstoreError
from tnstore.store.store import Store

NONPARALLEL = TATOEBA / "en-ja.nonparallel.jsonl"
LIMIT = 24
N_HIDDEN = 5  # tiny-llama: 4 layers + embeddings
ABLATION = "handpicked"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """MKQA (LIMIT questions × 5 languages), again its first 8 (duplicates that must count once), LIMIT en-ja
    non-parallel pairs, and those pairs replayed with a few neurons deactivated (sentences.ablation)."""
    path = tmp_path_factory.mktemp("latent") / "store"
    capture_into(path, MKQA, "tiny-llama", limit=LIMIT)
    capture_into(path, NONPARALLEL, "tiny-llama", limit=LIMIT, kind="nonparallel")
    capture_into(path, MKQA, "tiny-llama", limit=8)
    store = Store.open(path)
    neurons = [{"name": ABLATION, "origin": "test", "like_set_id": None, "seed": None, "match_layers": None, "source": None, "lang": None, "type": None,
                "layer_start": 0, "layer_end": 4, "layer": layer, "neuron": n}
               for layer in range(4) for n in (1, 7, 30)]
    with store.writing("test"):
        store.write_rows("neuron_sets", pa.Table.from_pylist(neurons))
    capture_corpus(store=path, corpus=NONPARALLEL, model="tiny-llama", kind="nonparallel", limit=LIMIT,
                   device="cpu", storage_dtype="float32", progress=False, ablate=ABLATION, chunk_rows=64)
    return path


# ------------------------------------------------------------------------------------------------ references
def raw(path: Path, name: str) -> np.ndarray:
    """array `name` of every row, straight from each run's Zarr group (not through Store)."""
    runs = sorted(_parquet_rows(path / "tables" / "runs"), key=lambda r: r["row_start"])
    return np.concatenate([zarr.open_group(str(path / "segments" / f"{r['run_id']}.zarr"), mode="r")[name][:]
                           for r in runs]).astype(np.float64)


def _parquet_rows(folder: Path) -> list[dict]:
    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def sentences(path: Path) -> list[dict]:
    return _parquet_rows(path / "tables" / "sentences")


def group_rows(path: Path, keep) -> dict[str, list[int]]:
    """Rows `keep` accepts, one per (lang, split, ablation, pair id): the lowest; by language."""
    first: dict[tuple, int] = {}
    for s in sentences(path):
        if keep(s):
            key = (s["lang"], s["split"], s["ablation"], s["pair_id"] or f"row:{s['row']}")
            first[key] = min(first.get(key, s["row"]), s["row"])
    out = defaultdict(list)
    for (lang, *_), row in sorted(first.items(), key=lambda item: item[1]):
        out[lang].append(row)
    return dict(out)


def pair_rows(path: Path, lang: str, kind: str, keep=lambda s: s["ablation"] is None) -> list[tuple[int, int]]:
    """(en row, L2 row) of the en-lang pairs of `kind`, sorted by the L2 row."""
    side: dict[tuple, int] = {}
    for s in sentences(path):
        if keep(s) and s["kind"] == kind and s["lang"] in ("en", lang) and s["split"] == "train":
            key = (s["lang"], s["split"], s["pair_id"])
            side[key] = min(side.get(key, s["row"]), s["row"])
    pairs = [(side[("en", split, pid)], row) for (lg, split, pid), row in side.items()
             if lg == lang and ("en", split, pid) in side]
    return sorted(pairs, key=lambda p: p[1])


def default_groups(path: Path) -> dict[str, list[int]]:
    return group_rows(path, lambda s: s["kind"] == "parallel" and s["ablation"] is None and s["split"] == "train")


def stored(path: Path, table: str, analysis_id: str) -> list[dict]:
    return [r for r in _parquet_rows(path / "tables" / table) if r["analysis_id"] == analysis_id]


# ------------------------------------------------------------------------------------------------ analyses
def test_pca_matches_sklearn_on_the_deduplicated_selection(store_path):
    result = latent.pca(store_path)
    groups = default_groups(store_path)
    rows = sorted(r for rs in groups.values() for r in rs)
    assert len(rows) == 5 * LIMIT  # the repeated first 8 questions count once, non-parallel pairs not at all
    hidden = raw(store_path, "hidden")
    table = stored(store_path, "latent_pca", result.analysis_ids[0])
    assert len(table) == N_HIDDEN * len(rows)
    for index in range(N_HIDDEN):
        mine = sorted((r for r in table if r["hidden_index"] == index), key=lambda r: r["row"])
        assert [r["row"] for r in mine] == rows
        ref = PCA(n_components=2, svd_solver="full").fit(hidden[rows, index])
        np.testing.assert_allclose([mine[0]["evr1"], mine[0]["evr2"]], ref.explained_variance_ratio_, rtol=1e-6)
        coords = ref.transform(hidden[rows, index])
        for j, name in enumerate(("pc1", "pc2")):
            got = np.array([r[name] for r in mine])
            np.testing.assert_allclose(got, np.sign(got @ coords[:, j]) * coords[:, j], rtol=1e-5,
                                       atol=1e-6 * np.abs(coords).max())


@pytest.mark.parametrize("center", [False, True])
def test_dims_match_the_svd_definition(store_path, center):
    result = latent.dims(store_path, [0.9, 0.95, 0.99], center=center)
    hidden = raw(store_path, "hidden")
    got = {(r["hidden_index"], r["lang"], r["threshold"]): r["k"]
           for r in stored(store_path, "latent_dims", result.analysis_ids[0])}
    assert len(got) == N_HIDDEN * 5 * 3
    for lang, rows in default_groups(store_path).items():
        for index in range(N_HIDDEN):
            x = hidden[rows, index]
            x = x - x.mean(axis=0) if center else x
            for t in (0.9, 0.95, 0.99):
                assert got[(index, lang, t)] == _dims_reference(x, t), (lang, index, t)


def test_centroid_cosines_match_loops(store_path):
    result = latent.centroids(store_path, layers=[0, 2, 4])
    hidden = raw(store_path, "hidden")
    groups = default_groups(store_path)
    table = stored(store_path, "latent_centroid_cos", result.analysis_ids[0])
    assert len(table) == 3 * 5 * 5
    for r in table:
        ca = hidden[groups[r["lang_a"]], r["hidden_index"]].mean(axis=0)
        cb = hidden[groups[r["lang_b"]], r["hidden_index"]].mean(axis=0)
        assert r["cosine"] == pytest.approx(_cos(ca, cb), rel=1e-9, abs=1e-12)
        assert (r["n_a"], r["n_b"]) == (LIMIT, LIMIT)


def test_knn_matches_the_definition_for_every_l2(store_path):
    result = latent.knn(store_path, [3, 5])
    hidden = raw(store_path, "hidden")
    table = [r for aid in result.analysis_ids for r in stored(store_path, "latent_knn", aid)]
    assert {r["lang"] for r in table} == {"ja", "nl", "ko", "it"}
    for r in table:
        pairs = pair_rows(store_path, r["lang"], "parallel")
        assert r["n_pairs"] == len(pairs) == LIMIT
        en, l2 = (hidden[[p[side] for p in pairs], r["hidden_index"]] for side in (0, 1))
        assert r["score"] == pytest.approx(_mutual_knn_reference(en, l2, r["k"], r["tie_seed"]), abs=1e-12)
        assert (r["n_duplicate_en"], r["n_duplicate_l2"]) == (
            sum(c for c in np.unique(en, axis=0, return_counts=True)[1] if c > 1),
            sum(c for c in np.unique(l2, axis=0, return_counts=True)[1] if c > 1))
        assert r["n_identical_pairs"] == sum(bool(np.all(a == b)) for a, b in zip(en, l2))
    notes = " ".join(result.notes)
    if any(r["n_duplicate_en"] for r in table):  # byte-level tokens: questions ending alike share a state
        assert "equal similarities are ordered at random (tie_seed 0" in notes


def test_similarity_of_parallel_and_nonparallel_pairs(store_path):
    result = latent.similarity(store_path)  # only ja has non-parallel pairs
    assert any("skipped" in note and "nl" in note for note in result.notes)
    arrays = {"hidden": raw(store_path, "hidden"), "mlp_act": raw(store_path, "mlp_act")}
    table = stored(store_path, "latent_pair_similarity", result.analysis_ids[0])
    assert len(table) == 2 * (N_HIDDEN + N_HIDDEN - 1)  # no activations at the embeddings
    for r in table:
        pairs = pair_rows(store_path, "ja", r["kind"])
        layer = r["hidden_index"] if r["array_name"] == "hidden" else r["hidden_index"] - 1
        cos = [_cos(arrays[r["array_name"]][e, layer], arrays[r["array_name"]][j, layer]) for e, j in pairs]
        assert r["n_pairs"] == len(pairs) == LIMIT
        assert r["mean_cos"] == pytest.approx(np.mean(cos), abs=1e-12)
        assert r["std_cos"] == pytest.approx(np.std(cos), abs=1e-12)


def test_similarity_with_the_l2_side_deactivated(store_path):
    where = "lang = 'en' AND ablation IS NULL OR lang = 'ja' AND kind = 'nonparallel' AND ablation = 'handpicked' " \
            "OR lang = 'ja' AND kind = 'parallel' AND ablation IS NULL"
    result = latent.similarity(store_path, lang="ja", where=where, layers=[4])
    keep = lambda s: (s["ablation"] is None) != (s["lang"] == "ja" and s["kind"] == "nonparallel")  # noqa: E731
    pairs = pair_rows(store_path, "ja", "nonparallel", keep)
    assert len(pairs) == LIMIT and all(j >= 5 * LIMIT + 2 * LIMIT + 5 * 8 for _, j in pairs)  # the replayed rows
    hidden = raw(store_path, "hidden")
    got = {(r["array_name"], r["kind"]): r["mean_cos"] for r in result.table_arrow.to_pylist()}
    expected = np.mean([_cos(hidden[e, 4], hidden[j, 4]) for e, j in pairs])
    assert got[("hidden", "nonparallel")] == pytest.approx(expected, abs=1e-12)
    assert result.table_arrow.column("where_sql")[0].as_py() == where


def test_a_pair_side_from_two_ablations_is_refused(store_path):
    with pytest.raises(TnstoreError, match="from several ablations"):
        latent.similarity(store_path, lang="ja", where="split = 'train'")
    with pytest.raises(TnstoreError, match="several ablations"):
        latent.centroids(store_path, where="kind = 'nonparallel'")


def test_probe_matches_a_hand_written_cross_validation(store_path):
    result = latent.probe(store_path, lang="ja", folds=4, seed=1, layers=[0, 3])
    hidden = raw(store_path, "hidden")
    pairs = {kind: pair_rows(store_path, "ja", kind) for kind in ("parallel", "nonparallel")}
    labels = np.repeat([1, 0], LIMIT)
    for r in result.table_arrow.to_pylist():
        features = np.array([np.concatenate([hidden[e, r["hidden_index"]], hidden[j, r["hidden_index"]]])
                             for kind in ("parallel", "nonparallel") for e, j in pairs[kind]])
        ref = _probe_reference(features, labels, 4, 1)
        assert r["accuracy"] == pytest.approx(np.mean(ref), abs=1e-12)
        assert r["accuracy_std"] == pytest.approx(np.std(ref), abs=1e-12)
        assert (r["n_parallel"], r["n_nonparallel"], r["folds"]) == (LIMIT, LIMIT, 4)


def test_trajectory_matches_the_definition(store_path):
    result = latent.trajectory(store_path, lang="ko", middle=4)
    rows = default_groups(store_path)["ko"]
    c = raw(store_path, "hidden")[rows].mean(axis=0)  # (L + 1, d) centroids
    got = result.table_arrow.to_pylist()
    assert [r["hidden_index"] for r in got] == [2, 3, 4]
    for r in got:
        step = c[r["hidden_index"]] - c[r["hidden_index"] - 1]
        assert r["cos_to_path"] == pytest.approx(_cos(step, c[4] - c[1]), abs=1e-12)
        assert r["step_norm"] == pytest.approx(np.linalg.norm(step), rel=1e-9)
    assert latent.default_middle(32) == 10 and latent.default_middle(4) == 2


def test_rerun_replaces_only_the_layers_and_ks_it_computed(store_path):
    first = latent.knn(store_path, [3, 5], lang="ja")
    part = store_path / "tables" / "latent_knn" / f"{first.analysis_ids[0]}.parquet"
    before = {(r["hidden_index"], r["k"]): r["score"] for r in pq.read_table(part).to_pylist()}
    again = latent.knn(store_path, [5, 7], lang="ja", layers=range(1, 3))
    assert again.analysis_ids == first.analysis_ids  # same settings, same part
    after = {(r["hidden_index"], r["k"]): r["score"] for r in pq.read_table(part).to_pylist()}
    assert set(after) == set(before) | {(1, 7), (2, 7)}
    assert all(after[key] == value for key, value in before.items())
    other = latent.knn(store_path, [5], lang="ja", split="all")
    assert other.analysis_ids != first.analysis_ids


# ------------------------------------------------------------------------------------------------ CLI


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_cli_prints_a_per_layer_summary_and_draws(store_path, tmp_path, capsys, monkeypatch):
    for command, figure in [(("pca",), "pca.png"), (("knn", "--k", "5", "--lang", "nl"), "knn.png"),
                            (("similarity", "--layers", "2:4"), None), (("trajectory", "--middle", "3"), "t.svg")]:
        extra = ("--figure", tmp_path / figure) if figure else ()
        code, out, err = run_cli(monkeypatch, capsys, "latent", command[0], store_path, *command[1:], *extra)
        assert code == 0, err
        assert "hidden_index" in out and "wrote" in out
        if figure:
            assert (tmp_path / figure).stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (("knn", "--lang", "ja", "--k", str(LIMIT)), f"choose k <= {LIMIT - 1}"),
    (("knn", "--k", "0"), "at least 1"),
    (("knn", "--lang", "zz"), "0 parallel en-zz pairs"),
    (("knn", "--lang", "en"), "choose the L2"),
    (("similarity", "--lang", "ko"), "0 nonparallel en-ko pairs"),
    (("probe", "--lang", "ja", "--folds", str(LIMIT + 1)), f"--folds {LIMIT + 1} needs at least"),
    (("pca", "--where", "lang = = 'ja'"), "is not valid SQL over the sentences table"),
    (("pca", "--where", "no_such_column > 1"), "is not valid SQL over the sentences table"),
    (("centroids", "--where", "lang = 'zz'"), "selects no sentences"),
    (("centroids", "--where", "lang = 'en' AND ablation IS NULL"), "two or more languages"),
    (("dims", "--split", "test"), "splits in the store: train"),
    (("dims", "--thresholds", "0.9,1.5"), "--thresholds"),
    (("pca", "--layers", "7"), "hidden index 7 does not exist"),
    (("pca", "--layers", "a:b"), "--layers"),
    (("trajectory", "--middle", "1"), "--middle 1"),
    (("trajectory", "--lang", "zz"), "selects no zz sentences"),
    (("pca", "--figure", "/no/such/folder/x.png"), "does not exist"),
    (("similarity", "--lang", "ja", "--where", "split = 'train'"), "several ablations"),
])
def test_cli_error_is_one_line_and_the_store_is_unchanged(store_path, args, message, capsys, monkeypatch):
    before = snapshot(store_path)
    code, out, err = run_cli(monkeypatch, capsys, "latent", args[0], store_path, *args[1:])
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert snapshot(store_path) == before

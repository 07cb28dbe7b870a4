"""The Python API: `tnstore.open`, lazy relations, one connection, read-only stores, typed errors, part keys."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import tnstore
from tests.stats_helpers import random_neurons, write_synthetic_store, write_tn_set
from tnstore.errors import ArgumentError, ReadOnlyError, SqlError, TnstoreError
from tnstore.store.schema import load_schema, table_names


@pytest.fixture()
def store_path(tiny_store_factory, tmp_path):
    target = tmp_path / "store"
    shutil.copytree(tiny_store_factory("tiny-llama", ("ja", "ko"), 40), target)
    return target


def test_sql_is_a_lazy_relation_with_frames_at_the_edge(store_path):
    s = tnstore.open(store_path)
    rel = s.sql("SELECT lang, count(*) AS n FROM sentences WHERE split = ? GROUP BY lang ORDER BY lang", ["train"])
    assert isinstance(rel, tnstore.Relation) and isinstance(rel.duckdb, duckdb.DuckDBPyRelation)
    assert rel.arrow().to_pylist() == [{"lang": "en", "n": 80}, {"lang": "ja", "n": 40}, {"lang": "ko", "n": 40}]
    frame = rel.pl()
    assert frame.columns == ["lang", "n"] and frame["n"].to_list() == [80, 40, 40]
    assert rel.df()["n"].tolist() == [80, 40, 40]
    narrowed = s.table("sentences").filter("split = 'train' AND lang = 'ja'").project("row, text").order("row").limit(3)
    assert isinstance(narrowed, tnstore.Relation) and len(narrowed.pl()) == 3 and narrowed.columns == ["row", "text"]
    assert s.sql("SELECT 41 + 1").scalar() == 42
    assert s.connection is s.connection  # one connection, views made once


def test_df_without_pandas_says_what_to_install(store_path, monkeypatch):
    # pandas is an optional extra (pyarrow imports it on its first array wherever it is installed): without it,
    # .df() names the extra and the alternatives, and the rest of the relation keeps working.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else real(name, *a))
    rel = tnstore.open(store_path).sql("SELECT 1 AS x")
    with pytest.raises(tnstore.TnstoreError, match=r"needs pandas.*tnstore\[pandas\].*\.pl\(\)"):
        rel.df()
    assert rel.pl()["x"].to_list() == [1]


def test_sql_errors_are_sql_errors_at_build_and_at_run_time(store_path):
    s = tnstore.open(store_path)
    with pytest.raises(SqlError, match="nope"):
        s.sql("SELECT nope FROM sentences")
    late = s.sql("SELECT CAST(text AS INTEGER) FROM sentences")  # binds fine, fails when it runs
    with pytest.raises(SqlError, match="Conversion Error|Could not convert"):
        late.pl()
    with pytest.raises(TnstoreError, match="unknown table"):
        s.table("nope")


def test_views_follow_this_stores_and_other_writers_parts(store_path):
    s = tnstore.open(store_path)
    assert s.sql("SELECT count(*) FROM transfer_neurons").scalar() == 0
    tnstore.detect(s, type=1, lang="ja", top=7)  # through this Store: its views are remade
    assert s.sql("SELECT count(*) FROM transfer_neurons").scalar() == 7
    tnstore.detect(str(store_path), type=1, lang="ko", top=5)  # another Store object, as another process would
    assert s.sql("SELECT count(*) FROM transfer_neurons").scalar() == 12


def test_read_only_mode_refuses_every_write(store_path):
    before = sorted(p.name for p in store_path.rglob("*"))
    s = tnstore.open(store_path, mode="r")
    with pytest.raises(ReadOnlyError, match="read-only"):
        tnstore.detect(s, type=1, lang="ja", top=5)
    with pytest.raises(ReadOnlyError):
        with s.writing("x"):
            pass
    assert sorted(p.name for p in store_path.rglob("*")) == before
    assert s.sql("SELECT count(*) FROM sentences").scalar() == 160  # reads still work
    with pytest.raises(ArgumentError, match="mode"):
        tnstore.open(store_path, mode="w")


def test_info_is_data(store_path):
    info = tnstore.open(store_path).info()
    assert info.model["model_spec"] == "tiny-llama" and info.n_rows == 160 and info.runs.num_rows == 2
    assert info.tables["sentences"] == 160 and info.tables["transfer_neurons"] == 0
    assert info.arrays["mlp_act"]["shape"] == (4, 96)
    assert {(r["lang"], r["sentences"]) for r in info.sentences.to_pylist()} == {("en", 80), ("ja", 40), ("ko", 40)}
    json.dumps(info.to_dict(), default=str)


def test_errors_name_the_argument_and_the_cli_names_the_flag(store_path):
    with pytest.raises(ArgumentError) as caught:
        tnstore.detect(store_path, type=3, lang="ja")
    assert str(caught.value).startswith("type 3 is not 1") and caught.value.arg == "type"
    assert caught.value.rendered(lambda a: "--" + a).startswith("--type 3")
    with pytest.raises(ArgumentError) as caught:
        tnstore.stats.corr_ratio(store_path, label="family", label_sql="lang")
    assert str(caught.value) == "label_sql is only used with label sql, not label family"
    assert caught.value.rendered(lambda a: "--" + a.replace("_", "-")) == (
        "--label-sql is only used with --label sql, not --label family")


def test_a_narrower_rerun_replaces_only_its_own_sets(tmp_path):
    """corr-ratio parts are keyed by the schema's key (label, spec, where, split, set): --sets for one language
    leaves the other languages' rows as they were."""
    rng = np.random.default_rng(2)
    langs = list(rng.choice(["en", "ja", "ko"], 90))
    store = write_synthetic_store(tmp_path / "s", rng.standard_normal((90, 4, 12)), langs)
    for lang in ("ja", "ko"):
        write_tn_set(store, f"{lang}-t1", lang, 1, random_neurons(rng, 6, (0, 3), 12), layers=(0, 3))
    tnstore.stats.corr_ratio(store.path)
    query = "SELECT set_id, count(*) AS n FROM tn_corr_ratio GROUP BY set_id ORDER BY set_id"
    assert store.query(query).to_pylist() == [{"set_id": "ja-t1", "n": 6}, {"set_id": "ko-t1", "n": 6}]
    ko_before = store.query("SELECT * FROM tn_corr_ratio WHERE set_id = 'ko-t1' ORDER BY rank")
    tnstore.stats.corr_ratio(store.path, sets="lang = 'ja'")
    assert store.query(query).to_pylist() == [{"set_id": "ja-t1", "n": 6}, {"set_id": "ko-t1", "n": 6}]
    assert store.query("SELECT * FROM tn_corr_ratio WHERE set_id = 'ko-t1' ORDER BY rank").equals(ko_before)


def test_no_schema_column_is_a_reserved_word():
    reserved = {r[0] for r in duckdb.sql("SELECT keyword_name FROM duckdb_keywords() "
                                         "WHERE keyword_category = 'reserved'").fetchall()}
    columns = {(t, c) for t, spec in load_schema()["tables"].items() for c in spec["columns"]}
    assert not {(t, c) for t, c in columns if c.lower() in reserved}
    assert "array_name" in load_schema()["tables"]["latent_pair_similarity"]["columns"]


def test_every_table_declares_a_key_of_its_own_columns():
    for table, spec in load_schema()["tables"].items():
        assert set(spec["key"]) <= set(spec["columns"]), table
        assert set(spec.get("merge_on", [])) <= set(spec["columns"]), table
    assert table_names()[0] == "model"


def test_an_older_store_gets_a_one_line_message(store_path):
    manifest = store_path / "tnstore.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(TnstoreError, match="format version 1, this tnstore reads version 2; capture it again"):
        tnstore.open(store_path)


def test_import_and_help_load_no_heavy_library():
    code = ("import sys, tnstore; from tnstore.cli import app; "
            "heavy = [m for m in ('torch', 'duckdb', 'zarr', 'polars', 'numpy', 'pyarrow') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    probe = ("import sys, runpy; sys.argv = ['tnstore', '--help']\n"
             "try:\n    runpy.run_module('tnstore.cli.app', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', [m for m in ('torch', 'duckdb', 'zarr', 'polars') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "Usage" in done.stdout and done.stdout.strip().endswith("HEAVY []")


def test_public_surface():
    assert set(tnstore.__all__) >= {"open", "Store", "detect", "stats", "latent", "neurons", "capture_corpus", "SqlError",
                                    "TnstoreError", "ArgumentError", "__version__"}
    assert callable(tnstore.stats.corr_ratio) and callable(tnstore.latent.knn) and callable(tnstore.neurons.load_set)
    with pytest.raises(AttributeError):
        tnstore.nope  # noqa: B018


def test_cli_help_defaults_match_the_library():
    from tnstore.analysis import latent
    from tnstore.cli import options
    from tnstore.store import selection

    assert options.PLAIN == selection.PLAIN == latent.PAIR_WHERE
    assert options.PLAIN_PARALLEL == selection.PLAIN_PARALLEL == latent.DEFAULT_WHERE


def test_threads_follow_tnstore_threads():
    code = "from tnstore.compute.parallel import workers; import os; print(workers(), os.environ['OMP_NUM_THREADS'])"
    env = {**__import__("os").environ, "TNSTORE_THREADS": "3"}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-c", "import tnstore; " + code], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout.split() == ["3", "3"]
    from tnstore.compute.parallel import available_cores, workers

    assert workers() == available_cores() or workers() == int(__import__("os").environ["TNSTORE_THREADS"])


def test_write_rows_splits_by_key_and_merges_on_the_declared_columns(tmp_path):
    store = write_synthetic_store(tmp_path / "s", np.zeros((4, 2, 3)), ["en", "ja", "en", "ja"])
    rows = pa.table({"analysis_id": ["a", "a", "b"], "where_sql": ["w"] * 3, "split": ["train"] * 3,
                     "condition": ["none"] * 3, "hidden_index": [1, 2, 1], "lang_a": ["en"] * 3,
                     "lang_b": ["ja"] * 3, "n_a": [2] * 3, "n_b": [2] * 3, "cosine": [0.1, 0.2, 0.3]})
    with store.writing("t"):
        assert sorted(store.write_rows("latent_centroid_cos", rows)) == ["a", "b"]
        store.write_rows("latent_centroid_cos", pa.table({**rows.slice(0, 1).to_pydict(), "cosine": [0.9]}))
    got = store.query("SELECT analysis_id, hidden_index, cosine FROM latent_centroid_cos ORDER BY ALL").to_pylist()
    assert got == [{"analysis_id": "a", "hidden_index": 1, "cosine": 0.9},
                   {"analysis_id": "a", "hidden_index": 2, "cosine": 0.2},
                   {"analysis_id": "b", "hidden_index": 1, "cosine": 0.3}]
    with pytest.raises(RuntimeError, match="outside Store.writing"):
        store.write_rows("latent_centroid_cos", rows)

"""`tnstore stats corr-ratio` / `lang-neurons` / `groups` on a synthetic store, against scipy and numpy.

Every value the commands write is recomputed here from the raw activations (read straight from Zarr) with
scipy.stats.f_oneway, scipy.stats.mannwhitneyu and η² written from its definition, to 1e-6 relative.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps

from tests.cli_runner import run_cli
from tests.stats_helpers import (
    eta2_reference, random_neurons, raw_activations, write_synthetic_store, write_tn_set,
)
from tnstore.analysis.stats.core import DEFAULT_WHERE, compute_group_stats, eta2_table, query, select_sentences
from tnstore.store.store import Store

LANGS = ["en", "ja", "nl", "ko", "it"]
RTOL = 1e-6


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """260 sentences (5 languages + 20 'de'), 4 layers × 12 neurons, 29 test-split rows, 20 rows of an ablation
    replay (left out by the default --where); TN sets for 4 languages."""
    rng = np.random.default_rng(11)
    n, n_layers, d = 260, 4, 12
    langs = np.array(list(rng.choice(LANGS, n - 20)) + ["de"] * 20)
    rng.shuffle(langs)
    splits = np.where(np.arange(n) % 9 == 0, "test", "train")
    ablations = [("ja-t1" if i % 13 == 5 else None) for i in range(n)]
    acts = rng.standard_normal((n, n_layers, d)) + rng.uniform(-1, 1, d)
    for i, lang in enumerate(LANGS):  # language-dependent neurons so that η² spans small to large values
        acts[langs == lang, :, i] += 0.4 * (i + 1)
        acts[np.isin(langs, ["ja", "ko"]), 2, 5] += 1.5
    path = tmp_path_factory.mktemp("stats") / "store"
    store = write_synthetic_store(path, acts, list(langs), splits=list(splits), ablations=ablations, n_runs=3)
    for lang in ["ja", "nl", "ko", "it"]:
        write_tn_set(store, f"{lang}-t1", lang, 1, random_neurons(rng, 14, (0, 3), d), layers=(0, 3))
        write_tn_set(store, f"{lang}-t2", lang, 2, random_neurons(rng, 10, (3, 4), d), layers=(3, 4))
    plain_train = (splits == "train") & np.array([a is None for a in ablations])
    return path, raw_activations(path), langs, plain_train


def _rows(path, sql: str, params: list) -> list[dict]:
    return Store.open(path).query(sql, params).to_pylist()


def _check_row(row: dict, x: np.ndarray, groups: np.ndarray, positive: str | None) -> None:
    """One tn_corr_ratio row against scipy/numpy; `groups` (None = left out) are the label groups of x's rows."""
    keep = np.array([g is not None for g in groups])
    values, labels = x[keep], groups[keep].astype(str)
    names = sorted(set(labels))
    f, p = sps.f_oneway(*[values[labels == g] for g in names])
    assert row["n"] == len(values) and row["n_groups"] == len(names)
    assert row["eta2"] == pytest.approx(eta2_reference(values[:, None], labels)[0], rel=RTOL)
    assert row["anova_f"] == pytest.approx(f, rel=RTOL)
    assert row["anova_p"] == pytest.approx(p, rel=RTOL)
    assert (row["df_between"], row["df_within"]) == (len(names) - 1, len(values) - len(names))
    if positive is None:
        assert row["mwu_p"] is None
    else:
        mwu = sps.mannwhitneyu(values[labels == positive], values[labels != positive]).pvalue
        assert row["mwu_p"] == pytest.approx(mwu, rel=RTOL)


def test_language_label_matches_scipy(synth, capsys, monkeypatch):
    path, acts, langs, default = synth
    code, out, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--label", "language")
    assert code == 0, err
    assert "eta2_top10" in out and "wrote 96 rows to tn_corr_ratio" in out
    train = default
    rows = _rows(path, "SELECT * FROM tn_corr_ratio WHERE label = 'language'", [])
    assert len(rows) == 96 and {r["lang"] for r in rows} == {"ja", "nl", "ko", "it"}
    for row in rows:
        x = acts[train, row["layer"], row["neuron"]]
        groups = np.where(langs[train] == row["lang"], row["lang"], "rest").astype(object)
        assert row["positive"] == row["lang"]
        _check_row(row, x, groups, row["lang"])


def test_family_label_leaves_other_languages_out(synth, capsys, monkeypatch):
    path, acts, langs, default = synth
    code, out, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--label", "family",
                             "--family", "en,nl,it:ja,ko")
    assert code == 0, err
    rows = _rows(path, "SELECT * FROM tn_corr_ratio WHERE label = 'family'", [])
    assert len(rows) == 96
    train = default
    family = {"en": "en,nl,it", "nl": "en,nl,it", "it": "en,nl,it", "ja": "ja,ko", "ko": "ja,ko"}
    groups = np.array([family.get(lang) for lang in langs[train]], dtype=object)  # 'de' is in no family
    for row in rows:
        assert row["positive"] == "en,nl,it" and row["label_spec"] == "en,nl,it:ja,ko"
        _check_row(row, acts[train, row["layer"], row["neuron"]], groups, "en,nl,it")


def test_sql_label_with_three_groups_and_where(synth, capsys, monkeypatch):
    path, acts, langs, default = synth
    expr = "CASE WHEN lang IN ('ja', 'ko') THEN 'cjk' WHEN lang = 'en' THEN 'en' WHEN lang <> 'de' THEN 'eu' END"
    mixed = "split = 'train' AND row % 2 = 0"  # replaces the default, so it keeps the ablation replays: refused
    code, _, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--label", "sql", "--label-sql", expr,
                           "--where", mixed, "--sets", "type = 1")
    assert code == 2 and "several ablations" in err and err.startswith("error: --where") and err.count("\n") == 1
    where = mixed + " AND ablation IS NULL"
    code, _, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--label", "sql", "--label-sql", expr,
                           "--where", where, "--sets", "type = 1")
    assert code == 0, err
    rows = _rows(path, "SELECT * FROM tn_corr_ratio WHERE label = 'sql' AND where_sql = ?", [where])
    assert len(rows) == 56 and {r["set_id"] for r in rows} == {"ja-t1", "nl-t1", "ko-t1", "it-t1"}
    index = np.arange(len(langs))
    picked = (index % 2 == 0) & (index % 9 != 0) & (index % 13 != 5)  # train, even rows, no replays
    mapping = {"ja": "cjk", "ko": "cjk", "en": "en", "nl": "eu", "it": "eu"}
    groups = np.array([mapping.get(lang) for lang in langs[picked]], dtype=object)
    for row in rows:
        _check_row(row, acts[picked, row["layer"], row["neuron"]], groups, None)


def test_all_neurons_adds_every_neuron_for_every_language(synth, capsys, monkeypatch):
    path, acts, langs, default = synth
    where = "(split = 'test' OR lang = 'de') AND ablation IS NULL"
    index = np.arange(len(langs))
    splits = np.where(index % 9 == 0, "test", "train")
    code, _, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--all-neurons", "--where", where,
                           "--split", "all")
    assert code == 0, err
    picked = ((splits == "test") | (langs == "de")) & (index % 13 != 5)
    every = _rows(path, "SELECT * FROM tn_corr_ratio WHERE where_sql = ? AND set_id IS NULL "
                        "ORDER BY lang, layer, neuron", [where])
    present = sorted(set(langs[picked]))
    assert len(every) == len(present) * 4 * 12
    x = acts[picked].reshape(picked.sum(), -1)
    for lang in present:
        mine = [r for r in every if r["lang"] == lang]
        labels = np.where(langs[picked] == lang, lang, "rest")
        np.testing.assert_allclose([r["eta2"] for r in mine], eta2_reference(x, labels), rtol=RTOL)
        f, p = sps.f_oneway(x[labels == lang], x[labels != lang], axis=0)
        np.testing.assert_allclose([r["anova_f"] for r in mine], f, rtol=RTOL)
        np.testing.assert_allclose([r["anova_p"] for r in mine], p, rtol=RTOL)
        assert all(r["mwu_p"] is None and r["rank"] is None for r in mine)


def test_rerun_replaces_rows_and_reuses_group_stats(synth, capsys, monkeypatch):
    path = synth[0]
    args = ("stats", "corr-ratio", path, "--label", "family", "--family", "en,nl,it:ja,ko")
    run_cli(monkeypatch, capsys, *args)
    before = _rows(path, "SELECT count(*) AS n FROM tn_corr_ratio", [])[0]["n"]
    stats_before = _rows(path, "SELECT count(*) AS n FROM group_stats", [])[0]["n"]
    code, out, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 0 and "reused" in out
    assert _rows(path, "SELECT count(*) AS n FROM tn_corr_ratio", [])[0]["n"] == before
    assert _rows(path, "SELECT count(*) AS n FROM group_stats", [])[0]["n"] == stats_before


def test_lang_neurons_match_numpy_and_counts(synth, capsys, monkeypatch):
    path, acts, langs, default = synth
    code, out, err = run_cli(monkeypatch, capsys, "stats", "lang-neurons", path, "--thresholds", "0.1,0.25,0.5")
    assert code == 0, err
    train = default
    x = acts[train].reshape(train.sum(), -1)
    rows = _rows(path, "SELECT * FROM lang_neurons WHERE where_sql = ? ORDER BY lang, layer, neuron",
                 [DEFAULT_WHERE])
    counts_sql = query("lang_neurons")  # the shipped file as is: the default --where and thresholds
    assert len(rows) == 6 * 4 * 12
    for lang in sorted(set(langs)):
        labels = np.where(langs[train] == lang, lang, "rest")
        eta = eta2_reference(x, labels)
        mine = [r for r in rows if r["lang"] == lang]
        np.testing.assert_allclose([r["eta2"] for r in mine], eta, rtol=RTOL)
        _, p = sps.f_oneway(x[labels == lang], x[labels != lang], axis=0)
        np.testing.assert_allclose([r["anova_p"] for r in mine], p, rtol=RTOL)
        for threshold in (0.1, 0.25, 0.5):
            per_layer = (eta.reshape(4, 12) > threshold).sum(axis=1)
            counts = _rows(path, "SELECT layer, n_neurons FROM (" + counts_sql + ") WHERE lang = ? AND threshold = ? "
                                 "ORDER BY layer", [lang, threshold])
            assert [c["n_neurons"] for c in counts] == per_layer.tolist()
    assert "threshold" in out and "ja" in out


def test_group_stats_can_be_resliced_in_sql(synth, capsys, monkeypatch):
    """`stats groups` once, then any merge of its groups is a label: ja+ko vs nl, en and it left out."""
    path, acts, langs, default = synth
    code, out, err = run_cli(monkeypatch, capsys, "stats", "groups", path, "--group-by", "lang")
    assert code == 0, err
    store = Store.open(path)
    gs = compute_group_stats(store, select_sentences(store, "lang", DEFAULT_WHERE))
    assert gs.table is None  # already stored by the command
    label_map = pa.table({"label_id": ["x"] * 3, "group_value": ["ja", "ko", "nl"],
                          "label_group": ["cjk", "cjk", "nl"]})
    eta = eta2_table(store, gs, label_map).to_pylist()
    train = default & np.isin(langs, ["ja", "ko", "nl"])
    x = acts[train].reshape(train.sum(), -1)
    labels = np.where(langs[train] == "nl", "nl", "cjk")
    np.testing.assert_allclose([r["eta2"] for r in eta], eta2_reference(x, labels), rtol=RTOL)
    np.testing.assert_allclose([r["anova_p"] for r in eta],
                               sps.f_oneway(x[labels == "nl"], x[labels == "cjk"], axis=0).pvalue, rtol=RTOL)


def test_eta2_on_random_data_many_groups(tmp_path):
    """Random data, 7 unequal groups, a float16 store: the SQL path against f_oneway and the definition."""
    rng = np.random.default_rng(5)
    acts = rng.gamma(2.0, 1.5, (333, 2, 6)) * rng.uniform(0.5, 20, 6)
    groups = rng.choice(list("abcdefg"), 333, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05])
    path = tmp_path / "s"
    store = write_synthetic_store(path, acts, list(groups), storage_dtype="float16")
    sel = select_sentences(store, "lang", "TRUE")
    gs = compute_group_stats(store, sel)
    identity = pa.table({"label_id": ["g"] * 7, "group_value": list("abcdefg"), "label_group": list("abcdefg")})
    eta = eta2_table(store, gs, identity).to_pylist()
    x = raw_activations(path).reshape(333, -1)
    np.testing.assert_allclose([r["eta2"] for r in eta], eta2_reference(x, groups), rtol=RTOL)
    f, p = sps.f_oneway(*[x[groups == g] for g in "abcdefg"], axis=0)
    np.testing.assert_allclose([r["anova_f"] for r in eta], f, rtol=RTOL)
    np.testing.assert_allclose([r["anova_p"] for r in eta], p, rtol=RTOL)


def test_shipped_queries_run_as_is_through_tnstore_sql(synth, capsys, monkeypatch):
    """`tnstore sql STORE "$(cat queries/X.sql)"` works on a store the commands have filled, with their defaults."""
    path, acts, langs, default = synth
    for command in (("corr-ratio",), ("lang-neurons",), ("jaccard", "--type", 1, "--top", 5)):
        assert run_cli(monkeypatch, capsys, "stats", command[0], path, *command[1:])[0] == 0
    for name in ("eta2", "tn_summary", "lang_neurons", "jaccard"):
        code, out, err = run_cli(monkeypatch, capsys, "sql", path, query(name), "--format", "json")
        assert code == 0, (name, err)
    _, out, _ = run_cli(monkeypatch, capsys, "sql", path, query("eta2"), "--format", "csv")
    lines = out.strip().splitlines()
    assert lines[0].replace("\"", "").startswith("label_id,layer,neuron,n,k,ss_between,ss_within,eta2,anova_f")
    eta = np.array([float(line.split(",")[7]) for line in lines[1:]])
    x = acts[default].reshape(default.sum(), -1)
    np.testing.assert_allclose(eta, eta2_reference(x, np.where(langs[default] == "ja", "ja", "rest")), rtol=RTOL)

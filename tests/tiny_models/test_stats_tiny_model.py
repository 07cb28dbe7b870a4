"""§6 statistics on real captured activations: a tiny random LLaMA run over the en-ja/nl/ko/it train pairs.

Transfer-neuron sets are written directly (detection is tested elsewhere); every written value is recomputed from
the activations read straight from Zarr, with scipy (f_oneway, mannwhitneyu) and η² from its definition.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import stats as sps

from tests.cli_runner import run_cli
from tests.stats_helpers import eta2_reference, random_neurons, raw_activations, write_tn_set
from tnstore.store.store import Store

L2 = ("ja", "nl", "ko", "it")
RTOL = 1e-6


@pytest.fixture(scope="module")
def captured(tiny_store_factory, tmp_path_factory):
    """A private copy of the shared tiny-llama store (4 × 40 pairs), with Type-1 and Type-2 sets per language."""
    path = tmp_path_factory.mktemp("stats-tiny") / "store"
    shutil.copytree(tiny_store_factory("tiny-llama", L2, 40), path)
    store = Store.open(path)
    n_layers, d_mlp = store.model_facts["n_layers"], store.model_facts["d_mlp"]
    rng = np.random.default_rng(0)
    for lang in L2:
        write_tn_set(store, f"{lang}-t1", lang, 1, random_neurons(rng, 40, (0, 3), d_mlp), layers=(0, 3))
        write_tn_set(store, f"{lang}-t2", lang, 2, random_neurons(rng, 30, (3, n_layers), d_mlp), layers=(3, n_layers))
    langs = np.array(store.query("SELECT lang FROM sentences ORDER BY row").column("lang").to_pylist())
    return path, raw_activations(path), langs


def _check(rows: list[dict], acts: np.ndarray, groups_of) -> None:
    for row in rows:
        x = acts[:, row["layer"], row["neuron"]]
        groups = groups_of(row)
        keep = groups != None  # noqa: E711 (elementwise)
        x, groups = x[keep], groups[keep].astype(str)
        names = sorted(set(groups))
        f, p = sps.f_oneway(*[x[groups == g] for g in names])
        assert row["eta2"] == pytest.approx(eta2_reference(x[:, None], groups)[0], rel=RTOL)
        assert row["anova_f"] == pytest.approx(f, rel=RTOL)
        assert row["anova_p"] == pytest.approx(p, rel=RTOL)
        u = sps.mannwhitneyu(x[groups == row["positive"]], x[groups != row["positive"]])
        assert row["mwu_p"] == pytest.approx(u.pvalue, rel=RTOL)


def test_language_label_on_captured_activations(captured, capsys, monkeypatch):
    path, acts, langs = captured
    code, out, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--label", "language")
    assert code == 0, err
    assert "en=160 it=40 ja=40 ko=40 nl=40" in out
    rows = Store.open(path).query("SELECT * FROM tn_corr_ratio WHERE label = 'language'").to_pylist()
    assert len(rows) == 4 * 70
    _check(rows, acts, lambda row: np.where(langs == row["lang"], row["lang"], "rest").astype(object))


def test_family_label_on_captured_activations(captured, capsys, monkeypatch):
    path, acts, langs = captured
    code, _, err = run_cli(monkeypatch, capsys, "stats", "corr-ratio", path, "--label", "family",
                           "--family", "en,nl,it:ja,ko")
    assert code == 0, err
    rows = Store.open(path).query("SELECT * FROM tn_corr_ratio WHERE label = 'family'").to_pylist()
    assert len(rows) == 4 * 70
    family = np.where(np.isin(langs, ["en", "nl", "it"]), "en,nl,it", "ja,ko").astype(object)
    _check(rows, acts, lambda row: family)


def test_lang_neurons_on_captured_activations(captured, capsys, monkeypatch):
    path, acts, langs = captured
    code, out, err = run_cli(monkeypatch, capsys, "stats", "lang-neurons", path, "--thresholds", "0.05,0.1")
    assert code == 0, err
    store = Store.open(path)
    n, n_layers, d_mlp = acts.shape
    x = acts.reshape(n, -1)
    for lang in ("en",) + L2:
        rows = store.query("SELECT eta2, anova_p FROM lang_neurons WHERE lang = ? ORDER BY layer, neuron", [lang])
        labels = np.where(langs == lang, lang, "rest")
        np.testing.assert_allclose(rows.column("eta2").to_numpy(), eta2_reference(x, labels), rtol=RTOL)
        p = sps.f_oneway(x[labels == lang], x[labels != lang], axis=0).pvalue
        np.testing.assert_allclose(rows.column("anova_p").to_numpy(), p, rtol=RTOL)

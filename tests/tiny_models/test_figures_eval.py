"""Figures of the cross-lingual deactivation matrix and of the evaluation tables, from small synthetic tables
(those tables arrive with other issues: the columns here are the ones their issues name)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from tests.figure_checks import legend_labels, panels, scatters, suptitle
from tests.figure_tables import Shape, tables
from tnstore.errors import TnstoreError
from tnstore.figures import deactivation, evaluation, style

SHAPE = Shape(n_layers=8, n_sentences=4, top=10, n_questions=25)


@pytest.fixture(scope="module")
def t():
    return tables(SHAPE)


def test_crossling_matrix_rows_are_the_deactivated_set_columns_the_input(t):
    rows = t["crossling_deactivation"].to_pylist()
    fig = deactivation.crossling(t["crossling_deactivation"])
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["Type-1 (L2 → shared)\nhidden index 5",
                                                "Type-2 (shared → L2)\nhidden index 8"]
    ax = shown[0]
    matrix = np.asarray(ax.get_images()[0].get_array())
    cols = [tick.get_text() for tick in ax.get_xticklabels()]
    sets = [tick.get_text() for tick in ax.get_yticklabels()]
    assert ax.get_xlabel() == "input language L2" and ax.get_ylabel() == "deactivated set of L1"
    for r in rows:
        if r["type"] == 1:
            assert matrix[sets.index(r["set_lang"]), cols.index(r["input_lang"])] == pytest.approx(r["cosine"])


def test_crossling_defaults_to_each_set_s_last_candidate_layer():
    """With every layer stored (--all-layers), App. I's default layer: the set's layer_end as a hidden index."""
    from tnstore.figures.registry import _crossling, crossling_defaults

    rows = [{"type": t, "input_lang": "ja", "set_lang": lang, "set_id": f"t{t}_{lang}", "split": "test",
             "hidden_index": h, "cosine": 0.9 - 0.01 * h} for t in (1, 2) for lang in ("ja", "ko") for h in range(9)]
    df = pl.DataFrame(rows)
    marked = crossling_defaults(df, {"t1_ja": 5, "t1_ko": 5, "t2_ja": 8})  # t2_ko: not a stored set
    chosen = marked.filter(pl.col("_default")).sort("type", "set_lang")
    assert chosen.select("type", "set_lang", "hidden_index").rows() == [(1, "ja", 5), (1, "ko", 5), (2, "ja", 8),
                                                                         (2, "ko", 8)]
    one_layer = crossling_defaults(df.filter(pl.col("hidden_index") == 3), {"t1_ja": 5})
    assert one_layer["_default"].all()  # a table of one layer per type is drawn at that layer
    titles = [ax.get_title() for ax in panels(_crossling(marked))]
    assert titles == ["Type-1 (L2 → shared)\nhidden index 5", "Type-2 (shared → L2)\nhidden index 8"]
    picked = [ax.get_title() for ax in panels(_crossling(marked, layers=[2]))]
    assert picked == ["Type-1 (L2 → shared)\nhidden index 2", "Type-2 (shared → L2)\nhidden index 2"]


def test_qa_scatter_pairs_each_question_with_its_plain_f1(t):
    rows = t["eval_qa"].to_pylist()
    fig = evaluation.qa_scatter(t["eval_qa"])
    shown = panels(fig)
    conditions = [c for c in style.condition_order({r["condition"] for r in rows}) if c != "none"]
    assert [ax.get_title().replace("_\n", "_").replace("-\n", "-") for ax in shown] == \
        [f"deactivated: {c}" for c in conditions]
    base = {(r["example_id"], r["lang"]): r["f1"] for r in rows if r["condition"] == "none"}
    for ax, condition in zip(shown, conditions):
        drawn = scatters(ax)
        for lang in ("ja", "nl", "ko", "it"):
            offsets, color = drawn[style.lang_label(lang)]
            want = np.array([(base[(r["example_id"], lang)], r["f1"]) for r in rows
                             if r["condition"] == condition and r["lang"] == lang])
            assert len(offsets) == len(want) == SHAPE.n_questions
            np.testing.assert_allclose(offsets, want, atol=0.0125)  # the fixed jitter
            assert color == style.lang_color(lang).lower()
    assert legend_labels(fig) == ["ja 日本語", "nl Nederlands", "ko 한국어", "it Italiano"]
    assert "n = 25 questions per language" in suptitle(fig) and "deactivated at prompt positions" in suptitle(fig)


def test_f1_change_and_its_bars_follow_the_paper_rule(t):
    rows = t["eval_qa"].to_pylist()
    base = {(r["example_id"], r["lang"]): r["f1"] for r in rows if r["condition"] == "none"}
    want = defaultdict(list)
    for r in rows:
        if r["condition"] != "none":
            b = base[(r["example_id"], r["lang"])]
            for threshold in (0.5, 0.8):
                if b > threshold:
                    want[(r["lang"], r["condition"], threshold)].append(r["f1"] - b)
    change = evaluation.f1_change(t["eval_qa"])
    assert change.height == len(want)
    for r in change.iter_rows(named=True):
        deltas = want[(r["lang"], r["condition"], r["threshold"])]
        assert r["n"] == len(deltas) and r["delta_f1"] == pytest.approx(sum(deltas) / len(deltas))
    fig = evaluation.qa_change(t["eval_qa"])
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["questions with plain F1 > 0.5", "questions with plain F1 > 0.8"]
    heights = [bar.get_height() for bar in shown[0].patches]
    first = change.filter(pl.col("threshold") == 0.5)
    tn = [c for c in legend_labels(fig)][0]
    assert tn.startswith("type1_ja")  # transfer-neuron set first, then the baseline
    by_lang = {r["lang"]: r["delta_f1"] for r in first.filter(pl.col("condition") == tn).iter_rows(named=True)}
    assert heights[:4] == pytest.approx([by_lang[lang] for lang in ("ja", "nl", "ko", "it")])


def test_qa_change_keeps_a_panel_for_a_threshold_no_question_clears(t):
    # A small model may get no question right (the README's tour on smollm2-135m): the figure still draws both
    # panels, each saying so, and the bars of a threshold some questions clear.
    qa = pl.from_arrow(t["eval_qa"])
    low = qa.with_columns(pl.when(pl.col("f1") > 0.8).then(0.7).otherwise(pl.col("f1")).alias("f1"))
    fig = evaluation.qa_change(low)
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["questions with plain F1 > 0.5", "questions with plain F1 > 0.8"]
    assert shown[0].patches and not shown[1].patches
    assert [x.get_text() for x in shown[1].texts] == ["no question has plain F1 > 0.8"]
    none = qa.with_columns(pl.lit(0.0).alias("f1"))
    assert [x.get_text() for ax in panels(evaluation.qa_change(none)) for x in ax.texts] == [
        "no question has plain F1 > 0.5", "no question has plain F1 > 0.8"]


def test_qa_without_plain_condition_is_a_clear_error(t):
    only = pl.from_arrow(t["eval_qa"]).filter(pl.col("condition") != "none")
    with pytest.raises(TnstoreError, match="no rows of condition none"):
        evaluation.qa_scatter(only)


def test_mc_and_generation_bars_per_language_and_condition(t):
    fig = evaluation.mc_accuracy(t["eval_mc_summary"])
    ax = panels(fig)[0]
    assert legend_labels(fig)[0] == "none" and ax.get_ylabel() == "accuracy"
    rows = t["eval_mc_summary"].to_pylist()
    assert [b.get_height() for b in ax.patches[:4]] == pytest.approx(
        [next(r["accuracy"] for r in rows if r["lang"] == lang and r["condition"] == "none" and r["subject"] == "*")
         for lang in ("ja", "nl", "ko", "it")])  # the all-subjects rows, not a subject's
    gen = evaluation.gen_language(t["eval_gen_metrics"])
    shares = defaultdict(list)
    for r in t["eval_gen_metrics"].to_pylist():
        shares[(r["lang"], r["condition"])].append(r["detected_lang"] == r["lang"])
    tn = legend_labels(gen)[1]
    heights = [b.get_height() for b in panels(gen)[0].patches[4:8]]
    assert heights == pytest.approx([np.mean(shares[(lang, tn)]) for lang in ("ja", "nl", "ko", "it")])

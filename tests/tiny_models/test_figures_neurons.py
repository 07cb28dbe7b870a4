"""Transfer-neuron figures from small synthetic tables: counts, overlaps and η² summaries read back from the
Figure and compared with values computed here in plain Python from the rows."""
from __future__ import annotations

from collections import Counter, defaultdict

import duckdb
import numpy as np
import polars as pl
import pytest

from tests.figure_checks import legend_labels, lines, panels, suptitle
from tests.figure_tables import Shape, tables
from tnstore.analysis.stats.core import params, query
from tnstore.errors import ArgumentError
from tnstore.figures import neurons, style
from tnstore.figures.style import Meta

SHAPE = Shape(n_layers=8, n_sentences=6, d_mlp=16, top=12)


@pytest.fixture(scope="module")
def t():
    return tables(SHAPE)


def _summary(corr) -> pl.DataFrame:
    """The shipped queries/tn_summary.sql over the rows, for both labels (what the registry hands the figures)."""
    con = duckdb.connect()
    con.register("tn_corr_ratio", corr)
    parts = []
    for label, spec in (("language", None), ("family", "en,nl,it:ja,ko")):
        sql = query("tn_summary", params=params(label=label, label_spec=spec, where_sql="ablation IS NULL",
                                                split="train"))
        parts.append(pl.from_arrow(con.sql(sql).arrow().read_all()).with_columns(
            pl.lit(label).alias("label"), pl.lit(spec, dtype=pl.String).alias("label_spec")))
    return pl.concat(parts)


def test_tn_layers_counts_every_candidate_layer_per_language(t):
    rows = t["transfer_neurons"].to_pylist()
    fig = neurons.tn_layers(t["transfer_neurons"], Meta("m"))
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["Type-1 (L2 → shared)", "Type-2 (shared → L2)"]
    for ax, type_ in zip(shown, (1, 2)):
        drawn = lines(ax)
        for lang in ("ja", "nl", "ko", "it"):
            mine = [r for r in rows if r["type"] == type_ and r["lang"] == lang]
            start, end = mine[0]["layer_start"], mine[0]["layer_end"]
            counts = Counter(r["layer"] for r in mine)
            x, y, color = drawn[style.lang_label(lang)]
            assert list(x) == list(range(start, end))
            assert list(y) == [counts.get(layer, 0) for layer in range(start, end)]
            assert sum(y) == SHAPE.top and color == style.lang_color(lang).lower()
    assert fig._supxlabel.get_text() == style.LAYER_AXIS
    assert "n = 12 neurons per set (top-n)" in suptitle(fig)
    only = neurons.tn_layers(t["transfer_neurons"], types=[2])
    assert [ax.get_title() for ax in panels(only)] == ["Type-2 (shared → L2)"]
    with pytest.raises(ArgumentError) as err:
        neurons.tn_layers(t["transfer_neurons"], types=[3])
    assert err.value.arg == "types"


def test_tn_layers_tells_two_sets_of_one_language_apart(t):
    df = pl.from_arrow(t["transfer_neurons"]).filter((pl.col("type") == 1) & (pl.col("lang") == "ja"))
    other = df.with_columns(pl.lit("test").alias("split"), (pl.col("set_id") + "_test").alias("set_id"))
    labels = legend_labels(neurons.tn_layers(pl.concat([df, other])))
    assert sorted(labels) == ["ja 日本語 (split test)", "ja 日本語 (split train)"]


def test_jaccard_lines_per_pair_and_gaps_where_a_layer_is_missing(t):
    df = pl.from_arrow(t["tn_jaccard"])
    holed = df.filter(~((pl.col("lang_a") == "ja") & (pl.col("lang_b") == "ko") & (pl.col("layer") == 2)))
    fig = neurons.jaccard_layers(holed)
    ax = panels(fig)[0]
    x, y, _ = lines(ax)["ja–ko"]
    want = {r["layer"]: r["jaccard"] for r in df.filter((pl.col("type") == 1) & (pl.col("lang_a") == "ja")
                                                        & (pl.col("lang_b") == "ko") & pl.col("layer").is_not_null())
            .iter_rows(named=True)}
    for layer, value in zip(x, y):
        if layer == 2:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(want[layer])
    assert set(legend_labels(fig)) == {"ja–nl", "ja–ko", "ja–it", "nl–ko", "nl–it", "ko–it"}


def test_jaccard_matrix_is_symmetric_with_the_overall_values(t):
    fig = neurons.jaccard_matrix(t["tn_jaccard"])
    shown = panels(fig)
    assert len(shown) == 2
    matrix = np.asarray(shown[0].get_images()[0].get_array())
    langs = [tick.get_text() for tick in shown[0].get_xticklabels()]
    assert langs == ["ja", "nl", "ko", "it"]
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    overall = [r for r in t["tn_jaccard"].to_pylist() if r["layer"] is None and r["type"] == 1]
    for r in overall:
        assert matrix[langs.index(r["lang_a"]), langs.index(r["lang_b"])] == pytest.approx(r["jaccard"])


def test_eta2_bars_are_the_mean_over_ranks_and_skip_ranks_no_set_reaches(t):
    rows = t["tn_corr_ratio"].to_pylist()
    fig = neurons.tn_eta2(_summary(t["tn_corr_ratio"]))
    shown = panels(fig)
    # rows: language label first, then family; columns: type 1, 2
    family = "family label (en,nl,it:ja,ko)"
    assert [ax.get_title().split("\n")[1] for ax in shown] == ["language label"] * 2 + [family] * 2
    ax = shown[0]
    labels = legend_labels(fig)
    assert labels == ["top 10"]  # sets of 12 neurons: no top-100 / top-1000 bars
    heights = [bar.get_height() for bar in ax.patches]
    want = []
    for lang in ("ja", "nl", "ko", "it"):
        values = [r["eta2"] for r in rows if r["label"] == "language" and r["type"] == 1 and r["lang"] == lang
                  and r["rank"] <= 10]
        want.append(sum(values) / len(values))
    np.testing.assert_allclose(heights, want)
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["ja 日本語", "nl Nederlands", "ko 한국어",
                                                                 "it Italiano"]
    assert {0.1, 0.25, 0.5} <= {round(line.get_ydata()[0], 2) for line in ax.get_lines()}


def test_significance_bars_are_shares_of_the_set(t):
    rows = t["tn_corr_ratio"].to_pylist()
    fig = neurons.tn_significance(_summary(t["tn_corr_ratio"]), types=[2])
    ax = panels(fig)[0]
    assert legend_labels(fig) == ["p < 0.05", "p < 0.05, η² > 0.1", "p < 0.05, η² > 0.25"]
    mine = [r for r in rows if r["label"] == "language" and r["type"] == 2 and r["lang"] == "ko"]
    want = [sum(r["anova_p"] < 0.05 for r in mine) / len(mine),
            sum(r["anova_p"] < 0.05 and r["eta2"] > 0.1 for r in mine) / len(mine),
            sum(r["anova_p"] < 0.05 and r["eta2"] > 0.25 for r in mine) / len(mine)]
    heights = [bar.get_height() for bar in ax.patches]  # series by series, languages ja nl ko it in each
    assert [heights[2], heights[6], heights[10]] == pytest.approx(want)
    assert ax.get_ylim() == (0.0, 1.0)


def test_lang_neurons_lines_count_neurons_above_each_threshold(t):
    con = duckdb.connect()
    con.register("lang_neurons", t["lang_neurons"])
    counts = con.sql(query("lang_neurons")).arrow().read_all()
    fig = neurons.lang_neurons(counts)
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["η² > 0.1", "η² > 0.25", "η² > 0.5"]
    above = defaultdict(int)
    for r in t["lang_neurons"].to_pylist():
        above[(r["lang"], r["layer"])] += r["eta2"] > 0.1
    x, y, _ = lines(shown[0])[style.lang_label("ko")]
    assert list(x) == list(range(SHAPE.n_layers))
    assert list(y) == [above[("ko", layer)] for layer in range(SHAPE.n_layers)]
    assert fig._supxlabel.get_text() == style.LAYER_AXIS


def test_with_params_is_the_analyses_own_parameter_swap():
    """The figures' light tnstore.queries.with_params gives the very SQL the analyses run (stats.core.query)."""
    from tnstore.queries import with_params

    for name, values in (("tn_summary", dict(label="family", label_spec="en,nl,it:ja,ko", where_sql="lang <> 'x'",
                                             split="train")),
                         ("lang_neurons", dict(where_sql="ablation IS NULL", split="all", thresholds=[0.1, 0.5]))):
        assert with_params(name, **values) == query(name, params=params(**values))

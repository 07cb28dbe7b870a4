"""Latent-space figures drawn from small synthetic tables: every panel, series, colour and legend entry is read
back from the Figure and compared with the rows it was drawn from."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from matplotlib.colors import to_hex

from tests.figure_checks import legend_labels, lines, panels, render_png, suptitle, texts
from tests.figure_tables import Shape, tables
from tnstore.errors import ArgumentError
from tnstore.figures import latent, style
from tnstore.figures.style import Meta

SHAPE = Shape(n_layers=4, n_sentences=6)
SET = "type1_ja_train_cosine_layers0-2_top10"
BASE = "random_type1_ja_train_cosine_layers0-2_top10_seed42"


@pytest.fixture(scope="module")
def plain():
    return tables(SHAPE)


@pytest.fixture(scope="module")
def conditioned():
    return tables(SHAPE, conditions=("none", SET, BASE))


def test_pca_draws_every_language_of_every_layer_in_its_colour(plain):
    table = pl.from_arrow(plain["latent_pca"])
    fig = latent.pca(plain["latent_pca"], Meta("tiny-llama"))
    shown = panels(fig)
    assert len(shown) == SHAPE.n_layers + 1  # hidden indices 0..4, fewer than the 8-panel default
    for ax, index in zip(shown, range(SHAPE.n_layers + 1)):
        assert ax.get_title().startswith(f"hidden index {index}\nPC1 ")
        (points,) = ax.collections  # every language in one shuffled scatter: none hides the others
        offsets = np.asarray(points.get_offsets())
        colours = [to_hex(c, keep_alpha=False) for c in points.get_facecolors()]
        for lang in ("en", "ja", "nl", "ko", "it"):
            rows = table.filter((pl.col("hidden_index") == index) & (pl.col("lang") == lang))
            mine = np.array([o for o, c in zip(offsets, colours) if c == style.lang_color(lang).lower()])
            want = rows.select("pc1", "pc2").to_numpy()
            np.testing.assert_allclose(mine[np.lexsort(mine.T)], want[np.lexsort(want.T)])
    assert legend_labels(fig) == ["en English", "ja 日本語", "nl Nederlands", "ko 한국어", "it Italiano"]
    title = suptitle(fig)
    for fact in ("model tiny-llama", "split train", "condition none", "n = 30 sentences per layer", "Fig. 2"):
        assert fact in title


def test_pca_layers_pick_panels_and_conditions_make_rows(conditioned):
    fig = latent.pca(conditioned["latent_pca"], Meta("m"), layers=[0, 4])
    shown = panels(fig)
    assert len(shown) == 6  # 3 conditions x 2 hidden indices
    headings = [sub._suptitle.get_text().replace("\n", "") for sub in fig.subfigs]
    assert headings == ["plain (none)", f"deactivated: {SET}", f"deactivated: {BASE}"]
    assert [ax.get_title().split("\n")[0] for ax in shown] == ["hidden index 0", "hidden index 4"] * 3
    with pytest.raises(ArgumentError) as err:
        latent.pca(conditioned["latent_pca"], layers=[40])
    assert err.value.arg == "layers" and "0..4" in str(err.value)


def test_pca_default_spreads_at_most_eight_panels_with_both_ends():
    many = tables(Shape(n_layers=20, n_sentences=2, langs=("en", "ja")))["latent_pca"]
    shown = panels(latent.pca(many))
    indices = [int(ax.get_title().split("\n")[0].split()[-1]) for ax in shown]
    assert len(indices) == 8 and indices[0] == 0 and indices[-1] == 20 and indices == sorted(indices)


def test_dims_lines_are_k_per_hidden_index_with_the_axis_convention(plain):
    table = pl.from_arrow(plain["latent_dims"])
    fig = latent.dims(plain["latent_dims"], Meta("m"))
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["share of Σσ² ≥ 0.9", "share of Σσ² ≥ 0.95", "share of Σσ² ≥ 0.99"]
    for ax, threshold in zip(shown, (0.9, 0.95, 0.99)):
        drawn = lines(ax)
        for lang in ("en", "ja", "ko"):
            want = table.filter((pl.col("lang") == lang) & (pl.col("threshold") == threshold)).sort("hidden_index")
            x, y, color = drawn[style.lang_label(lang)]
            np.testing.assert_array_equal(x, want["hidden_index"].to_numpy())
            np.testing.assert_array_equal(y, want["k"].to_numpy())
            assert color == style.lang_color(lang).lower()
    assert fig._supxlabel.get_text() == style.HIDDEN_AXIS
    assert "raw matrix" in suptitle(fig)


def test_centroid_heatmaps_hold_the_cosine_matrix(plain):
    table = pl.from_arrow(plain["latent_centroid_cos"])
    fig = latent.centroids(plain["latent_centroid_cos"], layers=[2])
    (ax,) = panels(fig)
    matrix = np.asarray(ax.get_images()[0].get_array())
    langs = ["en", "ja", "nl", "ko", "it"]
    assert [t.get_text() for t in ax.get_xticklabels()] == langs
    for i, a in enumerate(langs):
        for j, b in enumerate(langs):
            want = table.filter((pl.col("hidden_index") == 2) & (pl.col("lang_a") == a) & (pl.col("lang_b") == b))
            assert matrix[i, j] == pytest.approx(want["cosine"][0])
    assert f"{matrix[0, 1]:.2f}" in [t.get_text() for t in ax.texts]
    assert ax.get_title() == "hidden index 2"


def test_knn_one_panel_per_k_and_conditions_in_rows(conditioned):
    table = pl.from_arrow(conditioned["latent_knn"])
    fig = latent.knn(conditioned["latent_knn"])
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["k = 5", "k = 10"] * 3
    x, y, _ = lines(shown[3])[style.lang_label("ko")]  # second row = the TN set, k = 10
    want = table.filter((pl.col("condition") == SET) & (pl.col("k") == 10) & (pl.col("lang") == "ko")).sort("hidden_index")
    np.testing.assert_allclose(y, want["score"].to_numpy())
    assert shown[3].get_shared_y_axes().joined(shown[3], shown[0])  # conditions compare on one scale


def test_similarity_parallel_solid_nonparallel_dashed_with_bands(plain):
    table = pl.from_arrow(plain["latent_pair_similarity"])
    fig = latent.similarity(plain["latent_pair_similarity"])
    shown = panels(fig)
    assert [ax.get_title() for ax in shown] == ["en–ja", "en–nl", "en–ko", "en–it"]
    ja = shown[0]
    drawn = [line for line in ja.get_lines()]
    assert [line.get_linestyle() for line in drawn] == ["-", "--"]
    for line, kind in zip(drawn, ("parallel", "nonparallel")):
        want = table.filter((pl.col("lang") == "ja") & (pl.col("kind") == kind) & (pl.col("array_name") == "hidden"))
        np.testing.assert_allclose(line.get_ydata(), want.sort("hidden_index")["mean_cos"].to_numpy())
    assert len(ja.collections) == 2  # the two ±1 std bands
    band = ja.collections[0].get_paths()[0].vertices[:, 1]
    want = table.filter((pl.col("lang") == "ja") & (pl.col("kind") == "parallel") & (pl.col("array_name") == "hidden"))
    assert band.max() == pytest.approx((want["mean_cos"] + want["std_cos"]).max())
    assert {"parallel pairs", "non-parallel pairs", "ja 日本語"} <= set(legend_labels(fig))
    act = latent.similarity(plain["latent_pair_similarity"], array_name="mlp_act")
    assert "MLP activations" in suptitle(act)
    assert lines(panels(act)[0])  # activations start at hidden index 1
    assert min(panels(act)[0].get_lines()[0].get_xdata()) == 1


def test_probe_and_trajectory_lines(plain):
    fig = latent.probe(plain["latent_probe"])
    (ax,) = panels(fig)
    drawn = lines(ax)
    assert "chance (0.5)" in drawn and set(drawn["chance (0.5)"][1]) == {0.5}
    table = pl.from_arrow(plain["latent_probe"]).filter(pl.col("lang") == "it").sort("hidden_index")
    np.testing.assert_allclose(drawn["it Italiano"][1], table["accuracy"].to_numpy())
    assert "10-fold CV" in suptitle(fig)
    traj = latent.trajectory(plain["latent_trajectory"])
    assert "m = " in suptitle(traj) and lines(panels(traj)[0])["en English"][2] == "#000000"


def test_a_table_without_condition_column_is_one_plain_condition(plain, conditioned):
    assert "condition none" in suptitle(latent.knn(plain["latent_knn"].drop_columns(["condition"])))
    assert "condition none" in suptitle(latent.knn(plain["latent_knn"]))
    assert "conditions none, " + SET in suptitle(latent.knn(conditioned["latent_knn"]))


def test_latent_figures_render_cjk_without_missing_glyphs(plain):
    png, warned = render_png(latent.pca(plain["latent_pca"]))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [w for w in warned if "missing from" in w], warned
    assert "日本語" in texts(latent.dims(plain["latent_dims"]))

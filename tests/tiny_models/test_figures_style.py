"""The shared visual language: fixed colour-blind-safe colours, orders, wrapping, and CJK text drawn with the
packaged font (matplotlib warns of every glyph its fonts lack; with the font it has none to warn of)."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from tests.figure_checks import render_png
from tnstore.figures import fonts, style

OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}
CJK = "日本語の文です。한국어 문장입니다. 中文"


def test_each_paper_language_has_its_own_fixed_okabe_ito_colour():
    paper = ["en", "ja", "nl", "ko", "it"]
    colours = [style.lang_color(lang) for lang in paper]
    assert len(set(colours)) == len(paper) and set(colours) <= OKABE_ITO
    assert "#F0E442" not in colours  # yellow does not read on white
    assert style.lang_color("sw") == style.lang_color("sw") and style.lang_color("sw") in style.EXTRA_COLORS


def test_orders_and_labels():
    assert style.lang_order(["it", "zz", "en", "ko", "ja", "nl", "de"]) == ["en", "ja", "nl", "ko", "it", "de", "zz"]
    assert style.condition_order(["random_x", "type1_ja", "none", "mine"]) == ["none", "type1_ja", "mine", "random_x"]
    assert style.lang_label("ko") == "ko 한국어" and style.lang_label("xx") == "xx"
    assert style.spread(range(33), 8) == [0, 5, 9, 14, 18, 23, 27, 32]


def test_wrap_breaks_set_names_at_underscores():
    name = "deactivated: type1_ja_train_cosine_layers0-19_top1000"
    lines = style.wrap(name, 24).split("\n")
    assert len(lines) > 1 and all(len(line) <= 24 for line in lines)
    assert "\n".join(lines).replace("_\n", "_") == name  # broken after underscores only, nothing lost


def test_the_cjk_font_ships_in_the_wheel_and_covers_japanese_and_korean():
    path = fonts.cjk_font_path()
    dist = importlib.metadata.distribution(fonts.DISTRIBUTION)
    assert Path(dist.locate_file("")).resolve() in path.resolve().parents
    assert fonts.covers(CJK + "ja ko η² ±") == set()


def _cjk_figure() -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label=CJK)
    ax.set_title(CJK)
    ax.legend()
    return fig


def test_cjk_text_draws_with_the_packaged_font_and_not_without_it():
    with style.context():
        fig = _cjk_figure()
    _, warned = render_png(fig)
    assert not [w for w in warned if "missing from font" in w], warned
    # The check is real: the same figure made without tnstore's style has no glyph for any of it.
    _, warned = render_png(_cjk_figure())
    assert [w for w in warned if "missing from font" in w]


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_cjk_survives_pdf_and_svg(fmt, tmp_path):
    from tnstore.figures.output import save

    with style.context():
        fig = _cjk_figure()
    path = save(fig, tmp_path / f"cjk.{fmt}")
    data = path.read_bytes()
    if fmt == "svg":
        # svg.fonttype path: every glyph is an outline, so no font is needed to view the file
        assert b"<text" not in data and data.count(b"<path") > 20
    else:
        assert b"NotoSansCJK" in data  # the CJK glyphs are embedded from the packaged font


def test_font_face_css_embeds_only_the_page_s_cjk_characters():
    import base64
    import io
    import re

    from fontTools.ttLib import TTFont

    assert fonts.font_face_css("Latin text only, η² ± 0.5") == ""
    css = fonts.font_face_css("例 日本語 한국어 and Latin")
    assert css.startswith("@font-face") and "unicode-range" not in css
    data = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", css).group(1))
    cmap = TTFont(io.BytesIO(data)).getBestCmap()
    assert set(map(chr, cmap)) == set("例日本語한국어")  # exactly the page's CJK characters
    assert len(data) < 40_000  # a subset, not the 16 MB font

"""Figures and the report of a real tiny-model store (tiny-llama over MKQA questions in five languages and Tatoeba
en-ja non-parallel pairs, then detect, every latent analysis and the statistics), the report opened in a real
headless browser (Debian's chromium; `make test` installs it where it can).

The browser must see no console error, every image decoded, every analysis section with its figure, and CJK text
drawn with glyphs, not boxes; a full-page screenshot is taken. The same checks run first on a page made to fail
each of them, so a pass means they work."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser import check_pages, find_chromium
from tests.conftest import MKQA, TATOEBA, capture_into
from tests.figure_checks import lines, panels, suptitle
from tnstore.figures import registry, style

LIMIT = 12
L2S = ("ja", "nl", "ko", "it")
BROKEN = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<article class="analysis" data-figure="pca"><h3>no figure here</h3></article>
<article class="analysis" data-figure="dims"><img alt="broken" src="data:image/png;base64,AAAA"></article>
<p>日本語の文</p>
<script>console.error("deliberate error")</script>
</body></html>"""


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_data) -> Path:
    from tnstore.analysis import latent
    from tnstore.analysis.detect import detect
    from tnstore.analysis.stats import corr_ratio, jaccard, lang_neurons

    path = tmp_path_factory.mktemp("report-tiny") / "store"
    capture_into(path, MKQA, "tiny-llama", limit=LIMIT)
    capture_into(path, TATOEBA / "en-ja.nonparallel.jsonl", "tiny-llama", limit=LIMIT, kind="nonparallel")
    for lang in L2S:
        for type_ in (1, 2):
            detect(path, type=type_, lang=lang, top=40)
    latent.pca(path), latent.dims(path), latent.centroids(path), latent.knn(path)
    latent.similarity(path), latent.probe(path, folds=3), latent.trajectory(path)
    corr_ratio(path, label="language", progress=False)
    jaccard(path, type=1, top=40), jaccard(path, type=2, top=40)
    lang_neurons(path, progress=False)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.fail("chromium is not installed, so the report cannot be opened in a browser: run `make test` "
                    "(it installs Debian's chromium where root and apt-get are available), or "
                    "`apt-get install chromium`, or set TNSTORE_CHROMIUM to a Chromium binary")
    return path


def test_figures_of_the_store_show_its_tables(store):
    import tnstore

    s = tnstore.open(store, "r")
    (tn,) = registry.draw(s, "tn-layers")
    rows = s.query("SELECT type, lang, layer, layer_start, layer_end FROM transfer_neurons").to_pylist()
    for ax, type_ in zip(panels(tn.figure), (1, 2)):
        for lang in L2S:
            mine = [r for r in rows if r["type"] == type_ and r["lang"] == lang]
            counts = Counter(r["layer"] for r in mine)
            x, y, _ = lines(ax)[style.lang_label(lang)]
            assert list(x) == list(range(mine[0]["layer_start"], mine[0]["layer_end"]))
            assert list(y) == [counts.get(int(layer), 0) for layer in x]
    assert "model tiny-llama" in suptitle(tn.figure)
    (pca,) = registry.draw(s, "pca", layers=[0, 4])
    first = panels(pca.figure)[0]
    stored = s.query("SELECT pc1, pc2 FROM latent_pca WHERE hidden_index = 0 ORDER BY pc1, pc2").to_pylist()
    drawn = np.asarray(first.collections[0].get_offsets())
    np.testing.assert_allclose(drawn[np.lexsort(drawn.T[::-1])], [[r["pc1"], r["pc2"]] for r in stored])
    assert f"n = {5 * LIMIT} sentences per layer" in suptitle(pca.figure)
    (sim,) = registry.draw(s, "similarity")
    assert [ax.get_title() for ax in panels(sim.figure)] == ["en–ja"]  # the only L2 with non-parallel pairs


def test_report_in_headless_chromium(store, chromium, tmp_path):
    import tnstore

    result = tnstore.report.build(store, tmp_path / "report.html")
    assert result.figures == 14 and set(result.missing) == {"crossling", "qa-scatter", "qa-change", "mc-accuracy",
                                                            "gen-language"}
    broken = tmp_path / "broken.html"
    broken.write_text(BROKEN, "utf-8")
    shot = tmp_path / "report.png"
    bad, good = check_pages([(broken, None), (result.path, shot)], chromium)

    # the checks catch each failure they look for
    assert "deliberate error" in " ".join(bad.console_errors)
    assert bad.broken_images == ["broken"]
    assert set(bad.sections_without_figure) == {"pca", "dims"}
    assert bad.cjk_as_boxes == ["日本語の文"]  # no CJK font on that page nor, by default, on the machine

    assert good.problems() == [], good.problems()
    assert len(good.sections) == 14 and good.images == 14
    assert good.cjk_elements >= 4 and "Noto Sans CJK JP" in good.fonts_used  # ja and ko examples and labels
    image = Image.open(shot)
    assert image.width == 1280 and image.height > 5000  # the whole report, not the first screen
    low, high = image.convert("L").getextrema()
    assert low < 50 and high > 200  # ink on paper, not a blank page
    print(f"screenshot: {shot}")

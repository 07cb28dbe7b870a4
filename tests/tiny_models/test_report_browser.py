"""The report opened in a real headless browser (Debian's chromium; `make test` installs it where it can): no
console error, every image decoded, every analysis section with its figure, CJK text drawn with glyphs (not
boxes), and a full-page screenshot taken. The same checks run first on a page made to fail each of them, so a
pass means they work."""
from __future__ import annotations

import pytest
from PIL import Image

from tests.browser import check_pages, find_chromium
from tests.tiny_models.test_figures_cli import write_store

BROKEN = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<article class="analysis" data-figure="pca"><h3>no figure here</h3></article>
<article class="analysis" data-figure="dims"><img alt="broken" src="data:image/png;base64,AAAA"></article>
<p>日本語の文</p>
<script>console.error("deliberate error")</script>
</body></html>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.fail("chromium is not installed, so the report cannot be opened in a browser: run `make test` "
                    "(it installs Debian's chromium where root and apt-get are available), or "
                    "`apt-get install chromium`, or set TNSTORE_CHROMIUM to a Chromium binary")
    return path


def test_report_in_headless_chromium(chromium, tmp_path):
    import tnstore

    store = write_store(tmp_path / "store", skip=("latent_probe",))
    report = tnstore.report.build(store, tmp_path / "report.html").path
    broken = tmp_path / "broken.html"
    broken.write_text(BROKEN, "utf-8")
    shot = tmp_path / "report.png"
    bad, good = check_pages([(broken, None), (report, shot)], chromium)

    # the checks catch each failure they look for
    assert "deliberate error" in " ".join(bad.console_errors)
    assert bad.broken_images == ["broken"]
    assert set(bad.sections_without_figure) == {"pca", "dims"}
    assert bad.cjk_as_boxes == ["日本語の文"]  # no CJK font on the page or (by default) on the machine

    assert good.problems() == [], good.problems()
    assert len(good.sections) == 13 and good.images == 13
    assert good.cjk_elements >= 3 and "Noto Sans CJK JP" in good.fonts_used
    image = Image.open(shot)
    assert image.width == 1280 and image.height > 5000  # the whole report, not the first screen
    low, high = image.convert("L").getextrema()
    assert low < 50 and high > 200  # ink on paper, not a blank page
    print(f"screenshot: {shot}")

"""Opening an HTML page in Debian's headless chromium (through Playwright's driver; no browser download) and
reporting what a reader would see go wrong: console errors, images that did not decode, analysis sections
without a drawn figure, and CJK text drawn as empty boxes (checked per element with the DevTools call that
names the fonts each glyph was drawn with)."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser")
CJK = re.compile(r"[\u2e80-\U0002ffff]")

# Marks each element whose own text holds CJK characters with how many, so the fonts of just those can be asked.
MARK_CJK = r"""() => {
  const cjk = /[\u2e80-\u{2ffff}]/gu;
  let marked = 0;
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent).join('');
    const n = (own.match(cjk) || []).length;
    if (n) { el.setAttribute('data-cjk-chars', String(n)); marked++; }
  }
  return marked;
}"""

IMAGES = """() => [...document.images].map(img => ({
  alt: img.alt, ok: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
  shown: img.getBoundingClientRect().height }))"""

SECTIONS = """() => [...document.querySelectorAll('article.analysis')].map(a => ({
  name: a.dataset.figure,
  drawn: [...a.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0
                                               && i.getBoundingClientRect().height > 100).length }))"""


@dataclass
class PageCheck:
    """What a headless browser saw on the page."""

    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    sections_without_figure: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    images: int = 0
    cjk_elements: int = 0
    cjk_as_boxes: list[str] = field(default_factory=list)  # element text whose CJK glyphs came from no CJK font
    fonts_used: set[str] = field(default_factory=set)
    screenshot: Path | None = None

    def problems(self) -> list[str]:
        return ([f"console: {m}" for m in self.console_errors] + [f"broken image: {m}" for m in self.broken_images]
                + [f"section without its figure: {m}" for m in self.sections_without_figure]
                + [f"CJK drawn as boxes: {m}" for m in self.cjk_as_boxes])


def find_chromium() -> str | None:
    """$TNSTORE_CHROMIUM, else Debian's chromium on PATH."""
    if os.environ.get("TNSTORE_CHROMIUM"):
        return os.environ["TNSTORE_CHROMIUM"]
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def check_pages(pages: list[tuple[Path, Path | None]], chromium: str, width: int = 1280) -> list[PageCheck]:
    """Open each (html, screenshot path or None) in one browser and check it."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        # --no-sandbox: tests run as root in CI containers, where chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        try:
            for html, shot in pages:
                out.append(_check(browser, Path(html), shot, width))
        finally:
            browser.close()
    return out


def _check(browser, html: Path, shot: Path | None, width: int) -> PageCheck:
    result = PageCheck()
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
    page.goto(html.resolve().as_uri(), wait_until="load")
    page.evaluate("document.fonts.ready.then(() => true)")
    # What the page itself logged; DevTools' CSS agent (used below) makes a file: page log a failed load of itself.
    result.console_errors = list(errors)
    images = page.evaluate(IMAGES)
    result.images = len(images)
    result.broken_images = [i["alt"] or "(no alt)" for i in images if not i["ok"]]
    sections = page.evaluate(SECTIONS)
    result.sections = [s["name"] for s in sections]
    result.sections_without_figure = [s["name"] for s in sections if s["drawn"] == 0]
    result.cjk_elements = page.evaluate(MARK_CJK)
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-cjk-chars]"})["nodeIds"]:
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        result.fonts_used |= {f["familyName"] for f in fonts}
        attrs = cdp.send("DOM.getAttributes", {"nodeId": node})["attributes"]
        wanted = int(dict(zip(attrs[::2], attrs[1::2]))["data-cjk-chars"])
        cjk_glyphs = sum(f["glyphCount"] for f in fonts if "CJK" in f["familyName"] or f["isCustomFont"])
        if cjk_glyphs < wanted:
            text = cdp.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"]
            result.cjk_as_boxes.append(re.sub(r"<[^>]+>", "", text)[:80])
    if shot is not None:
        page.screenshot(path=str(shot), full_page=True)
        result.screenshot = shot
    page.close()
    return result

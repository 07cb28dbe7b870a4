"""The CJK font every figure and the report use, so Japanese and Korean text renders as text on any machine.

The font is Noto Sans CJK JP (SIL Open Font License), shipped inside the PyPI package `notojp-matplotlib`, a
dependency of tnstore: pip installs it with everything else, offline thereafter, no system font and no root.
The multilingual "CJK JP" build covers kana, kanji and Hangul, so one file serves ja, ko and zh. The package's
own import would change matplotlib's global settings, so it is never imported: its file is found through
its installed metadata (as the model registry finds packaged GGUF files).

matplotlib is pointed at the file explicitly (`register`); the report embeds a subset of it holding only the
characters the page uses, as an @font-face data URI (`font_face_css`), so the HTML file renders CJK without any
font installed where it is opened.
"""
from __future__ import annotations

import base64
import importlib.metadata
import io
from functools import lru_cache
from pathlib import Path

from tnstore.errors import TnstoreError

DISTRIBUTION = "notojp-matplotlib"
FILE_NAME = "NotoSansCJKjp-Regular.otf"
FAMILY = "Noto Sans CJK JP"
# The family name the report's CSS uses for the embedded subset (never a system font's name).
CSS_FAMILY = "tnstore-cjk"


@lru_cache(maxsize=1)
def cjk_font_path() -> Path:
    """Path of the packaged Noto Sans CJK JP file; a clear error where the package is missing."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise TnstoreError(f"the CJK font package {DISTRIBUTION} is not installed; run `pip install "
                           f"{DISTRIBUTION}` (a tnstore dependency) so Japanese and Korean text can be drawn") from None
    found = [f for f in dist.files or () if f.name == FILE_NAME]
    path = Path(dist.locate_file(found[0])) if found else None
    if path is None or not path.is_file():
        raise TnstoreError(f"the package {DISTRIBUTION} has no {FILE_NAME}; reinstall it "
                           f"(`pip install --force-reinstall {DISTRIBUTION}`)")
    return path


_registered = False


def register() -> str:
    """Make the CJK font known to matplotlib (once per process); returns its family name."""
    global _registered
    if not _registered:
        from matplotlib import font_manager

        font_manager.fontManager.addfont(str(cjk_font_path()))
        _registered = True
    return FAMILY


@lru_cache(maxsize=1)
def _cmap() -> dict[int, str]:
    from fontTools.ttLib import TTFont

    with TTFont(str(cjk_font_path()), lazy=True) as font:
        return dict(font.getBestCmap())


def covers(text: str) -> set[str]:
    """The characters of `text` the CJK font has no glyph for (whitespace and controls left out)."""
    cmap = _cmap()
    return {c for c in set(text) if not c.isspace() and c.isprintable() and ord(c) not in cmap}


def needs_cjk(char: str) -> bool:
    """Whether a character is outside what the browser's default Latin fonts draw (the subset carries it)."""
    return ord(char) >= 0x2E80


def subset_woff(text: str) -> bytes:
    """A WOFF file of the CJK font holding only the glyphs of `text`'s characters (zlib, no brotli needed)."""
    from fontTools import subset

    wanted = sorted({ord(c) for c in text if needs_cjk(c)} & set(_cmap()))
    options = subset.Options()
    options.flavor = "woff"
    # Report text is horizontal and needs no substitutions: without GSUB/GPOS and the vertical metrics the
    # subset is smaller and made faster.
    options.layout_features = []
    options.drop_tables += ["GSUB", "GPOS", "BASE", "VORG", "vhea", "vmtx"]
    options.name_IDs = ["*"]  # keep the licence and copyright records in the embedded file
    options.notdef_outline = True
    font = subset.load_font(str(cjk_font_path()), options, lazy=True)
    try:
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=wanted)
        subsetter.subset(font)
        buffer = io.BytesIO()
        subset.save_font(font, buffer, options)
    finally:
        font.close()
    return buffer.getvalue()


def font_face_css(text: str) -> str:
    """An @font-face rule embedding the subset of the CJK font that `text` needs ('' when it needs none).

    The family is `CSS_FAMILY`. The page lists it first: it holds nothing but CJK glyphs, so every other
    character falls through to the next font. No unicode-range, and not listed after the Latin fonts: either way
    Chromium 150 loads the face lazily and draws the first text that needs it as empty boxes."""
    chars = sorted({c for c in text if needs_cjk(c)} & {chr(u) for u in _cmap()})
    if not chars:
        return ""
    data = base64.b64encode(subset_woff("".join(chars))).decode("ascii")
    return (f"@font-face {{ font-family: '{CSS_FAMILY}'; font-style: normal; font-weight: 400; "
            f"src: url(data:font/woff;base64,{data}) format('woff'); }}")

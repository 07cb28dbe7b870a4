"""One visual language for every figure: a fixed colour per language, the layer axis written on the axis, the
conditions in a fixed order, titles that name model, split, condition and n, and the fonts (CJK included).

Colours are Okabe & Ito's colour-blind-safe set (Color Universal Design), one fixed colour per language of the
paper, so ja is the same vermillion in every figure; other languages take a fixed colour of Paul Tol's
colour-blind-safe "muted" scheme chosen from the code, never from the order they appear in.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe-Ito: black, vermillion, reddish purple, blue, bluish green, orange, sky blue (yellow is left out: it
# does not read on white).
LANG_COLORS: dict[str, str] = {
    "en": "#000000",
    "ja": "#D55E00",
    "ko": "#CC79A7",
    "nl": "#0072B2",
    "it": "#009E73",
    "zh": "#E69F00",
    "de": "#56B4E9",
}
# Paul Tol's "muted" scheme, for every other language code.
EXTRA_COLORS = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499")
# Series that are not languages (language pairs, criteria, conditions): the muted scheme in a fixed order.
SERIES_COLORS = ("#332288", "#CC6677", "#117733", "#88CCEE", "#DDCC77", "#AA4499", "#44AA99", "#999933", "#882255")

LANG_NAMES: dict[str, str] = {
    "en": "English", "ja": "日本語", "ko": "한국어", "nl": "Nederlands", "it": "Italiano", "zh": "中文",
    "de": "Deutsch", "fr": "Français", "es": "Español", "ru": "Русский", "pt": "Português",
}
ENGLISH = "en"
PLAIN = "none"
# The paper lists languages in this order; others follow alphabetically.
LANG_ORDER = ("en", "ja", "nl", "ko", "it")

HIDDEN_AXIS = "hidden index (0 = embeddings, l = output of decoder layer l)"
LAYER_AXIS = "decoder layer (0-based)"

DPI = 110
PANEL = (3.0, 2.4)  # inches per panel, before the legend column
MIN_WIDTH = 6.4

# Text as glyph paths in SVG and as embedded Type 3 glyphs in PDF (the CJK font is CFF-flavoured OpenType, which
# PDF viewers take more readily as Type 3 than as Type 42): a file reads the same without the fonts.
RC = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "figure.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 3.5,
    "svg.fonttype": "path",
    "pdf.fonttype": 3,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}


def lang_color(lang: str) -> str:
    """The fixed colour of a language code."""
    if lang in LANG_COLORS:
        return LANG_COLORS[lang]
    digest = int(hashlib.sha1(lang.encode("utf-8")).hexdigest(), 16)
    return EXTRA_COLORS[digest % len(EXTRA_COLORS)]


def lang_label(lang: str) -> str:
    """`ja 日本語`: the code as stored, with the language's own name where known."""
    name = LANG_NAMES.get(lang)
    return f"{lang} {name}" if name else lang


def lang_order(langs: Iterable[str]) -> list[str]:
    """Languages in the paper's order (en, ja, nl, ko, it), then the rest alphabetically."""
    rank = {lang: i for i, lang in enumerate(LANG_ORDER)}
    return sorted(set(langs), key=lambda lang: (rank.get(lang, len(rank)), lang))


def condition_order(conditions: Iterable[str]) -> list[str]:
    """`none` (plain) first, then transfer-neuron sets, then the rest (baselines), each alphabetically."""
    return sorted(set(conditions), key=lambda c: (c != PLAIN, not c.startswith("type"), c))


def condition_label(condition: str) -> str:
    return "plain (none)" if condition == PLAIN else f"deactivated: {condition}"


def series_color(i: int) -> str:
    return SERIES_COLORS[i % len(SERIES_COLORS)]


@dataclass(frozen=True)
class Meta:
    """What every title names besides the figure itself: the store's model."""

    model: str = "?"


def describe_n(values: Sequence[int], unit: str) -> str:
    """'n = 140 sentences' or 'n = 80-140 sentences' for a set of counts."""
    values = sorted({int(v) for v in values if v is not None})
    if not values:
        return ""
    span = f"{values[0]}" if len(values) == 1 else f"{values[0]}–{values[-1]}"
    return f"n = {span} {unit}"


def wrap(text: str, width: int) -> str:
    """Break `text` into lines of at most `width` characters, at spaces or after `_`, `,` and `-` (set names
    such as type1_ja_train_cosine_layers0-19_top1000 have no spaces); existing line breaks stay."""
    out = []
    for paragraph in text.split("\n"):
        line = ""
        for piece in re.findall(r"[^ _,-]*[ _,-]?", paragraph):
            if line and len(line) + len(piece.rstrip()) > width:
                out.append(line.rstrip())
                line = piece.lstrip(" ")
            else:
                line += piece
        out.append(line.rstrip())
    return "\n".join(out)


def chars(width_inches: float, size: float = 9.0) -> int:
    """About how many characters of a `size`-point font fit in `width_inches`."""
    return max(12, int(width_inches * 72 / (0.6 * size)))


def suptitle(fig: "Figure", what: str, meta: Meta, split: str | None = None, conditions: Sequence[str] = (),
             n: str = "", extra: str = "") -> None:
    """The figure's title: what it shows; then model, split, condition(s) and n, wrapped to the figure's width."""
    facts = [f"model {meta.model}"]
    if split is not None:
        facts.append(f"split {split}")
    if conditions:
        facts.append(f"condition{'s' if len(conditions) > 1 else ''} {', '.join(conditions)}")
    if n:
        facts.append(n)
    if extra:
        facts.append(extra)
    # The legend takes the right-hand column; the title keeps clear of it.
    width = chars(fig.get_figwidth() - 1.5 * getattr(fig, "legend_width", 1.6), RC["figure.titlesize"])
    fig.suptitle(wrap(what, width) + "\n" + wrap(" · ".join(facts), width))


def panel_title(ax: "Axes", text: str, size: float | None = None) -> None:
    """A panel's title, wrapped to the panel's width (condition names are long)."""
    size = size or RC["axes.titlesize"]
    root = ax.get_figure()
    root = getattr(root, "figure", None) or root  # a panel of a subfigure: the figure it is part of
    width = root.get_figwidth() * ax.get_position().width
    ax.set_title(wrap(text, chars(max(width, 1.5), size)), fontsize=size)


@contextmanager
def context() -> Iterator[None]:
    """matplotlib settings of every tnstore figure, the CJK font registered and used as the fallback family."""
    import matplotlib

    from tnstore.figures import fonts

    family = fonts.register()
    # The CJK fallback ships one weight; bold text (row titles) uses DejaVu's bold and, for CJK glyphs, the
    # regular face. matplotlib says so once per process on the log, which a user cannot act on.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    rc = dict(RC)
    rc["font.family"] = ["DejaVu Sans", family]
    with matplotlib.rc_context(rc):
        yield


def styled(draw: Callable[..., "Figure"]) -> Callable[..., "Figure"]:
    """Decorate a figure function: it runs inside `context()`, so its text gets the fonts (CJK included) and
    sizes of every tnstore figure whoever calls it (matplotlib fixes a text's font when the text is made)."""

    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with context():
            return draw(*args, **kwargs)

    return drawn


def grid(n_rows: int, n_cols: int, *, sharey: bool | str = False, sharex: bool | str = False,
         panel: tuple[float, float] = PANEL, legend_width: float = 1.6,
         row_titles: Sequence[str] | None = None) -> tuple["Figure", list[list["Axes"]]]:
    """A figure of n_rows x n_cols panels (a list of rows of axes), room on the right for one legend.

    sharex / sharey: False, True (all panels) or "row". row_titles: a heading over each row of panels (the
    conditions, when a figure draws them side by side)."""
    from matplotlib.figure import Figure

    # At least 6.4 inches wide: a one-panel figure still has room for its two-line title beside the legend.
    width = max(panel[0] * n_cols + legend_width, MIN_WIDTH)
    height = panel[1] * n_rows + 0.9 + (0.25 * n_rows if row_titles else 0)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.legend_width = legend_width
    if not row_titles:
        axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=sharex, sharey=sharey)
        return fig, [list(row) for row in axes]
    rows = []
    for sub, heading in zip(fig.subfigures(n_rows, 1, squeeze=False)[:, 0], row_titles):
        sub.suptitle(wrap(heading, chars(width - legend_width, RC["axes.titlesize"])),
                     fontsize=RC["axes.titlesize"], fontweight="bold")
        rows.append(list(sub.subplots(1, n_cols, squeeze=False)[0]))
    _share(rows, sharex, "x")
    _share(rows, sharey, "y")
    return fig, rows


def colorbar(fig: "Figure", image, rows: Sequence[Sequence["Axes"]], label: str) -> None:
    """One colour bar beside the panels (one per row where the rows are subfigures: a colour bar cannot span
    them; every image of a figure uses the same scale)."""
    rows = [[ax for ax in row if ax.get_visible()] for row in rows]
    rows = [row for row in rows if row]
    parents = {id(row[0].get_figure()) for row in rows}
    if len(parents) == 1:
        fig.colorbar(image, ax=[ax for row in rows for ax in row], shrink=0.8, label=label)
        return
    for row in rows:
        row[0].get_figure().colorbar(image, ax=row, shrink=0.9, label=label)


def _share(rows: list[list["Axes"]], how: bool | str, axis: str) -> None:
    """Share an axis across panels of different subfigures (subplots() shares only within one), and show its
    tick labels on the outer panels only."""
    if not how:
        return
    for r, row in enumerate(rows):
        for c, ax in enumerate(row):
            leader = row[0] if how == "row" else rows[0][0]
            if ax is not leader:
                (ax.sharex if axis == "x" else ax.sharey)(leader)
            if axis == "y" and c > 0:
                ax.tick_params(labelleft=False)
            if axis == "x" and how is True and r < len(rows) - 1:
                ax.tick_params(labelbottom=False)


def layer_axis(ax: "Axes") -> None:
    """Integer ticks on a panel's layer axis (a single layer gets room on both sides)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    low, high = ax.dataLim.intervalx
    if high - low < 1:
        ax.set_xlim(low - 1, high + 1)


def ylabel(fig: "Figure", axes: Sequence[Sequence["Axes"]], text: str) -> None:
    """The y label of a grid: on each row's first panel, or once for the figure where rows are subfigures."""
    if len({id(row[0].get_figure()) for row in axes}) > 1:
        fig.supylabel(text, fontsize=RC["axes.labelsize"])
    else:
        for row in axes:
            row[0].set_ylabel(text)


def layer_label(fig: "Figure", kind: str) -> None:
    """The layer convention written under the panels: `hidden` index (latent tables) or 0-based decoder `layer`."""
    fig.supxlabel(HIDDEN_AXIS if kind == "hidden" else LAYER_AXIS, fontsize=RC["axes.labelsize"])


def legend(fig: "Figure", axes: Sequence["Axes"], title: str | None = None, markerscale: float = 1.0) -> None:
    """One legend for the whole figure, right of the panels, from the series of all `axes` (each label once)."""
    handles, labels, seen = [], [], set()
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in seen and not label.startswith("_"):
                seen.add(label)
                handles.append(handle)
                labels.append(wrap(label, 30))
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title=title, frameon=False, markerscale=markerscale)


def language_handles(fig: "Figure", langs: Sequence[str], title: str = "language") -> None:
    """A legend of language markers (for panels that draw many languages in one scatter)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker="o", markersize=6, color=lang_color(lang),
                      label=lang_label(lang)) for lang in langs]
    fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False)


def hide_unused(axes: Sequence["Axes"]) -> None:
    for ax in axes:
        ax.set_visible(False)


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def spread(values: Sequence[int], at_most: int) -> list[int]:
    """At most `at_most` of `values` (sorted), evenly spaced, always the first and the last."""
    values = sorted(set(values))
    if len(values) <= at_most:
        return values
    picks = {values[round(i * (len(values) - 1) / (at_most - 1))] for i in range(at_most)}
    return sorted(picks)

"""Reading a drawn matplotlib Figure back: its panels, their lines and scatters, legends and titles, so tests
check what a figure shows rather than that a file exists."""
from __future__ import annotations

import io
import warnings

import numpy as np
from matplotlib.colors import to_hex


def panels(fig) -> list:
    """Visible data panels (colour bars left out), in reading order (subfigures row by row)."""
    out = []
    for ax in _all_axes(fig):
        if ax.get_visible() and not hasattr(ax, "_colorbar") and ax.get_label() != "<colorbar>":
            out.append(ax)
    return out


def _all_axes(fig) -> list:
    # A figure's `axes` already lists the panels of its subfigures, in the order they were made.
    return list(fig.axes)


def lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """Labelled lines of a panel: label -> (x, y, colour hex). Unlabelled lines are keyed by their colour."""
    out = {}
    for line in ax.get_lines():
        label = line.get_label()
        key = label if not label.startswith("_") else f"_{to_hex(line.get_color())}_{len(out)}"
        out[key] = (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float),
                    to_hex(line.get_color()))
    return out


def scatters(ax) -> dict[str, tuple[np.ndarray, str]]:
    """Labelled scatters of a panel: label -> (offsets (n, 2), colour hex)."""
    out = {}
    for coll in ax.collections:
        label = coll.get_label()
        if label and not label.startswith("_") and hasattr(coll, "get_offsets"):
            out[label] = (np.asarray(coll.get_offsets()), to_hex(coll.get_facecolor()[0]))
    return out


def unwrap(text: str) -> str:
    """Undo tnstore.figures.style.wrap (line breaks after `_`, `,`, `-` or at a space)."""
    return text.replace("_\n", "_").replace(",\n", ", ").replace("-\n", "-").replace("\n", " ")


def legend_labels(fig) -> list[str]:
    return [unwrap(t.get_text()) for legend in fig.legends for t in legend.get_texts()]


def suptitle(fig) -> str:
    """The figure's title with the line breaks of its wrapping undone."""
    return unwrap(fig._suptitle.get_text() if fig._suptitle is not None else "")


def texts(fig) -> str:
    """All text the figure draws (titles, labels, ticks, legends, annotations), one string."""
    found = []
    for artist in fig.findobj(lambda a: hasattr(a, "get_text")):
        text = artist.get_text()
        if text:
            found.append(text)
    return "\n".join(found)


def render_png(fig) -> tuple[bytes, list[str]]:
    """The figure as PNG bytes, and the warnings drawing it raised (matplotlib warns of glyphs a font lacks)."""
    from tnstore.figures import style

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        buffer = io.BytesIO()
        with style.context():
            fig.savefig(buffer, format="png")
    return buffer.getvalue(), [str(w.message) for w in caught]

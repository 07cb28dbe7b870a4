"""Figures of the latent-space analyses (matplotlib, Agg backend: no display needed), drawn from result tables."""
from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from tnstore.errors import TnstoreError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: a CLI run must never try to open a window
    import matplotlib.pyplot as plt

    return plt


FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_figure_path(path: Path) -> None:
    """Refuse an unusable --figure before any work is done (and before the store is written)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise TnstoreError(f"--figure {path}: the file name must end in one of {', '.join(FORMATS)}")
    if not path.parent.is_dir():
        raise TnstoreError(f"--figure {path}: folder {path.parent} does not exist; create it or choose another path")


def _save(fig, path: Path) -> Path:
    path = Path(path)
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise TnstoreError(f"--figure {path}: cannot write it ({exc}); use a writable .png/.pdf/.svg path") from None
    finally:
        _pyplot().close(fig)
    return path


def pca_scatter(table: pa.Table, path: Path, max_panels: int = 36) -> Path:
    """PC1/PC2 scatter per hidden index, coloured by language (Fig. 2, 16, 17); table = latent_pca rows."""
    plt = _pyplot()
    rows = table.select(["hidden_index", "lang", "pc1", "pc2", "evr1", "evr2"]).to_pylist()
    indices = sorted({r["hidden_index"] for r in rows})[:max_panels]
    langs = sorted({r["lang"] for r in rows})
    cols = min(6, len(indices))
    lines = math.ceil(len(indices) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(2.6 * cols, 2.4 * lines), squeeze=False)
    for ax in axes.ravel()[len(indices):]:
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices):
        here = [r for r in rows if r["hidden_index"] == index]
        for lang in langs:
            mine = [r for r in here if r["lang"] == lang]
            ax.scatter([r["pc1"] for r in mine], [r["pc2"] for r in mine], s=4, alpha=0.6, label=lang)
        ax.set_title(f"h{index}  ({here[0]['evr1']:.2f}, {here[0]['evr2']:.2f})", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    axes.ravel()[0].legend(fontsize=6, markerscale=2)
    fig.suptitle("PCA of last-token hidden states (title: hidden index, explained variance of PC1, PC2)",
                 fontsize=9, y=1.03)
    return _save(fig, path)


def layer_lines(series: dict[str, tuple[list, list]], path: Path, title: str, ylabel: str) -> Path:
    """One line per series name: (hidden indices, values), against the hidden index."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("hidden index (0 = embeddings, l = output of layer l)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def series_from(table: pa.Table, name_columns: list[str], value: str) -> dict[str, tuple[list, list]]:
    """Group a result table's rows into line series named by `name_columns`, ordered by hidden index."""
    out: dict[str, tuple[list, list]] = {}
    for r in sorted(table.to_pylist(), key=lambda r: r["hidden_index"]):
        name = " ".join(r[c] if isinstance(r[c], str) else f"{c}={r[c]:g}" for c in name_columns)
        xs, ys = out.setdefault(name, ([], []))
        xs.append(r["hidden_index"])
        ys.append(r[value])
    return out

"""Figures to files: `plot(store, "pca", out_dir)` draws a figure type from the store's tables and saves it;
`plot(store, "all", out_dir)` every figure the store can draw. Formats: png (default), pdf, svg."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.figures import registry
from tnstore.figures.style import Meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tnstore.store.store import Store

FORMATS = ("png", "pdf", "svg")
ALL = "all"


@dataclass(frozen=True)
class PlotResult:
    """What `plot` wrote, and for `all` the figures it could not draw (one line each, naming the command)."""

    written: list[Path]
    skipped: list[str] = field(default_factory=list)


def save(fig: "Figure", path: Path, fmt: str | None = None) -> Path:
    """Write a figure (format from `fmt` or the file's suffix) and free it."""
    from tnstore.figures import style

    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    try:
        with style.context():
            fig.savefig(path, format=fmt, dpi=style.DPI)
    except OSError as exc:
        raise TnstoreError(f"cannot write figure {path}: {exc.strerror or exc}; choose a writable --out") from None
    return path


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ArgumentError("fmt", f"{{arg}} {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def check_out_dir(out_dir: Path) -> Path:
    """The folder figures go into; created if its parent exists."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError("out_dir", f"{{arg}} {out_dir} is a file; give a folder for the figures")
    if not out_dir.exists():
        if not out_dir.parent.is_dir():
            raise ArgumentError("out_dir", f"{{arg}} {out_dir}: folder {out_dir.parent} does not exist")
        try:
            out_dir.mkdir()
        except OSError as exc:
            raise ArgumentError("out_dir", f"{{arg}} {out_dir}: cannot create it ({exc.strerror})") from None
    return out_dir


def plot(store: "str | Path | Store", name: str, out_dir: "str | Path" = ".", fmt: str = "png",
         layers: Sequence[int] | None = None, types: Sequence[int] | None = None) -> PlotResult:
    """Draw figure type `name` (or "all") from the store's tables into `out_dir` as <name>.<fmt>.

    A figure type with several analysis groups (e.g. train and test splits) writes one file per group.
    For "all", `layers` and `types` apply to the figures that have a layer axis / transfer-neuron types, and a
    figure whose table is missing is listed in `skipped`; no figure at all is an error."""
    from tnstore.store.store import Store, open_store

    fmt = check_format(fmt)
    store = store if isinstance(store, Store) else open_store(store, mode="r")
    if name != ALL:
        registry.figure_type(name)  # an unknown name fails before anything is written
        out_dir = check_out_dir(Path(out_dir))
        return PlotResult(_save_all(registry.draw(store, name, layers, types), out_dir, fmt))
    out_dir = check_out_dir(Path(out_dir))
    written, skipped = [], []
    for kind in registry.figure_types():
        try:
            drawn = registry.draw(store, kind.name, layers if kind.layers else None, types if kind.types else None)
        except registry.MissingTable as exc:
            skipped.append(str(exc))
            continue
        except ArgumentError as exc:
            if exc.arg not in ("layers", "types"):
                raise
            skipped.append(f"figure {kind.name}: {exc}")
            continue
        written += _save_all(drawn, out_dir, fmt)
    if not written:
        raise TnstoreError(f"no figure can be drawn from store {store.path} yet; `tnstore plot {store.path} --list` "
                           "names the command that makes each figure's table")
    return PlotResult(written, skipped)


def _save_all(drawn: list[registry.Drawn], out_dir: Path, fmt: str) -> list[Path]:
    return [save(d.figure, out_dir / f"{d.stem}.{fmt}", fmt) for d in drawn]


def draw_table(name: str, table: Any, model: str = "?", **options: Any) -> "Figure":
    """Figure type `name` drawn straight from a table (e.g. an analysis result's `table_arrow`), no store."""
    from tnstore.figures import style

    kind = registry.figure_type(name)
    with style.context():
        return kind.draw(table, Meta(model), **{**kind.options, **options})


def check_figure_path(path: Path) -> Path:
    """Refuse an unusable --figure FILE before any work is done (and before the store is written)."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise ArgumentError("figure", f"{{arg}} {path}: the file name must end in .png, .pdf or .svg")
    if not path.parent.is_dir():
        raise ArgumentError("figure", f"{{arg}} {path}: folder {path.parent} does not exist; create it or choose "
                                      "another path")
    return path

"""A shareable HTML report of a store: every figure the store can draw, the key tables (η² summary, Jaccard
matrix, QA summary) and the provenance (model and fingerprint, every capture run with its command, versions,
date), in one self-contained file that opens offline in any browser.

    import tnstore
    tnstore.report.build("store", "report.html")       # -> ReportResult(path, seconds, figures, missing)

The report is presentation, so it lives next to `tnstore.figures` in the library (a notebook can build one
without the CLI; `tnstore report` is a thin shell over `build`): `content` reads what the report shows from the
store, `html` lays it out (a Jinja2 template, the CSS and the embedded CJK font subset).
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tnstore.errors import ArgumentError, TnstoreError

if TYPE_CHECKING:
    from tnstore.store.store import Store

__all__ = ["build", "ReportResult"]


@dataclass(frozen=True)
class ReportResult:
    """The file written, how long it took, the figures drawn and the analyses listed as missing."""

    path: Path
    seconds: float
    figures: int
    missing: list[str]
    bytes: int


def build(store: "str | Path | Store", out: "str | Path" = "report.html", title: str | None = None) -> ReportResult:
    """Write the report of `store` to `out` (.html); the file is replaced whole, never left half-written."""
    from tnstore.report import content, html
    from tnstore.store.store import open_store

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ArgumentError("out", f"{{arg}} {out}: the report is an HTML file; give a name ending in .html")
    if not out.parent.is_dir():
        raise ArgumentError("out", f"{{arg}} {out}: folder {out.parent} does not exist")
    t0 = time.perf_counter()
    store = open_store(store, mode="r")
    report = content.collect(store, title)
    text = html.render(report)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TnstoreError(f"cannot write report {out}: {exc.strerror or exc}") from None
    figures = sum(len(a.images) for s in report.sections for a in s.analyses)
    missing = [m.name for s in report.sections for m in s.missing]
    return ReportResult(out, time.perf_counter() - t0, figures, missing, len(text.encode("utf-8")))

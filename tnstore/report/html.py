"""A `Report` as one self-contained HTML file: figures as PNG data URIs, the CSS inline, and the subset of the CJK
font the page's text needs embedded as an @font-face data URI, so it renders offline in any browser."""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from markupsafe import Markup, escape

from tnstore.report.content import Report, Table

NUMBER = re.compile(r"^[−+-]?[\d,]*\.?\d+(e[+-]?\d+)?$|^–$")


@lru_cache(maxsize=1)
def _template():
    import jinja2

    text = resources.files("tnstore.report").joinpath("report.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.globals["render_table"] = render_table
    return env.from_string(text)


def render_table(table: Table) -> Markup:
    """A Table as an HTML table (numbers right-aligned), with its title and note."""
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for value in row:
            kind = "num" if NUMBER.match(value) else ("long" if len(value) > 40 else "")
            cells.append(f"<td class=\"{kind}\">{escape(value)}</td>" if kind else f"<td>{escape(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f"<p class=\"note\">{escape(table.note)}</p>" if table.note else ""
    return Markup(f"<div class=\"table\"><h4>{escape(table.title)}</h4><table><thead><tr>{head}</tr></thead>"
                  f"<tbody>{''.join(body)}</tbody></table>{note}</div>")


def render(report: Report) -> str:
    """The HTML text of the report."""
    import tnstore
    from tnstore.figures import fonts

    css = resources.files("tnstore.report").joinpath("report.css").read_text("utf-8")
    page = _template().render(report=report, css=Markup(css), font_css=Markup("/*FONT*/"),
                              version=tnstore.__version__)
    # The font subset holds exactly the CJK characters of the finished page (text and attributes alike).
    return page.replace("/*FONT*/", fonts.font_face_css(page), 1)

"""The HTML report of a store of synthetic result tables: self-contained (no request leaves the file), a section
per analysis with its figure, the missing analyses with their commands, the key tables with the stored values,
the provenance, and the embedded font covering every CJK character on the page."""
from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.cli_runner import run_cli
from tests.tiny_models.test_figures_cli import LEFT_OUT, ready_figures, write_store
from tnstore.errors import ArgumentError
from tnstore.figures import fonts

CJK = re.compile(r"[\u2e80-\U0002ffff]")


class Page(HTMLParser):
    """The parts of the report the tests read: tags with attributes, sections and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.analyses: dict[str, list[str]] = {}  # article data-figure -> its img srcs
        self.missing: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._article: str | None = None
        self._in_li = False
        self._cell: list[str] | None = None
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "article":
            self._article = attrs["data-figure"]
            self.analyses[self._article] = []
        if tag == "img" and self._article:
            self.analyses[self._article].append(attrs["src"])
        if tag == "li":
            self._in_li, self.missing = True, self.missing + [""]
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "article":
            self._article = None
        if tag == "li":
            self._in_li = False
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_li:
            self.missing[-1] += data
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store = write_store(root / "store", skip=LEFT_OUT)
    import tnstore

    result = tnstore.report.build(store, root / "report.html")
    text = result.path.read_text("utf-8")
    return store, result, text, Page(text)


def test_the_report_needs_nothing_outside_the_file(built):
    _, _, text, page = built
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, value[:60])
    assert not re.search(r"url\((?!data:)", text)
    assert "http://" not in text and "https://" not in text


def test_each_analysis_present_has_its_figures_as_valid_png(built):
    _, result, _, page = built
    assert set(page.analyses) == set(ready_figures())
    for name, sources in page.analyses.items():
        assert len(sources) == 1, name
        prefix = "data:image/png;base64,"
        assert sources[0].startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(sources[0][len(prefix):])))
        image.verify()
        assert image.size[0] > 300 and image.size[1] > 150
    assert result.figures == len(ready_figures())


def test_missing_analyses_are_listed_with_the_command(built):
    store, result, _, page = built
    probe = next(line for line in page.missing if line.startswith("probe"))
    assert f"tnstore latent probe {store}" in probe
    assert any(line.startswith("qa-scatter") and "tnstore eval qa" in line for line in page.missing)
    assert set(result.missing) == {"probe", "qa-scatter", "qa-change"} | (
        set() if "crossling" in ready_figures() else {"crossling"})


def test_key_tables_hold_the_stored_values(built):
    store, _, _, page = built
    import tnstore

    s = tnstore.open(store, "r")
    headers = {tuple(t[0]): t for t in page.tables if t}
    jaccard = next(t for h, t in headers.items() if h[:1] == ("",) and "ja" in h)
    langs = jaccard[0][1:]
    value = {(r["lang_a"], r["lang_b"]): r["jaccard"] for r in s.query(
        "SELECT lang_a, lang_b, jaccard FROM tn_jaccard WHERE layer IS NULL AND type = 1").to_pylist()}
    for row in jaccard[1:]:
        for b, cell in zip(langs, row[1:]):
            a = row[0]
            want = 1.0 if a == b else value.get((a, b), value.get((b, a)))
            assert float(cell) == pytest.approx(want, abs=5e-4)
    eta = next(t for h, t in headers.items() if "eta2_top10" in h)
    columns = eta[0]
    from tnstore.analysis.stats.core import params, query

    stored = s.query(query("tn_summary", params=params(label="language", label_spec=None,
                                                       where_sql="ablation IS NULL", split="train"))).to_pylist()
    for want in stored:
        row = next(r for r in eta[1:] if r[columns.index("label")] == "language"
                   and r[columns.index("lang")] == want["lang"] and r[columns.index("type")] == str(want["type"]))
        assert float(row[columns.index("eta2_top10")]) == pytest.approx(want["eta2_top10"], abs=5e-4)


def test_provenance_names_model_runs_versions_and_date(built):
    _, _, text, page = built
    import tnstore

    joined = " ".join(page.text)
    assert "fingerprint" in joined and "synthetic-tiny" in joined
    assert "tnstore capture --model synthetic --corpus synthetic.jsonl" in joined
    assert re.search(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", joined)
    versions = next(t for t in page.tables if t and t[0] == ["package", "version"])
    packages = {row[0]: row[1] for row in versions[1:]}
    assert packages["tnstore"] == tnstore.__version__ and packages["matplotlib"][0].isdigit()
    assert {"numpy", "pyarrow", "duckdb", "polars", "torch"} <= set(packages)


def test_the_embedded_font_covers_every_cjk_character_of_the_page(built):
    _, _, text, page = built
    body = "".join(page.text)
    needed = set(CJK.findall(body))
    assert {"駅", "역", "語"} <= needed  # example sentences and language labels
    match = re.search(r"font-family: 'tnstore-cjk'.*?base64,([A-Za-z0-9+/=]+)\)", text)
    from fontTools.ttLib import TTFont

    cmap = TTFont(io.BytesIO(base64.b64decode(match.group(1)))).getBestCmap()
    assert needed <= set(map(chr, cmap))
    assert fonts.covers("".join(needed)) == set()


def test_report_command(monkeypatch, capsys, tmp_path):
    # A store of one analysis keeps this quick: the content is checked on the full store above.
    store = write_store(tmp_path / "store", skip=tuple(t for t in __import__("tnstore.store.schema").store.schema
                                                       .table_names() if t != "tn_jaccard"))
    out = tmp_path / "r.html"
    code, stdout, err = run_cli(monkeypatch, capsys, "report", store, "--out", out, "--title", "Team report")
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} (") and "2 figures" in stdout
    assert "<title>Team report</title>" in out.read_text("utf-8")
    code, _, err = run_cli(monkeypatch, capsys, "report", store, "--out", tmp_path / "r.pdf")
    assert code == 2 and err.startswith("error: --out") and err.count("\n") == 1
    code, _, err = run_cli(monkeypatch, capsys, "report", tmp_path / "nothing", "--out", out)
    assert code == 2 and "does not exist" in err


def test_build_refuses_a_missing_folder(built, tmp_path):
    import tnstore

    with pytest.raises(ArgumentError) as err:
        tnstore.report.build(built[0], tmp_path / "no" / "r.html")
    assert err.value.arg == "out"
    assert not (tmp_path / "no").exists()
    assert isinstance(Path(built[1].path), Path)


def test_generation_examples_show_every_condition_of_the_first_items():
    import pyarrow as pa

    from tnstore.report.content import generation_examples

    rows = [{"task": "generate", "lang": lang, "item_id": f"p{i}", "item_index": i, "condition": c,
             "prompt": f"{lang} prompt {i}", "output": "猫が好きです。\nとても" if lang == "ja" else f"out {c}"}
            for lang in ("ko", "ja") for i in range(4) for c in ("random_x", "none", "type2_ja")]
    table = generation_examples(pa.Table.from_pylist(rows), per_lang=2)
    assert table.columns == ["task", "lang", "item_id", "condition", "prompt", "output"]
    assert [(r[1], r[2], r[3]) for r in table.rows][:3] == [("ja 日本語", "p0", "none"), ("ja 日本語", "p0", "type2_ja"),
                                                             ("ja 日本語", "p0", "random_x")]
    assert len(table.rows) == 2 * 2 * 3 and {r[2] for r in table.rows} == {"p0", "p1"}
    assert table.rows[0][5] == "猫が好きです。 ⏎ とても"

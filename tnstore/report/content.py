"""What a report holds, read from a store: the figures of every analysis present (and the commands for the ones
missing), the key tables, the data captured and the provenance. Plain data; `tnstore.report.html` lays it out."""
from __future__ import annotations

import base64
import importlib.metadata
import io
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tnstore.errors import TnstoreError

if TYPE_CHECKING:
    import pyarrow as pa

    from tnstore.store.store import Store

# Versions reported in the provenance (distribution names; read from metadata, nothing is imported).
LIBRARIES = ("tnstore", "torch", "transformers", "numpy", "scipy", "scikit-learn", "pyarrow", "duckdb", "polars",
             "zarr", "numba", "matplotlib", "fonttools", "notojp-matplotlib", "jinja2")
EXAMPLES_PER_LANG = 2


@dataclass(frozen=True)
class Image:
    """One drawn figure as a PNG data URI."""

    uri: str
    alt: str
    caption: str


@dataclass(frozen=True)
class Analysis:
    """A figure type the store has tables for, its images (one per analysis group), or why it failed."""

    name: str
    what: str
    paper: str
    tables: str
    images: list[Image]
    error: str | None = None


@dataclass(frozen=True)
class Missing:
    name: str
    what: str
    paper: str
    table: str
    command: str


@dataclass(frozen=True)
class Table:
    """A table for people: column names and rows of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    analyses: list[Analysis]
    missing: list[Missing]
    tables: list[Table] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    title: str
    store_path: str
    generated_at: str
    model: dict[str, Any]
    data: list[Table]
    sections: list[Section]
    provenance: list[Table]
    seconds: float = 0.0


def collect(store: "Store", title: str | None = None) -> Report:
    """Everything the report shows, from the store's tables."""
    from tnstore.figures import registry

    t0 = time.perf_counter()
    model = dict(store.model_facts)
    sections = []
    for key, heading in registry.SECTIONS.items():
        analyses, missing = [], []
        for kind in (k for k in registry.figure_types() if k.section == key):
            try:
                drawn = registry.draw(store, kind.name)
            except registry.MissingTable as exc:
                missing.append(Missing(kind.name, kind.what, kind.paper, exc.table, exc.command))
                continue
            except TnstoreError as exc:
                analyses.append(Analysis(kind.name, kind.what, kind.paper, ", ".join(kind.tables), [], str(exc)))
                continue
            images = [Image(_png_uri(d.figure), f"{kind.name}: {kind.what}", d.label) for d in drawn]
            analyses.append(Analysis(kind.name, kind.what, kind.paper, ", ".join(kind.tables), images))
        sections.append(Section(key, heading, analyses, missing, _key_tables(store, key)))
    return Report(title or f"tnstore report: {model.get('model_spec', '?')}", str(store.path),
                  datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), model, _data_tables(store),
                  sections, _provenance(store), time.perf_counter() - t0)


def _png_uri(fig) -> str:
    from tnstore.figures import style

    buffer = io.BytesIO()
    with style.context():
        fig.savefig(buffer, format="png", dpi=style.DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------------ tables
def cell(value: Any) -> str:
    """A value as table text: floats to 3 significant digits (whole numbers as integers), None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value.is_integer() and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def from_arrow(title: str, table: "pa.Table", note: str = "", max_rows: int = 200) -> Table:
    rows = [[cell(v) for v in row.values()] for row in table.slice(0, max_rows).to_pylist()]
    if table.num_rows > max_rows:
        note = (note + " " if note else "") + f"First {max_rows} of {table.num_rows} rows."
    return Table(title, list(table.column_names), rows, note)


def _key_tables(store: "Store", section: str) -> list[Table]:
    if section == "neurons":
        return [t for t in (_eta2_summary(store), *_jaccard_matrices(store)) if t is not None]
    if section == "evaluation":
        return [t for t in (_qa_summary(store), _qa_change(store), _generations(store)) if t is not None]
    return []


def _eta2_summary(store: "Store") -> Table | None:
    from tnstore.figures import registry

    if not registry.table_rows(store, "tn_corr_ratio"):
        return None
    import polars as pl

    groups = registry.read_summary(store)
    if not groups:
        return None
    df = pl.concat([g.data for g in groups], how="diagonal_relaxed")
    keep = [c for c in ("label", "label_spec", "split", "lang", "type", "n_tn", "eta2_top10", "eta2_top100",
                        "eta2_top1000", "sig", "sig_eta2_gt_0_1", "sig_eta2_gt_0_25", "mwu_sig") if c in df.columns]
    from tnstore.figures import style

    rank = {lang: i for i, lang in enumerate(style.lang_order(df["lang"].to_list()))}
    df = df.select(keep).with_columns(pl.col("lang").replace_strict(rank, default=len(rank)).alias("_rank"))
    df = df.sort("label", "type", "_rank").drop("_rank")
    return from_arrow("η² summary: mean η² of the top 10 / 100 / 1000 transfer neurons and the share with p < 0.05 "
                      "(and η² > 0.1 / 0.25)", df.to_arrow(), "queries/tn_summary.sql for every stored corr-ratio "
                      "run; reading: > 0.1 some, > 0.25 moderate, > 0.5 strong correlation.")


def _jaccard_matrices(store: "Store") -> list[Table]:
    from tnstore.figures import registry, style

    if not registry.table_rows(store, "tn_jaccard"):
        return []
    overall = store.query("SELECT type, top, split, lang_a, lang_b, jaccard FROM tn_jaccard WHERE layer IS NULL "
                          "ORDER BY type, top, split").to_pylist()
    out = []
    for key in sorted({(r["type"], r["top"], r["split"]) for r in overall}):
        rows = [r for r in overall if (r["type"], r["top"], r["split"]) == key]
        langs = style.lang_order([r["lang_a"] for r in rows] + [r["lang_b"] for r in rows])
        value = {(r["lang_a"], r["lang_b"]): r["jaccard"] for r in rows}
        value.update({(b, a): v for (a, b), v in list(value.items())})
        body = [[a] + ["1" if a == b else cell(value.get((a, b))) for b in langs] for a in langs]
        out.append(Table(f"Jaccard matrix: Type-{key[0]} top-{key[1]} sets (split {key[2]})", [""] + langs, body,
                         "Jaccard index |A ∩ B| / |A ∪ B| of the two languages' sets (tn_jaccard, layer null)."))
    return out


QA_SUMMARY_COLUMNS = ("eval_id", "positions", "lang", "condition", "n_questions", "mean_em", "mean_f1",
                      "n_base_gt_0_5", "base_f1_gt_0_5", "f1_gt_0_5", "delta_f1_gt_0_5", "n_base_gt_0_8",
                      "base_f1_gt_0_8", "f1_gt_0_8", "delta_f1_gt_0_8")
GENERATIONS_PER_LANG = 2


def _qa_summary(store: "Store") -> Table | None:
    from tnstore.figures import registry

    if not registry.table_rows(store, "eval_qa_summary"):
        return None
    table = store.read_table("eval_qa_summary")
    table = table.select([c for c in QA_SUMMARY_COLUMNS if c in table.column_names] or table.column_names)
    return from_arrow("QA summary: mean EM and F1 per language and condition, and the change from none over "
                      "questions with plain F1 > 0.5 / 0.8 (eval_qa_summary)", table)


def _generations(store: "Store") -> Table | None:
    from tnstore.figures import registry

    if not registry.table_rows(store, "eval_generations"):
        return None
    return generation_examples(store.read_table("eval_generations"))


def generation_examples(table: "pa.Table", per_lang: int = GENERATIONS_PER_LANG) -> Table:
    """The first `per_lang` items of each task and language, every condition's output side by side (Tab. 38-41:
    with Type-2 neurons off, the output language often changes)."""
    import polars as pl

    from tnstore.figures import style

    df = pl.from_arrow(table)
    keys = [c for c in ("task", "lang") if c in df.columns]
    first = (df.select(*keys, "item_index").unique().sort(*keys, "item_index")
             .with_columns(pl.col("item_index").rank("ordinal").over(keys).alias("_k"))
             .filter(pl.col("_k") <= per_lang).drop("_k"))
    picked = df.join(first, on=[*keys, "item_index"])
    order = {c: i for i, c in enumerate(style.condition_order(picked["condition"].to_list()))}
    langs = {lang: i for i, lang in enumerate(style.lang_order(picked["lang"].to_list()))}
    rows = sorted(picked.iter_rows(named=True), key=lambda r: (r.get("task") or "", langs[r["lang"]],
                                                              r["item_index"], order[r["condition"]]))
    columns = [c for c in ("task", "lang", "item_id", "condition", "prompt", "output") if c in df.columns]
    body = [[style.lang_label(r[c]) if c == "lang" else _short(r[c]) for c in columns] for r in rows]
    return Table("Example generations, every condition (eval_generations)", columns, body,
                 f"The first {per_lang} items of each task and language; long texts are cut at 200 characters.")


def _short(value: Any, at: int = 200) -> str:
    text = cell(value).replace("\n", " ⏎ ")
    return text if len(text) <= at else text[:at - 1] + "…"


def _qa_change(store: "Store") -> Table | None:
    from tnstore.figures import evaluation, registry

    if not registry.table_rows(store, "eval_qa"):
        return None
    try:
        change = evaluation.f1_change(store.read_table("eval_qa"))
    except TnstoreError:
        return None
    return from_arrow("MKQA F1 change from no deactivation (questions with plain F1 above the threshold)",
                      change.to_arrow(), "As the paper's Tab. 3: mean over the questions whose plain F1 > 0.5 / 0.8.")


def _data_tables(store: "Store") -> list[Table]:
    """Sentences per language, split, kind and condition, and a few example sentences per language."""
    counts = store.query("SELECT lang, split, kind, coalesce(ablation, 'none') AS condition, count(*) AS sentences, "
                         "round(avg(n_tokens), 1) AS mean_tokens FROM sentences GROUP BY ALL "
                         "ORDER BY split, kind, condition, lang")
    examples = store.query(
        "SELECT lang, split, kind, text FROM (SELECT *, row_number() OVER (PARTITION BY lang ORDER BY row) AS k "
        "FROM sentences WHERE ablation IS NULL) WHERE k <= ? ORDER BY lang, row", [EXAMPLES_PER_LANG])
    from tnstore.figures import style

    order = {lang: i for i, lang in enumerate(style.lang_order(examples.column("lang").to_pylist()))}
    rows = sorted(examples.to_pylist(), key=lambda r: order[r["lang"]])
    sample = Table("Example sentences (the first captured per language)", ["lang", "split", "kind", "text"],
                   [[style.lang_label(r["lang"]), r["split"], r["kind"], r["text"]] for r in rows])
    return [from_arrow("Sentences in the store", counts), sample]


def _provenance(store: "Store") -> list[Table]:
    facts = dict(store.model_facts)
    model = Table("Model", ["fact", "value"], [[k, cell(v)] for k, v in facts.items()])
    runs = store.query("SELECT run_id, command, corpus, split, kind, n_sentences, ablation, ablation_scope, device, "
                       "compute_dtype, storage_dtype, round(seconds, 1) AS seconds, finished_at, tnstore_version "
                       "FROM runs ORDER BY row_start")
    versions = [["python", platform.python_version()]] + [[name, _version(name)] for name in LIBRARIES]
    store_facts = Table("Store", ["fact", "value"], [
        ["path", str(store.path)], ["format version", cell(store.manifest.get("format_version"))],
        ["created", cell(store.manifest.get("created_at"))], ["captured rows", cell(store.n_rows())],
        ["platform", platform.platform()]])
    return [model, from_arrow("Capture runs (every command that wrote sentences)", runs, max_rows=1000),
            store_facts, Table("Versions (this report)", ["package", "version"], versions)]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"

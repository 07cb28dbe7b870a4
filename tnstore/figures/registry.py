"""Which figures a store can draw: every figure type, the tables it reads, the command that makes them, and how
its input is read from a store (the figure functions themselves never see a store).

A figure type draws one figure per analysis group of its table (e.g. one per split and --where selection of a
latent analysis); `draw` returns them all. A table that is missing or empty is a `MissingTable` error whose one
line names the command that produces it.
"""
from __future__ import annotations

import hashlib
import shlex
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import pyarrow as pa

from tnstore.errors import ArgumentError, TnstoreError
from tnstore.figures.style import Meta

if TYPE_CHECKING:
    import polars as pl
    from matplotlib.figure import Figure

    from tnstore.store.store import Store

# Table -> the command that writes it ({store} is the store's path).
PRODUCERS: dict[str, str] = {
    "latent_pca": "tnstore latent pca {store}",
    "latent_dims": "tnstore latent dims {store}",
    "latent_centroid_cos": "tnstore latent centroids {store}",
    "latent_knn": "tnstore latent knn {store}",
    "latent_pair_similarity": "tnstore latent similarity {store}",
    "latent_probe": "tnstore latent probe {store}",
    "latent_trajectory": "tnstore latent trajectory {store}",
    "transfer_neurons": "tnstore detect {store} --type 1 --lang ja",
    "tn_jaccard": "tnstore stats jaccard {store} --type 1",
    "tn_corr_ratio": "tnstore stats corr-ratio {store} --label language",
    "lang_neurons": "tnstore stats lang-neurons {store}",
    "crossling_deactivation": "tnstore replay cross-lingual {store} --type 1 --langs ja,nl,ko,it --split test",
    "eval_qa": "tnstore eval qa {store} --data MKQA.jsonl.gz --langs ja,nl,ko,it --conditions none,SET,BASELINE",
    "eval_mc_summary": "tnstore eval mc {store} --data MMLU_PROX_JA.jsonl --lang ja --conditions none,SET,BASELINE",
    "eval_gen_metrics": "tnstore eval generate {store} --prompts PROMPTS.jsonl --langs ja,ko --conditions "
                        "none,SET,BASELINE",
}

SECTIONS = {
    "latent": "Latent space (§3; App. B, C, E)",
    "neurons": "Transfer neurons (§4, §6.1; App. H)",
    "deactivation": "Deactivation (§5; App. G, I)",
    "evaluation": "Downstream evaluation (§7; App. J)",
}
LANG_NEURON_THRESHOLDS = (0.1, 0.25, 0.5)


class MissingTable(TnstoreError):
    """A figure's table is missing or empty; the message names the command that makes it."""

    def __init__(self, figure: str, table: str, command: str, known: bool):
        self.figure, self.table, self.command = figure, table, command
        state = "is empty in this store" if known else "is not in this store (its tnstore has no such table yet)"
        super().__init__(f"figure {figure}: table {table} {state}; make it with `{command}`")


@dataclass(frozen=True)
class Group:
    """One figure's input: the rows of one analysis group, and what tells it apart from the others."""

    data: Any  # a Polars frame (or Arrow table) for the figure function
    key: tuple = ()
    label: str = ""


@dataclass(frozen=True)
class FigureType:
    """A kind of figure: `draw(data, meta, **options)` is the pure figure function; `read(store)` its groups."""

    name: str
    what: str
    paper: str
    section: str
    tables: tuple[str, ...]
    draw: Callable[..., "Figure"]
    read: Callable[["Store"], list[Group]]
    layers: str | None = None  # the layer axis --layers picks from: "hidden", "layer" or None
    types: bool = False  # whether --type picks transfer-neuron types
    options: dict = field(default_factory=dict)  # fixed keyword arguments of `draw`

    def command(self, store_path: str, table: str | None = None) -> str:
        return PRODUCERS[table or self.tables[0]].format(store=shlex.quote(store_path))


@dataclass(frozen=True)
class Drawn:
    """A drawn figure: its type, the file stem it is saved under, and the group it shows."""

    name: str
    stem: str
    figure: "Figure"
    label: str


# ================================================================================================ reading
def _frame(store: "Store", table: str, columns: Sequence[str] | None = None) -> "pl.DataFrame":
    import polars as pl

    data = store.read_table(table)
    if columns is not None:
        data = data.select([c for c in columns if c in data.column_names])
    return pl.from_arrow(data)


def _groups(df: "pl.DataFrame", by: Sequence[str]) -> list[Group]:
    """One group per distinct value of the `by` columns the frame has (rows with a null there keep together)."""
    by = [c for c in by if c in df.columns]
    if not by:
        return [Group(df)]
    parts = df.partition_by(by, as_dict=True, maintain_order=True)
    out = []
    for key in sorted(parts, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        label = ", ".join(f"{col} {val}" for col, val in zip(by, key) if val is not None)
        out.append(Group(parts[key], tuple(key), label))
    return out


def _latent(table: str, by: Sequence[str] = ("split", "selection")) -> Callable[["Store"], list[Group]]:
    """One group per split and user selection, whatever the condition: conditions are drawn side by side."""
    return lambda store: _groups(_with_selection(_frame(store, table)), by)


def _with_selection(df: "pl.DataFrame") -> "pl.DataFrame":
    """`df` with a `selection` column: its where_sql without the clause each condition added (None: default)."""
    import polars as pl

    from tnstore.analysis.conditions import selection_of

    if "where_sql" not in df.columns:
        return df
    condition = df["condition"] if "condition" in df.columns else pl.Series([None] * df.height, dtype=pl.String)
    pairs = {(w, c) for w, c in zip(df["where_sql"].to_list(), condition.to_list())}
    of = {pair: selection_of(*pair) for pair in pairs}
    return df.with_columns(pl.Series("selection", [of[(w, c)] for w, c in zip(df["where_sql"].to_list(),
                                                                              condition.to_list())], dtype=pl.String))


def _read_tn(store: "Store") -> list[Group]:
    return [Group(_frame(store, "transfer_neurons", ["set_id", "lang", "type", "top", "split", "dist", "layer",
                                                     "layer_start", "layer_end"]))]


def _read_jaccard(store: "Store") -> list[Group]:
    return _groups(_frame(store, "tn_jaccard"), ("top", "split", "dist", "sets_sql"))


_memo: "weakref.WeakKeyDictionary[Store, dict]" = weakref.WeakKeyDictionary()


def _cached(store: "Store", table: str, read: Callable[["Store"], Any]) -> Any:
    """`read(store)` once per store and state of `table` (its part files): several figures and the report's key
    tables read the same summaries."""
    state = (table, read.__name__, tuple((f.name, f.stat().st_mtime_ns) for f in store.part_files(table)))
    memo = _memo.setdefault(store, {})
    if state not in memo:
        memo[state] = read(store)
    return memo[state]


def read_summary(store: "Store") -> list[Group]:
    """queries/tn_summary.sql for every (label, label_spec, where_sql, split) run stored in tn_corr_ratio, one
    group per (split, where_sql)."""
    return _cached(store, "tn_corr_ratio", _summaries)


def _summaries(store: "Store") -> list[Group]:
    import polars as pl

    from tnstore.queries import with_params

    runs = store.query("SELECT DISTINCT label, label_spec, where_sql, split FROM tn_corr_ratio "
                       "WHERE set_id IS NOT NULL").to_pylist()
    parts = []
    for run in runs:
        summary = store.query(with_params("tn_summary", **run))
        parts.append(pl.from_arrow(summary).with_columns(
            pl.lit(run["label"]).alias("label"), pl.lit(run["label_spec"], dtype=pl.String).alias("label_spec"),
            pl.lit(run["where_sql"]).alias("where_sql"), pl.lit(run["split"]).alias("split")))
    if not parts:
        return []
    return _groups(pl.concat(parts, how="diagonal_relaxed"), ("split", "where_sql"))


def _read_lang_neurons(store: "Store") -> list[Group]:
    """queries/lang_neurons.sql (counts above 0.1 / 0.25 / 0.5) for every (where_sql, split) stored."""
    import polars as pl

    from tnstore.queries import with_params

    out = []
    for run in store.query("SELECT DISTINCT where_sql, split FROM lang_neurons ORDER BY split, where_sql").to_pylist():
        counts = store.query(with_params("lang_neurons", **run, thresholds=list(LANG_NEURON_THRESHOLDS)))
        df = pl.from_arrow(counts).with_columns(pl.lit(run["split"]).alias("split"))
        out.append(Group(df, (run["split"], run["where_sql"]), f"split {run['split']}, where_sql {run['where_sql']}"))
    return out


def _read_crossling(store: "Store") -> list[Group]:
    df = _stored_or_empty(store, "crossling_deactivation")
    if df.is_empty():
        return []
    ends = {}
    if _has_rows(store, "transfer_neurons"):
        ends = dict(_frame(store, "transfer_neurons", ["set_id", "layer_end"]).unique().iter_rows())
    return [Group(crossling_defaults(df, ends))]


def crossling_defaults(df: "pl.DataFrame", layer_ends: dict[str, int]) -> "pl.DataFrame":
    """Mark (`_default`) the rows App. I reports where the table holds more layers (--all-layers): each set's
    last candidate layer, hidden index = the set's layer_end (Type-1: the last Type-1 layer; Type-2: the final
    layer); for a set not in transfer_neurons, the type's last hidden index. A type stored at one layer keeps it."""
    import polars as pl

    end = pl.col("set_id").replace_strict(layer_ends, default=None, return_dtype=pl.Int64)
    several = pl.col("hidden_index").n_unique().over("type") > 1
    last = pl.col("hidden_index") == pl.col("hidden_index").max().over("type")
    chosen = pl.when(end.is_not_null()).then(pl.col("hidden_index") == end).otherwise(last)
    return df.with_columns((~several | chosen).alias("_default"))


def _read_eval(table: str) -> Callable[["Store"], list[Group]]:
    """One group per evaluation run's settings (eval_id: model, data, positions, templates, ...)."""
    return lambda store: _groups(_stored_or_empty(store, table), ("eval_id", "split"))


def _stored_or_empty(store: "Store", table: str) -> "pl.DataFrame":
    import polars as pl

    return _frame(store, table) if _known(table) else pl.DataFrame()


def _known(table: str) -> bool:
    from tnstore.store.schema import table_names

    return table in table_names()


def _has_rows(store: "Store", table: str) -> bool:
    return _known(table) and table_rows(store, table) > 0


def table_rows(store: "Store", table: str) -> int:
    """Rows of a store table (from its Parquet footers), 0 for a table this store format does not have."""
    if not _known(table):
        return 0
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in store.part_files(table))


# ================================================================================================ the types
def _types() -> list[FigureType]:
    from tnstore.figures import evaluation, latent, neurons

    return [
        FigureType("pca", "PC1/PC2 scatter per layer, coloured by language", "Fig. 2, 16, 17, 28, 29", "latent",
                   ("latent_pca",), latent.pca, _latent("latent_pca"), layers="hidden"),
        FigureType("dims", "dimensions reaching 90/95/99% of Σσ² per layer and language", "Fig. 3, 13", "latent",
                   ("latent_dims",), latent.dims, _latent("latent_dims", ("split", "selection", "centered")),
                   layers="hidden"),
        FigureType("centroids", "cosine of language centroids, a heatmap per layer", "Fig. 14, 15, 26, 27, 30, 31",
                   "latent", ("latent_centroid_cos",), latent.centroids, _latent("latent_centroid_cos"),
                   layers="hidden"),
        FigureType("knn", "mutual k-NN alignment of en and L2 per layer", "Fig. 4, 18, 19", "latent",
                   ("latent_knn",), latent.knn, _latent("latent_knn"), layers="hidden"),
        FigureType("similarity", "parallel vs non-parallel cos(en, L2) of hidden states, ±1 std",
                   "Fig. 5, 10, 20–25", "latent", ("latent_pair_similarity",), latent.similarity,
                   _latent("latent_pair_similarity"), layers="hidden", options={"array_name": "hidden"}),
        FigureType("similarity-act", "parallel vs non-parallel cos(en, L2) of MLP activations, ±1 std", "Fig. 11",
                   "latent", ("latent_pair_similarity",), latent.similarity, _latent("latent_pair_similarity"),
                   layers="hidden", options={"array_name": "mlp_act"}),
        FigureType("probe", "probe accuracy telling parallel from non-parallel pairs", "Fig. 12", "latent",
                   ("latent_probe",), latent.probe, _latent("latent_probe"), layers="hidden"),
        FigureType("trajectory", "trajectory linearity of the centroid", "Fig. 9", "latent",
                   ("latent_trajectory",), latent.trajectory, _latent("latent_trajectory"), layers="hidden"),
        FigureType("tn-layers", "where the top-n transfer neurons sit, per language", "Fig. 6, 32, 33", "neurons",
                   ("transfer_neurons",), neurons.tn_layers, _read_tn, layers="layer", types=True),
        FigureType("jaccard", "Jaccard overlap of language pairs' sets per layer", "Fig. 8, 34, 35", "neurons",
                   ("tn_jaccard",), neurons.jaccard_layers, _read_jaccard, layers="layer", types=True),
        FigureType("jaccard-matrix", "Jaccard overlap of the whole sets, language x language", "Tab. 2, 7–9",
                   "neurons", ("tn_jaccard",), neurons.jaccard_matrix, _read_jaccard, types=True),
        FigureType("tn-eta2", "mean η² of the top 10/100/1000 TNs against the label", "Tab. 1, 4–6, 10–12",
                   "neurons", ("tn_corr_ratio",), neurons.tn_eta2, read_summary, types=True),
        FigureType("tn-significance", "share of significant TNs (ANOVA p < 0.05, η² > 0.1 / 0.25)",
                   "Fig. 39, Tab. 13–20", "neurons", ("tn_corr_ratio",), neurons.tn_significance, read_summary,
                   types=True),
        FigureType("lang-neurons", "language-specific neurons per layer and η² threshold", "Fig. 36–38", "neurons",
                   ("lang_neurons",), neurons.lang_neurons, _read_lang_neurons, layers="layer"),
        FigureType("crossling", "cross-lingual deactivation, L1 set x L2 input", "App. I, Tab. 21–23",
                   "deactivation", ("crossling_deactivation",), _crossling, _read_crossling, layers="hidden",
                   types=True),
        FigureType("qa-scatter", "MKQA F1 per question, plain vs deactivated", "Fig. 7, 40–42", "evaluation",
                   ("eval_qa",), evaluation.qa_scatter, _read_eval("eval_qa")),
        FigureType("qa-change", "mean MKQA F1 change per condition (plain F1 > 0.5 / 0.8)", "Tab. 3, 24–28",
                   "evaluation", ("eval_qa",), evaluation.qa_change, _read_eval("eval_qa")),
        FigureType("mc-accuracy", "multiple-choice accuracy per condition", "Tab. 29–37", "evaluation",
                   ("eval_mc_summary",), evaluation.mc_accuracy, _read_eval("eval_mc_summary")),
        FigureType("gen-language", "share of open-ended outputs in the prompt's language", "Tab. 38–41",
                   "evaluation", ("eval_gen_metrics",), evaluation.gen_language, _read_eval("eval_gen_metrics")),
    ]


def _crossling(data: "pl.DataFrame", meta: Meta = Meta(), layers: Sequence[int] | None = None,
               types: Sequence[int] | None = None) -> "Figure":
    """The App. I matrix at the default layer of each type, unless --layers picks the hidden indices."""
    import polars as pl

    from tnstore.figures import deactivation

    if layers is None and "_default" in data.columns:
        data = data.filter(pl.col("_default"))
    return deactivation.crossling(data.drop([c for c in ("_default",) if c in data.columns]), meta,
                                  layers=layers, types=types)


_TYPES: list[FigureType] | None = None


def figure_types() -> list[FigureType]:
    """Every figure type, in the report's order."""
    global _TYPES
    if _TYPES is None:
        _TYPES = _types()
    return _TYPES


def figure_type(name: str) -> FigureType:
    for kind in figure_types():
        if kind.name == name:
            return kind
    raise TnstoreError(f"no figure named {name!r}; figures: {', '.join(k.name for k in figure_types())} (or all)")


# ================================================================================================ drawing
def check_ready(store: "Store", kind: FigureType) -> None:
    """Raise MissingTable for the first of the figure's tables that is missing or empty."""
    for table in kind.tables:
        if not _has_rows(store, table):
            raise MissingTable(kind.name, table, kind.command(str(store.path), table), _known(table))


def draw(store: "Store", name: str, layers: Sequence[int] | None = None,
         types: Sequence[int] | None = None) -> list[Drawn]:
    """Every figure of type `name` the store's tables make (one per analysis group), not yet saved.

    layers: hidden indices (latent figures) or 0-based decoder layers (neuron figures) to draw; types: the
    transfer-neuron types (1, 2) to draw. Raises MissingTable when a table is missing or empty."""
    from tnstore.figures import style

    kind = figure_type(name)
    if types is not None and not kind.types:
        raise ArgumentError("types", f"{{arg}}: figure {name} has no transfer-neuron types")
    if layers is not None and kind.layers is None:
        raise ArgumentError("layers", f"{{arg}}: figure {name} has no layer axis")
    check_ready(store, kind)
    groups = [g for g in kind.read(store) if _rows(g.data)]
    if not groups:
        raise MissingTable(kind.name, kind.tables[0], kind.command(str(store.path)), True)
    meta = Meta(str(store.model_facts.get("model_spec", "?")))
    options = dict(kind.options)
    if kind.layers is not None:
        options["layers"] = None if layers is None else list(layers)
    if kind.types:
        options["types"] = None if types is None else list(types)
    stems = _stems(kind.name, groups)
    out = []
    with style.context():
        for group, stem in zip(groups, stems):
            out.append(Drawn(kind.name, stem, kind.draw(group.data, meta, **options), group.label))
    return out


def _rows(data: Any) -> int:
    return data.num_rows if isinstance(data, pa.Table) else data.height


def _stems(name: str, groups: list[Group]) -> list[str]:
    """File stems: the figure's name, and where it has several groups, their split and a short hash of the rest."""
    if len(groups) == 1:
        return [name]
    stems = []
    for group in groups:
        split = next((str(v) for v in group.key if isinstance(v, str) and v in ("train", "test", "all")), None)
        digest = hashlib.sha256(repr(group.key).encode()).hexdigest()[:6]
        stems.append(f"{name}-{split}-{digest}" if split else f"{name}-{digest}")
    return stems


def status(store: "Store") -> pa.Table:
    """One row per figure type: name, what it shows, paper figures, tables, ready (bool), and for a figure that
    is not ready the command that makes its missing table."""
    rows = []
    counts: dict[str, int] = {}
    for kind in figure_types():
        missing = None
        for table in kind.tables:
            if table not in counts:
                counts[table] = table_rows(store, table)
            if counts[table] == 0 and missing is None:
                missing = table
        rows.append({"figure": kind.name, "ready": missing is None, "shows": kind.what, "paper": kind.paper,
                     "tables": ", ".join(kind.tables),
                     "rows": sum(counts[t] for t in kind.tables),
                     "make_it_with": "" if missing is None else kind.command(str(store.path), missing)})
    return pa.Table.from_pylist(rows)

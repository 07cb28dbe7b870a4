"""Latent-space analyses (method §3, App. B, C, E): read last-token states, call tnstore.kernels.latent, write tables.

Layers. `hidden_index` is the index into the stored `hidden` array: 0 = embedding output, l = output of decoder
layer l (1-based, the paper's "layer l"; HF applies the final norm to index L). Activation rows (mlp_act) use the
hidden_index of the layer whose MLP produced them: hidden_index l <-> mlp_act[:, l - 1], so hidden and α rows of
one layer join on hidden_index. (The detection tables' `layer` is the 0-based decoder layer = hidden_index - 1.)

Sentences: the selection contract of tnstore.store.selection. `where` (a SQL predicate over `sentences`)
replaces the default and is stored verbatim in `where_sql`; `split` ("all" for any) is added to it.
Language-group analyses (pca, dims, centroids, trajectory) default to `kind = 'parallel' AND ablation IS NULL`;
pair analyses (knn, similarity, probe) default to `ablation IS NULL` and take kind='parallel' / kind='nonparallel'
pairs from it. A sentence captured twice counts once. A replay capture (sentences.ablation) is another measurement
of a sentence, never another sentence: group analyses refuse a language whose selected rows mix ablations, pair
analyses refuse a pair side that does. To compare with neurons deactivated on the L2 side only (method §5),
select e.g. `lang = 'en' AND ablation IS NULL OR lang = 'ja' AND ablation = 'SET'`, or let `conditions`
do it.

Conditions (tnstore.analysis.conditions). `conditions=["none", "SET", ...]` runs the analysis once per condition
(`none`: plain captures; a set name: the non-English sentences replayed with that set deactivated, English from
the plain capture) and writes one table whose `condition` column holds `none` or the set name as given; the
summary puts the conditions side by side with each one's difference to `none` per layer. A condition's rows equal
what the `where` route gives. Without `conditions`, `condition` names the ablations the selection holds
(`none` for plain captures only).

Tables. Each analysis writes one part of its table, named by `analysis_id` = `<table>-<hash of the settings that
define the result>` (where_sql, split, condition and e.g. lang). A run computes some layers (`layers`) and replaces
exactly the rows of those layers (and of the k / thresholds it computed) in that part, keeping the others (the
schema's `merge_on`), so every (settings, layer) has one current result.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from tnstore.analysis import conditions as C
from tnstore.compute.cluster import SchedulerLike, check_scheduler
from tnstore.errors import ArgumentError, TnstoreError
from tnstore.kernels import latent as K
from tnstore.kernels.centroids import group_means_on
from tnstore.store import selection as S
from tnstore.store.schema import conform
from tnstore.store.selection import Pairs, Scope
from tnstore.store.frames import to_polars
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl

__all__ = ["pca", "dims", "centroids", "knn", "similarity", "probe", "trajectory", "LatentResult",
           "DEFAULT_WHERE", "PAIR_WHERE", "DEFAULT_TIE_SEED"]

DEFAULT_WHERE = S.PLAIN_PARALLEL
PAIR_WHERE = S.PLAIN
ALL_SPLITS = S.ALL_SPLITS
ENGLISH = "en"
DEFAULT_THRESHOLDS = (0.9, 0.95, 0.99)
DEFAULT_KS = (5, 10)
PROBE_MAX_ITER = 300
DEFAULT_TIE_SEED = 0
DELTA = "Δ "  # prefix of a summary column holding a condition's difference to none


@dataclass(frozen=True)
class LatentResult:
    """What an analysis wrote (`table`: this run's rows) and the per-layer summary printed for people, as Polars
    (`table_arrow`, `summary_arrow`: the same as Arrow)."""

    table_name: str
    analysis_ids: list[str]
    table_arrow: pa.Table
    summary_arrow: pa.Table
    notes: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)  # the condition of each run, in order

    @property
    def table(self) -> "pl.DataFrame":
        return to_polars(self.table_arrow)

    @property
    def summary(self) -> "pl.DataFrame":
        return to_polars(self.summary_arrow)


# ================================================================================================ selection
@dataclass(frozen=True)
class Groups:
    """Selected sentences grouped by language: rows (N,) ascending; langs (N,) the language of each row."""

    rows: np.ndarray
    langs: np.ndarray

    def names(self) -> list[str]:
        return sorted(set(self.langs.tolist()))

    def positions(self, lang: str) -> np.ndarray:
        return np.flatnonzero(self.langs == lang)


def select_groups(store: Store, scope: Scope) -> tuple[Groups, S.Selection]:
    """The sentences of a language-group analysis, one row per captured sentence, one ablation per language."""
    sel = S.select(store, scope)
    S.check_one_condition(sel)
    return Groups(sel.rows, sel.lang.astype(object)), sel


def pair_languages(sel: S.Selection, lang: str | None, kinds: Sequence[str]) -> tuple[list[str], list[str]]:
    """The L2s to analyse: `lang`, or every non-English language with pairs of all `kinds`; plus skipped notes."""
    if lang is not None:
        if lang == ENGLISH:
            raise ArgumentError("lang", "{arg} en: the pairs are en-L2; choose the L2, e.g. ja")
        return [lang], []
    chosen, skipped = [], []
    for candidate in sorted(set(sel.lang.tolist()) - {ENGLISH}):
        missing = [k for k in kinds if len(S.pairs(sel, candidate, k)) == 0]
        if missing:
            skipped.append(f"{candidate} (no {' / '.join(missing)} en-{candidate} pairs)")
        else:
            chosen.append(candidate)
    if not chosen:
        need = " and ".join(kinds)
        raise TnstoreError(f"{sel.scope.describe()} selects no language with {need} en-L2 pairs; capture an en-L2 "
                           "corpus (kind nonparallel for non-parallel pairs) or loosen where")
    return chosen, skipped


def _require_pairs(sel: S.Selection, lang: str, kind: str, minimum: int, why: str) -> Pairs:
    found = S.pairs(sel, lang, kind)
    if len(found) < minimum:
        hint = " (capture one with kind nonparallel)" if kind == "nonparallel" else ""
        raise ArgumentError("lang", f"{{arg}} {lang}: {sel.scope.describe()} selects {len(found)} {kind} en-{lang} "
                                    f"pairs{hint}; {why} needs at least {minimum}")
    return found


# ================================================================================================ options
def hidden_indices(layers: "Sequence[int] | range | None", n_hidden: int) -> list[int]:
    """Hidden indices to compute: None = all 0..L; else the given indices (a range or a list), checked."""
    if layers is None:
        return list(range(n_hidden))
    if isinstance(layers, (int, np.integer)):
        layers = [int(layers)]
    try:
        picked = sorted({int(v) for v in layers})
    except (TypeError, ValueError):
        raise ArgumentError("layers", f"{{arg}} {layers!r} must be a range or a list of hidden indices") from None
    bad = [v for v in picked if not 0 <= v < n_hidden]
    if not picked or bad:
        what = f"hidden index {bad[0]} does not exist" if bad else "no hidden index given"
        raise ArgumentError("layers", f"{{arg}} {list(layers)}: {what} (0..{n_hidden - 1}: 0 = embeddings, "
                                      f"1..{n_hidden - 1} = layer outputs)")
    return picked


def check_thresholds(thresholds: Sequence[float]) -> list[float]:
    values = sorted({float(t) for t in thresholds})
    if not values or not all(0.0 < t <= 1.0 for t in values):
        raise ArgumentError("thresholds", f"{{arg}} {list(thresholds)}: every threshold must be in (0, 1]")
    return values


def check_ks(ks: Sequence[int]) -> list[int]:
    values = sorted({int(k) for k in ks})
    if not values or values[0] < 1:
        raise ArgumentError("k", f"{{arg}} {list(ks)}: every k must be at least 1")
    return values


def default_middle(n_layers: int) -> int:
    """The paper's middle layer (10 of 32) scaled to the depth, rounded half up, at least 2 (T^2 is the first step)."""
    return min(n_layers, max(2, (n_layers * 10 + 16) // 32))


# ================================================================================================ state reading
def states(store: Store, array: str, rows: np.ndarray, hidden_index: int) -> np.ndarray:
    """(len(rows), width) float32 states of `rows`: hidden[:, hidden_index], or mlp_act of that layer's MLP."""
    if array == "hidden":
        return store.read_rows("hidden", rows, hidden_index)
    if hidden_index < 1:
        raise ValueError("the embeddings (hidden index 0) have no MLP activations")
    return store.read_rows("mlp_act", rows, hidden_index - 1)


def pair_states(store: Store, array: str, pairs: Pairs, hidden_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(en states, L2 states), each (n_pairs, width), read in one pass (the two sides share chunks)."""
    both = states(store, array, np.concatenate([pairs.en_rows, pairs.l2_rows]), hidden_index)
    return both[: len(pairs)], both[len(pairs):]


# ================================================================================================ writing
def analysis_id(table: str, **settings: object) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return f"{table}-{digest[:12]}"


def _columns(n_rows: int, analysis: str, scope: Scope, condition: str, /, **values: object) -> dict:
    """Leading columns every latent table shares, then the given ones (scalars are repeated n_rows times)."""
    out: dict = {"analysis_id": [analysis] * n_rows, "where_sql": [scope.where] * n_rows,
                 "split": [scope.split] * n_rows, "condition": [condition] * n_rows}
    for name, value in values.items():
        out[name] = value if isinstance(value, (np.ndarray, list, pa.Array)) else [value] * n_rows
    return out


def write_parts(store: Store, table: str, parts: dict[str, pa.Table], wait_seconds: float) -> None:
    """Write each analysis's rows; the schema's merge_on keeps the stored layers this run did not compute."""
    with store.writing(f"latent {table}", wait_seconds):
        for new in parts.values():
            store.write_rows(table, new)


def _table(table: str, columns: dict) -> pa.Table:
    return conform(table, pa.table(columns))


def _records_table(table: str, aid: str, scope: Scope, condition: str, records: list[dict],
                   **fixed: object) -> pa.Table:
    """Rows of `table`: the shared leading columns, `fixed` values on every row, then the records' columns."""
    columns = {name: [r[name] for r in records] for name in records[0]}
    return _table(table, _columns(len(records), aid, scope, condition, **fixed, **columns))


def _pivot(rows: list[dict], index: str, column: str, value: str) -> pa.Table:
    """A compact wide table: one row per `index` value, one column per `column` value."""
    keys = sorted({r[index] for r in rows})
    names = list(dict.fromkeys(r[column] for r in rows))
    cells = {(r[index], r[column]): r[value] for r in rows}
    out = {index: keys}
    for name in names:
        out[name] = [cells.get((k, name)) for k in keys]
    return pa.table(out)


# ================================================================================================ conditions
@dataclass
class _Run:
    """One condition's result: its rows per analysis_id, the summary's numbers in long form (`shown`: hidden_index,
    col, v), the summary of a single run, and its notes (group counts first)."""

    condition: str
    parts: dict[str, pa.Table]
    shown: list[dict]
    summary: pa.Table
    notes: list[str]


def _open(store: "str | Path | Store", where: str | None, split: str, default: str,
          layers: "Sequence[int] | range | None", conditions: "Sequence[str] | None", positions: str | None,
          kinds: Sequence[str] = ("parallel",), lang: str | None = None,
          ) -> tuple[Store, list[tuple[str | None, Scope]], list[int]]:
    """The store, the (condition, sentences) of each run and the hidden indices of one analysis call. Without
    conditions there is one run whose condition is read off its selection (None here)."""
    store = open_store(store)
    indices = hidden_indices(layers, int(store.model_facts["n_layers"]) + 1)
    if conditions is None:
        if positions is not None:
            raise ArgumentError("positions", "{arg} picks which replays a condition reads; give {arg:conditions} too")
        return store, [(None, S.make_scope(where, split, default))], indices
    resolved = C.resolve(store, conditions, where, split, default, positions, kinds, lang)
    return store, [(c.name, c.scope) for c in resolved], indices


def _collect(store: Store, table: str, runs: list[_Run], conditioned: bool, wait_seconds: float) -> LatentResult:
    """Write every run's rows in one writer session; the summary is the single run's, or the conditions side by
    side with their differences to `none`."""
    parts = {aid: rows for run in runs for aid, rows in run.parts.items()}
    write_parts(store, table, parts, wait_seconds)
    rows = pa.concat_tables(parts.values())
    if not conditioned:
        run = runs[0]
        return LatentResult(table, list(parts), rows, run.summary, run.notes, [run.condition])
    summary, extra = side_by_side([(run.condition, run.shown) for run in runs])
    shared = [note for note in runs[0].notes if all(note in run.notes for run in runs)]
    notes = [f"[{run.condition}] {note}" for run in runs for note in run.notes if note not in shared]
    notes = [note for note in runs[0].notes if note in shared] + notes
    return LatentResult(table, list(parts), rows, summary, notes + extra, [run.condition for run in runs])


def side_by_side(runs: list[tuple[str, list[dict]]]) -> tuple[pa.Table, list[str]]:
    """One row per (measure, hidden_index), one column per condition, and `Δ <condition>` = its value minus
    `none`'s (when `none` is among them). runs: (condition, [{hidden_index, col, v}]) in the order given."""
    names = [name for name, _ in runs]
    cells: dict[tuple[str, int, str], object] = {}
    measures: dict[str, None] = {}
    for name, shown in runs:
        for r in shown:
            measures.setdefault(r["col"], None)
            cells[(r["col"], r["hidden_index"], name)] = r["v"]
    indices = sorted({index for _, index, _ in cells})
    deltas = [n for n in names if n != C.PLAIN] if C.PLAIN in names else []
    out: dict[str, list] = {"measure": [], "hidden_index": []}
    out.update({name: [] for name in names})
    out.update({DELTA + name: [] for name in deltas})
    for measure in measures:
        for index in indices:
            values = [cells.get((measure, index, name)) for name in names]
            if all(v is None for v in values):
                continue
            out["measure"].append(measure)
            out["hidden_index"].append(index)
            for name, value in zip(names, values):
                out[name].append(value)
            base = cells.get((measure, index, C.PLAIN))
            for name in deltas:
                value = cells.get((measure, index, name))
                out[DELTA + name].append(None if value is None or base is None else value - base)
    notes = [] if deltas else ["no Δ columns: add none to the conditions for each one's difference to plain"]
    return pa.table(out), notes


# ================================================================================================ analyses
def pca(store: "str | Path | Store", where: str | None = None, split: str = "train",
        layers: "Sequence[int] | range | None" = None, conditions: "Sequence[str] | None" = None,
        positions: str | None = None, wait_seconds: float = 0.0) -> LatentResult:
    """§3.1: per hidden index, PCA of all selected states together (centred on their joint mean); writes PC1/PC2
    per sentence to latent_pca. layers: hidden indices (default all 0..L); where None = DEFAULT_WHERE;
    conditions: e.g. ["none", "SET"] (one PCA per condition); positions: which replays a set condition reads
    when it was replayed at both."""
    store, runs, indices = _open(store, where, split, DEFAULT_WHERE, layers, conditions, positions)
    return _collect(store, "latent_pca", [_pca(store, scope, name, indices) for name, scope in runs],
                    conditions is not None, wait_seconds)


def _pca(store: Store, scope: Scope, condition: str | None, indices: list[int]) -> _Run:
    groups, sel = select_groups(store, scope)
    condition = condition or C.derived(sel)
    if len(groups.rows) < 3:
        raise TnstoreError(f"{scope.describe()} selects {len(groups.rows)} sentences; PCA needs at least 3")
    aid = analysis_id("latent_pca", where=scope.where, split=scope.split, condition=condition)
    blocks, summary, shown = [], [], []
    for index in indices:
        try:
            coords, ratio = K.pca_project(states(store, "hidden", groups.rows, index))
        except ValueError as exc:
            raise TnstoreError(f"PCA of hidden index {index} ({scope.describe()}): {exc}") from None
        n = len(groups.rows)
        blocks.append(_table("latent_pca", _columns(
            n, aid, scope, condition, hidden_index=index, n=n, evr1=float(ratio[0]), evr2=float(ratio[1]),
            row=groups.rows, lang=groups.langs.tolist(), pc1=coords[:, 0], pc2=coords[:, 1])))
        row = {"hidden_index": index, "n": n, "evr1": float(ratio[0]), "evr2": float(ratio[1]),
               **_language_spread(coords, groups)}
        summary.append(row)
        shown += [{"hidden_index": index, "col": col, "v": row[col]} for col in ("evr1", "evr2", "spread")]
    counts = ", ".join(f"{lang} {len(groups.positions(lang))}" for lang in groups.names())
    return _Run(condition, {aid: pa.concat_tables(blocks)}, shown, pa.Table.from_pylist(summary),
                [f"sentences: {counts}", "spread = mean distance of the language means from their joint mean in the "
                 "PC1/PC2 plane, over the rms distance of the sentences (0: languages overlap)"])


def _language_spread(coords: np.ndarray, groups: Groups) -> dict:
    """How far apart the languages sit in the PC plane, scale-free (for the summary only)."""
    means = np.stack([coords[groups.positions(lang)].mean(axis=0) for lang in groups.names()])
    rms = np.sqrt(np.mean(np.sum((coords - coords.mean(axis=0)) ** 2, axis=1)))
    return {"spread": float(np.linalg.norm(means - means.mean(axis=0), axis=1).mean() / rms) if rms else 0.0}


def dims(store: "str | Path | Store", thresholds: Sequence[float] = DEFAULT_THRESHOLDS, where: str | None = None,
         split: str = "train", layers: "Sequence[int] | range | None" = None, center: bool = False,
         conditions: "Sequence[str] | None" = None, positions: str | None = None,
         wait_seconds: float = 0.0) -> LatentResult:
    """§3.2: per hidden index and language, k = the number of singular values of the n x d matrix of that
    language's states whose cumulative σ² share reaches each threshold (raw matrix unless `center`)."""
    thresholds = check_thresholds(thresholds)
    store, runs, indices = _open(store, where, split, DEFAULT_WHERE, layers, conditions, positions)
    return _collect(store, "latent_dims", [_dims(store, scope, name, indices, thresholds, center)
                                           for name, scope in runs], conditions is not None, wait_seconds)


def _dims(store: Store, scope: Scope, condition: str | None, indices: list[int], thresholds: list[float],
          center: bool) -> _Run:
    groups, sel = select_groups(store, scope)
    condition = condition or C.derived(sel)
    aid = analysis_id("latent_dims", where=scope.where, split=scope.split, condition=condition, centered=center)
    langs, d = groups.names(), int(store.model_facts["d_model"])
    records = []
    for index in indices:
        x = states(store, "hidden", groups.rows, index)
        for lang in langs:
            own = x[groups.positions(lang)]
            ks = K.dims_at_thresholds(K.squared_singular_values(own, center=center), thresholds)
            records += [{"lang": lang, "hidden_index": index, "n": len(own), "d": d, "threshold": t, "k": int(k)}
                        for t, k in zip(thresholds, ks)]
    table = _records_table("latent_dims", aid, scope, condition, records, centered=center)
    joined: dict[tuple[int, str], list[str]] = {}
    for r in records:  # thresholds ascending within each (layer, language)
        joined.setdefault((r["hidden_index"], r["lang"]), []).append(str(r["k"]))
    summary = _pivot([{"hidden_index": i, "lang": lang, "k": "/".join(v)} for (i, lang), v in joined.items()],
                     "hidden_index", "lang", "k")
    shown = [{"hidden_index": r["hidden_index"], "col": f"{r['lang']} k@{r['threshold']:g}", "v": r["k"]}
             for r in records]
    counts = ", ".join(f"{lang} {len(groups.positions(lang))}" for lang in langs)
    what = "centred on the language mean" if center else "raw states, not centred (as the paper)"
    return _Run(condition, {aid: table}, shown, summary,
                [f"sentences: {counts}; {what}; d = {d}",
                 f"cells: k at thresholds {'/'.join(f'{t:g}' for t in thresholds)}"])


def centroids(store: "str | Path | Store", where: str | None = None, split: str = "train",
              layers: "Sequence[int] | range | None" = None, conditions: "Sequence[str] | None" = None,
              positions: str | None = None, wait_seconds: float = 0.0, scheduler: SchedulerLike = None) -> LatentResult:
    """§3.3: per hidden index, cosine similarity of every pair of language centroids C_L = mean of its states.

    scheduler: read the states and sum them per language as chunk tasks on a dask.distributed cluster
    (tnstore.compute.cluster); None: here."""
    scheduler = check_scheduler(scheduler)
    store, runs, indices = _open(store, where, split, DEFAULT_WHERE, layers, conditions, positions)
    return _collect(store, "latent_centroid_cos", [_centroids(store, scope, name, indices, scheduler)
                                                   for name, scope in runs], conditions is not None, wait_seconds)


def _centroids(store: Store, scope: Scope, condition: str | None, indices: list[int],
               scheduler: SchedulerLike = None) -> _Run:
    groups, sel = select_groups(store, scope)
    condition = condition or C.derived(sel)
    langs = groups.names()
    if len(langs) < 2:
        raise TnstoreError(f"{scope.describe()} selects only {langs[0]} sentences; centroid similarities need "
                           "two or more languages")
    aid = analysis_id("latent_centroid_cos", where=scope.where, split=scope.split, condition=condition)
    counts = {lang: len(groups.positions(lang)) for lang in langs}
    records = []
    if scheduler is not None:
        code_of = {lang: i for i, lang in enumerate(langs)}
        codes = np.array([code_of[lang] for lang in groups.langs], dtype=np.int64)
        means_on = group_means_on(scheduler, store, "hidden", groups.rows, codes, len(langs), indices)
    for n, index in enumerate(indices):
        if scheduler is None:
            x = states(store, "hidden", groups.rows, index).astype(np.float64)
            means = np.stack([x[groups.positions(lang)].mean(axis=0) for lang in langs])
        cos = K.cosine_matrix(means if scheduler is None else means_on[n])
        records += [{"hidden_index": index, "lang_a": a, "lang_b": b, "n_a": counts[a], "n_b": counts[b],
                     "cosine": float(cos[i, j])} for i, a in enumerate(langs) for j, b in enumerate(langs)]
    table = _records_table("latent_centroid_cos", aid, scope, condition, records)
    ref = ENGLISH if ENGLISH in langs else langs[0]
    shown = [{"hidden_index": r["hidden_index"], "col": f"{ref}~{r['lang_b']}", "v": r["cosine"]}
             for r in records if r["lang_a"] == ref and r["lang_b"] != ref]
    return _Run(condition, {aid: table}, shown, _pivot(shown, "hidden_index", "col", "v"),
                [f"sentences: {', '.join(f'{k} {v}' for k, v in counts.items())}; "
                 f"cosine of the {ref} centroid with each other language's (full matrix in the table)"])


def knn(store: "str | Path | Store", k: Sequence[int] = DEFAULT_KS, lang: str | None = None,
        where: str | None = None, split: str = "train", layers: "Sequence[int] | range | None" = None,
        conditions: "Sequence[str] | None" = None, positions: str | None = None, tie_seed: int = DEFAULT_TIE_SEED,
        wait_seconds: float = 0.0) -> LatentResult:
    """§3.4 / App. E: mutual k-NN alignment of en and L2 states of parallel pairs, per hidden index, for each
    neighbourhood size in `k`; lang None = every L2 with parallel pairs. Equal similarities (identical states)
    are ordered at random, seeded by `tie_seed` and drawn separately per side, so they carry no alignment; the
    notes say where states are identical."""
    ks = check_ks(k)
    if not isinstance(tie_seed, (int, np.integer)) or isinstance(tie_seed, bool) or tie_seed < 0:
        raise ArgumentError("tie_seed", f"{{arg}} {tie_seed!r}: use a seed >= 0")
    store, runs, indices = _open(store, where, split, PAIR_WHERE, layers, conditions, positions, ("parallel",), lang)
    return _collect(store, "latent_knn", [_knn(store, scope, name, indices, ks, lang, int(tie_seed))
                                          for name, scope in runs], conditions is not None, wait_seconds)


def _knn(store: Store, scope: Scope, condition: str | None, indices: list[int], ks: list[int], lang: str | None,
         tie_seed: int) -> _Run:
    sel = S.select(store, scope)
    condition = condition or C.derived(sel)
    langs, skipped = pair_languages(sel, lang, ["parallel"])
    selected = {}
    for l2 in langs:
        pairs = _require_pairs(sel, l2, "parallel", 2, "mutual k-NN")
        if ks[-1] > len(pairs) - 1:
            raise ArgumentError("k", f"{{arg}} {ks[-1]}: en-{l2} has {len(pairs)} parallel pairs "
                                     f"({scope.describe()}), so a sentence has {len(pairs) - 1} neighbours; "
                                     f"choose k <= {len(pairs) - 1}")
        selected[l2] = pairs
    parts, shown, duplicates, identical = {}, [], [], []
    for l2, pairs in selected.items():
        aid = analysis_id("latent_knn", where=scope.where, split=scope.split, condition=condition, lang=l2,
                          tie_seed=tie_seed)
        records = []
        for index in indices:
            en, other = pair_states(store, "hidden", pairs, index)
            n_en, n_l2 = K.n_duplicates(en), K.n_duplicates(other)
            same = int(np.all(en == other, axis=1).sum())
            scores = K.mutual_knn(en, other, ks, tie_seed)
            records += [{"hidden_index": index, "k": k, "score": float(s), "n_duplicate_en": n_en,
                         "n_duplicate_l2": n_l2, "n_identical_pairs": same} for k, s in zip(ks, scores)]
            if n_en or n_l2:
                duplicates.append(f"en-{l2} hidden index {index}: en {n_en}, {l2} {n_l2}")
            if same:
                identical.append(f"en-{l2} hidden index {index}: {same} of {len(pairs)}")
        parts[aid] = _records_table("latent_knn", aid, scope, condition, records, lang=l2, n_pairs=len(pairs),
                                    tie_seed=tie_seed)
        shown += [{"hidden_index": r["hidden_index"], "col": f"{l2} k={r['k']}", "v": r["score"]} for r in records]
    notes = [f"parallel pairs: {', '.join(f'en-{l2} {len(p)}' for l2, p in selected.items())}; neighbours by "
             "cosine similarity among the other sentences of the same language"]
    if duplicates:
        notes.append(f"states identical to another of the same side ({'; '.join(duplicates)}): equal similarities "
                     f"are ordered at random (tie_seed {tie_seed}, drawn separately per side), so identical states "
                     "count no more than chance")
    if identical:
        notes.append(f"pairs whose two sides are the same state, e.g. the same last token at the embeddings "
                     f"({'; '.join(identical)}): their neighbourhoods coincide wherever other pairs share states too, "
                     "so the score there measures shared tokens more than alignment")
    notes += [f"skipped {s}" for s in skipped]
    return _Run(condition, parts, shown, _pivot(shown, "hidden_index", "col", "v"), notes)


def similarity(store: "str | Path | Store", lang: str | None = None, where: str | None = None,
               split: str = "train", layers: "Sequence[int] | range | None" = None,
               conditions: "Sequence[str] | None" = None, positions: str | None = None,
               wait_seconds: float = 0.0) -> LatentResult:
    """App. C.1: mean cosine of (en, L2) states, parallel vs non-parallel pairs, for hidden states and α."""
    store, runs, indices = _open(store, where, split, PAIR_WHERE, layers, conditions, positions,
                                 ("parallel", "nonparallel"), lang)
    return _collect(store, "latent_pair_similarity", [_similarity(store, scope, name, indices, lang)
                                                      for name, scope in runs], conditions is not None, wait_seconds)


def _similarity(store: Store, scope: Scope, condition: str | None, indices: list[int], lang: str | None) -> _Run:
    sel = S.select(store, scope)
    condition = condition or C.derived(sel)
    langs, skipped = pair_languages(sel, lang, ["parallel", "nonparallel"])
    selected = {l2: {kind: _require_pairs(sel, l2, kind, 1, "the similarity comparison")
                     for kind in ("parallel", "nonparallel")} for l2 in langs}
    parts, shown = {}, []
    for l2, by_kind in selected.items():
        aid = analysis_id("latent_pair_similarity", where=scope.where, split=scope.split, condition=condition, lang=l2)
        records = []
        for index in indices:
            for array in ("hidden", "mlp_act") if index > 0 else ("hidden",):
                for kind, pairs in by_kind.items():
                    cos = K.paired_cosine(*pair_states(store, array, pairs, index))
                    records.append({"array_name": array, "hidden_index": index, "kind": kind, "n_pairs": len(pairs),
                                    "mean_cos": float(cos.mean()), "std_cos": float(cos.std())})
                    short = {"hidden": "h", "mlp_act": "act"}[array]
                    shown.append({"hidden_index": index, "col": f"{l2} {short} {kind[:3]}", "v": float(cos.mean())})
        parts[aid] = _records_table("latent_pair_similarity", aid, scope, condition, records, lang=l2)
    counts = "; ".join(f"en-{l2} {len(p['parallel'])} parallel / {len(p['nonparallel'])} non-parallel"
                       for l2, p in selected.items())
    notes = [f"pairs: {counts}", "columns: mean cosine; h = hidden state, act = MLP activations α of that layer; "
             "par = parallel, non = non-parallel"] + [f"skipped {s}" for s in skipped]
    return _Run(condition, parts, shown, _pivot(shown, "hidden_index", "col", "v"), notes)


def probe(store: "str | Path | Store", lang: str | None = None, where: str | None = None, split: str = "train",
          layers: "Sequence[int] | range | None" = None, folds: int = 10, seed: int = 0,
          conditions: "Sequence[str] | None" = None, positions: str | None = None,
          wait_seconds: float = 0.0) -> LatentResult:
    """App. C.2: stratified k-fold accuracy of a logistic probe telling parallel from non-parallel pairs."""
    if not isinstance(folds, int) or folds < 2:
        raise ArgumentError("folds", f"{{arg}} {folds!r}: cross-validation needs at least 2 folds")
    store, runs, indices = _open(store, where, split, PAIR_WHERE, layers, conditions, positions,
                                 ("parallel", "nonparallel"), lang)
    return _collect(store, "latent_probe", [_probe(store, scope, name, indices, lang, folds, seed)
                                            for name, scope in runs], conditions is not None, wait_seconds)


def _probe(store: Store, scope: Scope, condition: str | None, indices: list[int], lang: str | None, folds: int,
           seed: int) -> _Run:
    sel = S.select(store, scope)
    condition = condition or C.derived(sel)
    langs, skipped = pair_languages(sel, lang, ["parallel", "nonparallel"])
    selected = {}
    for l2 in langs:
        by_kind = [_require_pairs(sel, l2, kind, folds, f"{{arg:folds}} {folds}")
                   for kind in ("parallel", "nonparallel")]
        selected[l2] = _balanced(*by_kind)
    parts, shown, notes = {}, [], []
    for l2, (par, non) in selected.items():
        aid = analysis_id("latent_probe", where=scope.where, split=scope.split, condition=condition, lang=l2,
                          folds=folds, seed=seed)
        labels = np.concatenate([np.ones(len(par), np.int64), np.zeros(len(non), np.int64)])
        records = []
        for index in indices:
            features = np.concatenate([np.hstack(pair_states(store, "hidden", p, index)) for p in (par, non)])
            accuracy, converged = K.probe_accuracy(features, labels, folds, seed, PROBE_MAX_ITER)
            records.append({"hidden_index": index, "accuracy": float(accuracy.mean()),
                            "accuracy_std": float(accuracy.std()), "converged": converged})
            shown.append({"hidden_index": index, "col": f"{l2} accuracy", "v": float(accuracy.mean())})
        parts[aid] = _records_table("latent_probe", aid, scope, condition, records, lang=l2, folds=folds, seed=seed,
                                    n_parallel=len(par), n_nonparallel=len(non))
        if not all(r["converged"] for r in records):
            notes.append(f"en-{l2}: some fits stopped at max_iter={PROBE_MAX_ITER} (column converged)")
    notes.insert(0, "pairs per class: " + ", ".join(f"en-{l2} {len(p)}" for l2, (p, _) in selected.items())
                 + f"; {folds}-fold stratified CV (seed {seed}); chance = 0.5")
    notes += [f"skipped {s}" for s in skipped]
    return _Run(condition, parts, shown, _pivot(shown, "hidden_index", "col", "v"), notes)


def _balanced(parallel: Pairs, nonparallel: Pairs) -> tuple[Pairs, Pairs]:
    """The first min(n_par, n_non) pairs of each kind (in store order): chance level stays 0.5."""
    n = min(len(parallel), len(nonparallel))
    cut = lambda p: Pairs(p.lang, p.kind, p.en_rows[:n], p.l2_rows[:n])  # noqa: E731
    return cut(parallel), cut(nonparallel)


def trajectory(store: "str | Path | Store", lang: str = ENGLISH, middle: int | None = None,
               where: str | None = None, split: str = "train", conditions: "Sequence[str] | None" = None,
               positions: str | None = None, wait_seconds: float = 0.0) -> LatentResult:
    """App. B: cos(T^l, P) with P = C^m - C^1 and T^l = C^l - C^{l-1}, l = 2..m, for one language's centroid."""
    store, runs, _ = _open(store, where, split, DEFAULT_WHERE, None, conditions, positions, ("parallel",), lang)
    n_layers = int(store.model_facts["n_layers"])
    middle = default_middle(n_layers) if middle is None else middle
    if not isinstance(middle, int) or not 2 <= middle <= n_layers:
        raise ArgumentError("middle", f"{{arg}} {middle}: must be between 2 and {n_layers} (the model's layers)")
    return _collect(store, "latent_trajectory", [_trajectory(store, scope, name, lang, middle)
                                                 for name, scope in runs], conditions is not None, wait_seconds)


def _trajectory(store: Store, scope: Scope, condition: str | None, lang: str, middle: int) -> _Run:
    groups, sel = select_groups(store, scope)
    condition = condition or C.derived(sel)
    rows = groups.rows[groups.positions(lang)]
    if len(rows) == 0:
        raise ArgumentError("lang", f"{{arg}} {lang}: {scope.describe()} selects no {lang} sentences "
                                    f"(it selects: {', '.join(groups.names())})")
    centres = np.stack([states(store, "hidden", rows, i).astype(np.float64).mean(axis=0) for i in range(middle + 1)])
    cos, norms = K.trajectory_cosines(centres, middle)
    index = np.arange(2, middle + 1)
    aid = analysis_id("latent_trajectory", where=scope.where, split=scope.split, condition=condition, lang=lang,
                      middle=middle)
    table = _table("latent_trajectory", _columns(len(index), aid, scope, condition, lang=lang,
                                                 middle=middle, hidden_index=index, n=len(rows),
                                                 cos_to_path=cos, step_norm=norms))
    summary = pa.table({"hidden_index": index, "cos_to_path": cos, "step_norm": norms})
    shown = [{"hidden_index": int(i), "col": col, "v": float(v)} for col, values in
             (("cos_to_path", cos), ("step_norm", norms)) for i, v in zip(index, values)]
    return _Run(condition, {aid: table}, shown, summary,
                [f"{len(rows)} {lang} sentences; P = C^{middle} - C^1, T^l = C^l - C^(l-1)"])

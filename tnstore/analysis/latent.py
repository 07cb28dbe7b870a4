"""Latent-space analyses (method §3, App. B, C, E): read last-token states, call tnstore.kernels.latent, write tables.

Layers. `hidden_index` is the index into the stored `hidden` array: 0 = embedding output, l = output of decoder
layer l (1-based, the paper's "layer l"; HF applies the final norm to index L). Activation rows (mlp_act) use the
hidden_index of the layer whose MLP produced them: hidden_index l <-> mlp_act[:, l - 1], so hidden and α rows of
one layer join on hidden_index. (The detection tables' `layer` is the 0-based decoder layer = hidden_index - 1.)

Sentences. `--where` is a SQL predicate over `sentences` that replaces the default (it is stored verbatim in
`where_sql`), `--split` adds `split = ?` unless it is `all`. Language-group analyses (pca, dims, centroids,
trajectory) default to `kind = 'parallel' AND ablation IS NULL`; pair analyses (knn, similarity, probe) default to
`ablation IS NULL` and take kind='parallel' / kind='nonparallel' pairs from it. A sentence captured twice (same
language, split, ablation and pair id) counts once (its lowest row). A replay capture (sentences.ablation) is
another measurement of a sentence, never another sentence: group analyses refuse a language whose selected rows mix
ablations, pair analyses refuse a pair side that does. To compare with neurons deactivated on the L2 side only
(method §5), select e.g. `lang = 'en' AND ablation IS NULL OR lang = 'ja' AND ablation = 'SET'`.

Tables. Each analysis writes one part of its table, named by `analysis_id` = `<table>-<hash of the settings that
define the result>` (where_sql, split and e.g. lang). A run computes some layers (--layers) and replaces exactly
the rows of those layers (and of the k / thresholds it computed) in that part, keeping the others, so every
(settings, layer) has one current result.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from tnstore.errors import TnstoreError
from tnstore.kernels import latent as K
from tnstore.store.schema import conform
from tnstore.store.store import Store

DEFAULT_WHERE = "kind = 'parallel' AND ablation IS NULL"
PAIR_WHERE = "ablation IS NULL"
ALL_SPLITS = "all"
ENGLISH = "en"
DEFAULT_THRESHOLDS = (0.9, 0.95, 0.99)
DEFAULT_KS = (5, 10)
PROBE_MAX_ITER = 300


@dataclass(frozen=True)
class Scope:
    """Which sentences an analysis reads: a SQL predicate over `sentences` and a split (`all`: any split)."""

    where: str
    split: str

    def predicate(self) -> tuple[str, list]:
        """SQL text for a WHERE clause and its parameters."""
        if self.split == ALL_SPLITS:
            return f"({self.where})", []
        return f"({self.where}) AND split = ?", [self.split]

    def describe(self) -> str:
        return f"--where {self.where!r} --split {self.split}"


@dataclass(frozen=True)
class LatentResult:
    """What an analysis wrote (`table`: this run's rows) and the per-layer summary printed for people."""

    table_name: str
    analysis_ids: list[str]
    table: pa.Table
    summary: pa.Table
    notes: list[str] = field(default_factory=list)


# ================================================================================================ selection
def make_scope(where: str, split: str) -> Scope:
    where = where.strip()
    if not where:
        raise TnstoreError("--where is empty; give a SQL predicate over sentences, e.g. \"ablation IS NULL\"")
    return Scope(where, split)


def _sql(store: Store, scope: Scope, query: str, params: list) -> pa.Table:
    """Run a query built on the user's predicate; SQL errors name --where."""
    try:
        return store.sql(query, params)
    except TnstoreError as exc:
        reason = str(exc).removeprefix("SQL failed: ")
        raise TnstoreError(f"--where {scope.where!r} is not valid SQL over the sentences table: {reason}") from None


def _check_nonempty(store: Store, scope: Scope) -> None:
    """Refuse a predicate that is not valid SQL or selects nothing."""
    pred, params = scope.predicate()
    n = _sql(store, scope, f"SELECT count(*) AS n FROM sentences WHERE {pred}", params).column("n")[0].as_py()
    if n == 0:
        splits = store.sql("SELECT DISTINCT split FROM sentences ORDER BY split").column("split").to_pylist()
        raise TnstoreError(f"{scope.describe()} selects no sentences (splits in the store: "
                           f"{', '.join(splits) or 'none'}); loosen --where or pick another --split")


def _check_one_ablation(store: Store, scope: Scope) -> None:
    """Refuse a selection that mixes ablations within a language: its centroid or spectrum would blend two models."""
    pred, params = scope.predicate()
    mixed = _sql(store, scope, f"""
        SELECT lang, string_agg(DISTINCT coalesce(ablation, 'NULL'), ', ' ORDER BY coalesce(ablation, 'NULL')) AS abl
        FROM sentences WHERE {pred}
        GROUP BY lang HAVING count(DISTINCT coalesce(ablation, '')) > 1 ORDER BY lang""", params).to_pylist()
    if mixed:
        lang, abl = mixed[0]["lang"], mixed[0]["abl"]
        raise TnstoreError(f"{scope.describe()} selects {lang} sentences of several ablations ({abl}); add "
                           "\"AND ablation IS NULL\" or \"AND ablation = 'SET'\" to --where so each language has one")


@dataclass(frozen=True)
class Groups:
    """Selected sentences grouped by language: rows (N,) ascending; langs (N,) the language of each row."""

    rows: np.ndarray
    langs: np.ndarray

    def names(self) -> list[str]:
        return sorted(set(self.langs.tolist()))

    def positions(self, lang: str) -> np.ndarray:
        return np.flatnonzero(self.langs == lang)


def select_groups(store: Store, scope: Scope) -> Groups:
    """The sentences of a language-group analysis, one row per captured sentence."""
    _check_nonempty(store, scope)
    _check_one_ablation(store, scope)
    pred, params = scope.predicate()
    picked = _sql(store, scope, f"""
        SELECT min(row) AS row, lang FROM sentences WHERE {pred}
        GROUP BY lang, split, ablation, coalesce(pair_id, 'row:' || row) ORDER BY row""", params)
    return Groups(picked.column("row").to_numpy().astype(np.int64),
                  np.asarray(picked.column("lang").to_pylist(), dtype=object))


@dataclass(frozen=True)
class Pairs:
    """en-L2 pairs of one kind: en_rows[i] and l2_rows[i] share a pair id and split."""

    lang: str
    kind: str
    en_rows: np.ndarray
    l2_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.en_rows)


def select_pairs(store: Store, scope: Scope, lang: str, kind: str) -> Pairs:
    """en-`lang` pairs of `kind` (parallel | nonparallel) among the selected sentences, one per pair id."""
    pred, params = scope.predicate()
    found = _sql(store, scope, f"""
        WITH side AS (
            SELECT lang, split, pair_id, min(row) AS row, count(DISTINCT coalesce(ablation, '')) AS n_ablations
            FROM sentences
            WHERE {pred} AND kind = ? AND pair_id IS NOT NULL AND lang IN (?, ?)
            GROUP BY lang, split, pair_id)
        SELECT en.row AS en_row, l2.row AS l2_row, pair_id,
               CASE WHEN en.n_ablations > 1 THEN en.lang WHEN l2.n_ablations > 1 THEN l2.lang END AS mixed
        FROM side AS en JOIN side AS l2 USING (split, pair_id)
        WHERE en.lang = ? AND l2.lang = ? ORDER BY l2.row""", params + [kind, ENGLISH, lang, ENGLISH, lang])
    mixed = [(m, p) for m, p in zip(found.column("mixed").to_pylist(), found.column("pair_id").to_pylist()) if m]
    if mixed:
        raise TnstoreError(f"{scope.describe()} selects {mixed[0][0]} sentences of pair {mixed[0][1]} from several "
                           "ablations; add \"AND ablation IS NULL\" or \"AND ablation = 'SET'\" (per language) to "
                           "--where so each sentence is measured once")
    return Pairs(lang, kind, found.column("en_row").to_numpy().astype(np.int64),
                 found.column("l2_row").to_numpy().astype(np.int64))


def pair_languages(store: Store, scope: Scope, lang: str | None, kinds: Sequence[str]) -> tuple[list[str], list[str]]:
    """The L2s to analyse: `lang`, or every non-English language with pairs of all `kinds`; plus skipped notes."""
    if lang is not None:
        if lang == ENGLISH:
            raise TnstoreError("--lang en: the pairs are en-L2; choose the L2, e.g. --lang ja")
        return [lang], []
    pred, params = scope.predicate()
    langs = _sql(store, scope, f"SELECT DISTINCT lang FROM sentences WHERE {pred} AND lang <> ? ORDER BY lang",
                 params + [ENGLISH]).column("lang").to_pylist()
    chosen, skipped = [], []
    for candidate in langs:
        missing = [k for k in kinds if len(select_pairs(store, scope, candidate, k)) == 0]
        if missing:
            skipped.append(f"{candidate} (no {' / '.join(missing)} en-{candidate} pairs)")
        else:
            chosen.append(candidate)
    if not chosen:
        need = " and ".join(kinds)
        raise TnstoreError(f"{scope.describe()} selects no language with {need} en-L2 pairs; capture an en-L2 "
                           "corpus (--kind nonparallel for non-parallel pairs) or loosen --where")
    return chosen, skipped


def _require_pairs(store: Store, scope: Scope, lang: str, kind: str, minimum: int, why: str) -> Pairs:
    pairs = select_pairs(store, scope, lang, kind)
    if len(pairs) < minimum:
        hint = " (capture one with --kind nonparallel)" if kind == "nonparallel" else ""
        raise TnstoreError(f"--lang {lang}: {scope.describe()} selects {len(pairs)} {kind} en-{lang} pairs{hint}; "
                           f"{why} needs at least {minimum}")
    return pairs


# ================================================================================================ options
def parse_layers(text: str | None, n_hidden: int) -> list[int]:
    """Hidden indices to compute: None = all 0..L; `A:B` (B excluded) or a list `0,8,16`."""
    if text is None or not text.strip():
        return list(range(n_hidden))
    span = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if span:
        start, end = int(span.group(1)), int(span.group(2))
        if not 0 <= start < end <= n_hidden:
            raise TnstoreError(f"--layers {text}: need 0 <= A < B <= {n_hidden} (hidden indices 0..{n_hidden - 1})")
        return list(range(start, end))
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", text):
        raise TnstoreError(f"--layers {text!r} must be A:B (B excluded) or a list like 0,8,16 of hidden indices "
                           f"(0 = embeddings, 1..{n_hidden - 1} = layer outputs)")
    layers = sorted({int(v) for v in text.split(",")})
    if layers[-1] >= n_hidden:
        raise TnstoreError(f"--layers {text}: hidden index {layers[-1]} does not exist (0..{n_hidden - 1})")
    return layers


def parse_numbers(text: str, flag: str, kind: Callable[[str], float | int]) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise TnstoreError(f"{flag} {text!r} must be a comma-separated list of numbers")
    return sorted(set(values))


def parse_thresholds(text: str) -> list[float]:
    values = parse_numbers(text, "--thresholds", float)
    if not all(0.0 < t <= 1.0 for t in values):
        raise TnstoreError(f"--thresholds {text}: every threshold must be in (0, 1]")
    return values


def parse_ks(text: str) -> list[int]:
    values = parse_numbers(text, "--k", int)
    if values[0] < 1:
        raise TnstoreError(f"--k {text}: every k must be at least 1")
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


def _columns(n_rows: int, analysis: str, scope: Scope, /, **values: object) -> dict:
    """Leading columns every latent table shares, then the given ones (scalars are repeated n_rows times)."""
    out: dict = {"analysis_id": [analysis] * n_rows, "where_sql": [scope.where] * n_rows,
                 "split": [scope.split] * n_rows}
    for name, value in values.items():
        out[name] = value if isinstance(value, (np.ndarray, list, pa.Array)) else [value] * n_rows
    return out


def write_merged(store: Store, table: str, parts: dict[str, pa.Table], replace_on: Sequence[str],
                 wait_seconds: float) -> None:
    """Write each part, keeping its stored rows whose `replace_on` values this run did not compute."""
    with store.writing(f"latent {table}", wait_seconds):
        for part, new in parts.items():
            new = conform(table, new)
            old = conform(table, store.sql(f"SELECT * FROM {table} WHERE analysis_id = ?", [part]))
            if replace_on and old.num_rows:
                fresh = set(zip(*(new.column(c).to_pylist() for c in replace_on)))
                keep = [key not in fresh for key in zip(*(old.column(c).to_pylist() for c in replace_on))]
                new = pa.concat_tables([new, old.filter(pa.array(keep, pa.bool_()))])
            keys = [c for c in dict.fromkeys(("hidden_index", *replace_on)) if c in new.column_names]
            store.write_part(table, part, new.sort_by([(c, "ascending") for c in keys]) if keys else new)


def _table(table: str, columns: dict) -> pa.Table:
    return conform(table, pa.table(columns))


def _records_table(table: str, aid: str, scope: Scope, records: list[dict], **fixed: object) -> pa.Table:
    """Rows of `table`: the shared leading columns, `fixed` values on every row, then the records' columns."""
    columns = {name: [r[name] for r in records] for name in records[0]}
    return _table(table, _columns(len(records), aid, scope, **fixed, **columns))


def _pivot(rows: list[dict], index: str, column: str, value: str) -> pa.Table:
    """A compact wide table: one row per `index` value, one column per `column` value."""
    keys = sorted({r[index] for r in rows})
    names = list(dict.fromkeys(r[column] for r in rows))
    cells = {(r[index], r[column]): r[value] for r in rows}
    out = {index: keys}
    for name in names:
        out[name] = [cells.get((k, name)) for k in keys]
    return pa.table(out)


# ================================================================================================ analyses
def pca(store_path: str | Path, where: str = DEFAULT_WHERE, split: str = "train", layers: str | None = None,
        wait_seconds: float = 0.0) -> LatentResult:
    """§3.1: per hidden index, PCA of all selected states together; writes PC1/PC2 per row to latent_pca."""
    store, scope = Store.open(store_path), make_scope(where, split)
    indices = parse_layers(layers, int(store.model_facts["n_layers"]) + 1)
    groups = select_groups(store, scope)
    if len(groups.rows) < 3:
        raise TnstoreError(f"{scope.describe()} selects {len(groups.rows)} sentences; PCA needs at least 3")
    aid = analysis_id("latent_pca", where=scope.where, split=scope.split)
    blocks, summary = [], []
    for index in indices:
        try:
            coords, ratio = K.pca_project(states(store, "hidden", groups.rows, index))
        except ValueError as exc:
            raise TnstoreError(f"PCA of hidden index {index} ({scope.describe()}): {exc}") from None
        n = len(groups.rows)
        blocks.append(_table("latent_pca", _columns(
            n, aid, scope, hidden_index=index, n=n, evr1=float(ratio[0]), evr2=float(ratio[1]),
            row=groups.rows, lang=groups.langs.tolist(), pc1=coords[:, 0], pc2=coords[:, 1])))
        summary.append({"hidden_index": index, "n": n, "evr1": float(ratio[0]), "evr2": float(ratio[1]),
                        **_language_spread(coords, groups)})
    table = pa.concat_tables(blocks)
    write_merged(store, "latent_pca", {aid: table}, ["hidden_index"], wait_seconds)
    counts = ", ".join(f"{lang} {len(groups.positions(lang))}" for lang in groups.names())
    return LatentResult("latent_pca", [aid], table, pa.Table.from_pylist(summary),
                        [f"sentences: {counts}", "spread = mean distance of the language means from their joint "
                         "mean in the PC1/PC2 plane, over the rms distance of the sentences (0: languages overlap)"])


def _language_spread(coords: np.ndarray, groups: Groups) -> dict:
    """How far apart the languages sit in the PC plane, scale-free (for the summary only)."""
    means = np.stack([coords[groups.positions(lang)].mean(axis=0) for lang in groups.names()])
    rms = np.sqrt(np.mean(np.sum((coords - coords.mean(axis=0)) ** 2, axis=1)))
    return {"spread": float(np.linalg.norm(means - means.mean(axis=0), axis=1).mean() / rms) if rms else 0.0}


def dims(store_path: str | Path, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, where: str = DEFAULT_WHERE,
         split: str = "train", layers: str | None = None, center: bool = False,
         wait_seconds: float = 0.0) -> LatentResult:
    """§3.2: per hidden index and language, k = singular values reaching each cumulative σ² share."""
    store, scope = Store.open(store_path), make_scope(where, split)
    thresholds = sorted(set(float(t) for t in thresholds))
    indices = parse_layers(layers, int(store.model_facts["n_layers"]) + 1)
    groups = select_groups(store, scope)
    aid = analysis_id("latent_dims", where=scope.where, split=scope.split, centered=center)
    langs, d = groups.names(), int(store.model_facts["d_model"])
    records = []
    for index in indices:
        x = states(store, "hidden", groups.rows, index)
        for lang in langs:
            own = x[groups.positions(lang)]
            ks = K.dims_at_thresholds(K.squared_singular_values(own, center=center), thresholds)
            records += [{"lang": lang, "hidden_index": index, "n": len(own), "d": d, "threshold": t, "k": int(k)}
                        for t, k in zip(thresholds, ks)]
    table = _records_table("latent_dims", aid, scope, records, centered=center)
    write_merged(store, "latent_dims", {aid: table}, ["hidden_index", "threshold"], wait_seconds)
    joined: dict[tuple[int, str], list[str]] = {}
    for r in records:  # thresholds ascending within each (layer, language)
        joined.setdefault((r["hidden_index"], r["lang"]), []).append(str(r["k"]))
    summary = _pivot([{"hidden_index": i, "lang": lang, "k": "/".join(v)} for (i, lang), v in joined.items()],
                     "hidden_index", "lang", "k")
    counts = ", ".join(f"{lang} {len(groups.positions(lang))}" for lang in langs)
    what = "centred on the language mean" if center else "raw states, not centred (as the paper)"
    return LatentResult("latent_dims", [aid], table, summary,
                        [f"sentences: {counts}; {what}; d = {d}",
                         f"cells: k at thresholds {'/'.join(f'{t:g}' for t in thresholds)}"])


def centroids(store_path: str | Path, where: str = DEFAULT_WHERE, split: str = "train", layers: str | None = None,
              wait_seconds: float = 0.0) -> LatentResult:
    """§3.3: per hidden index, cosine similarity of every pair of language centroids C_L = mean of its states."""
    store, scope = Store.open(store_path), make_scope(where, split)
    indices = parse_layers(layers, int(store.model_facts["n_layers"]) + 1)
    groups = select_groups(store, scope)
    langs = groups.names()
    if len(langs) < 2:
        raise TnstoreError(f"{scope.describe()} selects only {langs[0]} sentences; centroid similarities need "
                           "two or more languages")
    aid = analysis_id("latent_centroid_cos", where=scope.where, split=scope.split)
    counts = {lang: len(groups.positions(lang)) for lang in langs}
    records = []
    for index in indices:
        x = states(store, "hidden", groups.rows, index).astype(np.float64)
        cos = K.cosine_matrix(np.stack([x[groups.positions(lang)].mean(axis=0) for lang in langs]))
        records += [{"hidden_index": index, "lang_a": a, "lang_b": b, "n_a": counts[a], "n_b": counts[b],
                     "cosine": float(cos[i, j])} for i, a in enumerate(langs) for j, b in enumerate(langs)]
    table = _records_table("latent_centroid_cos", aid, scope, records)
    write_merged(store, "latent_centroid_cos", {aid: table}, ["hidden_index"], wait_seconds)
    ref = ENGLISH if ENGLISH in langs else langs[0]
    shown = [{**r, "pair": f"{ref}~{r['lang_b']}"} for r in records if r["lang_a"] == ref and r["lang_b"] != ref]
    return LatentResult("latent_centroid_cos", [aid], table, _pivot(shown, "hidden_index", "pair", "cosine"),
                        [f"sentences: {', '.join(f'{k} {v}' for k, v in counts.items())}; "
                         f"cosine of the {ref} centroid with each other language's (full matrix in the table)"])


def knn(store_path: str | Path, ks: Sequence[int] = DEFAULT_KS, lang: str | None = None, where: str = PAIR_WHERE,
        split: str = "train", layers: str | None = None, wait_seconds: float = 0.0) -> LatentResult:
    """§3.4 / App. E: mutual k-NN alignment of en and L2 states of parallel pairs, per hidden index."""
    store, scope = Store.open(store_path), make_scope(where, split)
    ks = sorted(set(int(k) for k in ks))
    indices = parse_layers(layers, int(store.model_facts["n_layers"]) + 1)
    _check_nonempty(store, scope)
    langs, skipped = pair_languages(store, scope, lang, ["parallel"])
    selected = {}
    for l2 in langs:
        pairs = _require_pairs(store, scope, l2, "parallel", 2, "mutual k-NN")
        if ks[-1] > len(pairs) - 1:
            raise TnstoreError(f"--k {ks[-1]}: en-{l2} has {len(pairs)} parallel pairs ({scope.describe()}), so "
                               f"a sentence has {len(pairs) - 1} neighbours; choose k <= {len(pairs) - 1}")
        selected[l2] = pairs
    parts, shown = {}, []
    for l2, pairs in selected.items():
        aid = analysis_id("latent_knn", where=scope.where, split=scope.split, lang=l2)
        records = []
        for index in indices:
            scores = K.mutual_knn(*pair_states(store, "hidden", pairs, index), ks)
            records += [{"hidden_index": index, "k": k, "score": float(s)} for k, s in zip(ks, scores)]
        parts[aid] = _records_table("latent_knn", aid, scope, records, lang=l2, n_pairs=len(pairs))
        shown += [{**r, "col": f"{l2} k={r['k']}"} for r in records]
    write_merged(store, "latent_knn", parts, ["hidden_index", "k"], wait_seconds)
    notes = [f"parallel pairs: {', '.join(f'en-{l2} {len(p)}' for l2, p in selected.items())}; neighbours by "
             "cosine similarity among the other sentences of the same language"]
    notes += [f"skipped {s}" for s in skipped]
    return LatentResult("latent_knn", list(parts), pa.concat_tables(parts.values()),
                        _pivot(shown, "hidden_index", "col", "score"), notes)


def similarity(store_path: str | Path, lang: str | None = None, where: str = PAIR_WHERE, split: str = "train",
               layers: str | None = None, wait_seconds: float = 0.0) -> LatentResult:
    """App. C.1: mean cosine of (en, L2) states, parallel vs non-parallel pairs, for hidden states and α."""
    store, scope = Store.open(store_path), make_scope(where, split)
    indices = parse_layers(layers, int(store.model_facts["n_layers"]) + 1)
    _check_nonempty(store, scope)
    langs, skipped = pair_languages(store, scope, lang, ["parallel", "nonparallel"])
    selected = {l2: {kind: _require_pairs(store, scope, l2, kind, 1, "the similarity comparison")
                     for kind in ("parallel", "nonparallel")} for l2 in langs}
    parts, shown = {}, []
    for l2, by_kind in selected.items():
        aid = analysis_id("latent_pair_similarity", where=scope.where, split=scope.split, lang=l2)
        records = []
        for index in indices:
            for array in ("hidden", "mlp_act") if index > 0 else ("hidden",):
                for kind, pairs in by_kind.items():
                    cos = K.paired_cosine(*pair_states(store, array, pairs, index))
                    records.append({"array": array, "hidden_index": index, "kind": kind, "n_pairs": len(pairs),
                                    "mean_cos": float(cos.mean()), "std_cos": float(cos.std())})
                    short = {"hidden": "h", "mlp_act": "act"}[array]
                    shown.append({"hidden_index": index, "col": f"{l2} {short} {kind[:3]}", "v": float(cos.mean())})
        parts[aid] = _records_table("latent_pair_similarity", aid, scope, records, lang=l2)
    write_merged(store, "latent_pair_similarity", parts, ["hidden_index", "array", "kind"], wait_seconds)
    counts = "; ".join(f"en-{l2} {len(p['parallel'])} parallel / {len(p['nonparallel'])} non-parallel"
                       for l2, p in selected.items())
    notes = [f"pairs: {counts}", "columns: mean cosine; h = hidden state, act = MLP activations α of that layer; "
             "par = parallel, non = non-parallel"] + [f"skipped {s}" for s in skipped]
    return LatentResult("latent_pair_similarity", list(parts), pa.concat_tables(parts.values()),
                        _pivot(shown, "hidden_index", "col", "v"), notes)


def probe(store_path: str | Path, lang: str | None = None, where: str = PAIR_WHERE, split: str = "train",
          layers: str | None = None, folds: int = 10, seed: int = 0, wait_seconds: float = 0.0) -> LatentResult:
    """App. C.2: stratified k-fold accuracy of a logistic probe telling parallel from non-parallel pairs."""
    store, scope = Store.open(store_path), make_scope(where, split)
    if folds < 2:
        raise TnstoreError(f"--folds {folds}: cross-validation needs at least 2 folds")
    indices = parse_layers(layers, int(store.model_facts["n_layers"]) + 1)
    _check_nonempty(store, scope)
    langs, skipped = pair_languages(store, scope, lang, ["parallel", "nonparallel"])
    selected = {}
    for l2 in langs:
        by_kind = [_require_pairs(store, scope, l2, kind, folds, f"--folds {folds}")
                   for kind in ("parallel", "nonparallel")]
        selected[l2] = _balanced(*by_kind)
    parts, shown, notes = {}, [], []
    for l2, (par, non) in selected.items():
        aid = analysis_id("latent_probe", where=scope.where, split=scope.split, lang=l2, folds=folds, seed=seed)
        labels = np.concatenate([np.ones(len(par), np.int64), np.zeros(len(non), np.int64)])
        records = []
        for index in indices:
            features = np.concatenate([np.hstack(pair_states(store, "hidden", p, index)) for p in (par, non)])
            accuracy, converged = K.probe_accuracy(features, labels, folds, seed, PROBE_MAX_ITER)
            records.append({"hidden_index": index, "accuracy": float(accuracy.mean()),
                            "accuracy_std": float(accuracy.std()), "converged": converged})
            shown.append({"hidden_index": index, "col": f"{l2} accuracy", "v": float(accuracy.mean())})
        parts[aid] = _records_table("latent_probe", aid, scope, records, lang=l2, folds=folds, seed=seed,
                                    n_parallel=len(par), n_nonparallel=len(non))
        if not all(r["converged"] for r in records):
            notes.append(f"en-{l2}: some fits stopped at max_iter={PROBE_MAX_ITER} (column converged)")
    write_merged(store, "latent_probe", parts, ["hidden_index"], wait_seconds)
    notes.insert(0, "pairs per class: " + ", ".join(f"en-{l2} {len(p)}" for l2, (p, _) in selected.items())
                 + f"; {folds}-fold stratified CV (seed {seed}); chance = 0.5")
    notes += [f"skipped {s}" for s in skipped]
    return LatentResult("latent_probe", list(parts), pa.concat_tables(parts.values()),
                        _pivot(shown, "hidden_index", "col", "v"), notes)


def _balanced(parallel: Pairs, nonparallel: Pairs) -> tuple[Pairs, Pairs]:
    """The first min(n_par, n_non) pairs of each kind (in store order): chance level stays 0.5."""
    n = min(len(parallel), len(nonparallel))
    cut = lambda p: Pairs(p.lang, p.kind, p.en_rows[:n], p.l2_rows[:n])  # noqa: E731
    return cut(parallel), cut(nonparallel)


def trajectory(store_path: str | Path, lang: str = ENGLISH, middle: int | None = None, where: str = DEFAULT_WHERE,
               split: str = "train", wait_seconds: float = 0.0) -> LatentResult:
    """App. B: cos(T^l, P) with P = C^m - C^1 and T^l = C^l - C^{l-1}, l = 2..m, for one language's centroid."""
    store, scope = Store.open(store_path), make_scope(where, split)
    n_layers = int(store.model_facts["n_layers"])
    middle = default_middle(n_layers) if middle is None else middle
    if not 2 <= middle <= n_layers:
        raise TnstoreError(f"--middle {middle}: must be between 2 and {n_layers} (the model's layers)")
    groups = select_groups(store, scope)
    rows = groups.rows[groups.positions(lang)]
    if len(rows) == 0:
        raise TnstoreError(f"--lang {lang}: {scope.describe()} selects no {lang} sentences "
                           f"(it selects: {', '.join(groups.names())})")
    centres = np.stack([states(store, "hidden", rows, i).astype(np.float64).mean(axis=0) for i in range(middle + 1)])
    cos, norms = K.trajectory_cosines(centres, middle)
    index = np.arange(2, middle + 1)
    aid = analysis_id("latent_trajectory", where=scope.where, split=scope.split, lang=lang, middle=middle)
    table = _table("latent_trajectory", _columns(len(index), aid, scope, lang=lang,
                                                 middle=middle, hidden_index=index, n=len(rows),
                                                 cos_to_path=cos, step_norm=norms))
    write_merged(store, "latent_trajectory", {aid: table}, [], wait_seconds)
    summary = pa.table({"hidden_index": index, "cos_to_path": cos, "step_norm": norms})
    return LatentResult("latent_trajectory", [aid], table, summary,
                        [f"{len(rows)} {lang} sentences; P = C^{middle} - C^1, T^l = C^l - C^(l-1)"])

"""Transfer-neuron detection (method §4): centroids, every candidate neuron's score, the ranked top-n.

Results go into three tables, each part keyed by an id derived from the settings, so running again with the same
settings replaces exactly its own parts and other settings add parts:
    centroids, neuron_scores   part = analysis_id   (type, lang, split, dist, layers; where, if not the default)
    transfer_neurons           part = set_id        (analysis_id + top)
Sentences (the selection contract of tnstore.store.selection): of the sentences `split` and `where` pick (default
`ablation IS NULL`: plain captures), the scored L2 sentences are the `lang` rows of kind parallel or mono
(nonparallel rows are a control set that repeats sentences); Type-1's shared centroid uses the parallel en-L2
pairs among them. A sentence captured twice counts once.

With a scheduler (tnstore.compute.cluster), centroids and scores run as chunk tasks on a dask.distributed
cluster: per layer group, one task per block of rows the local pass reads (so each task computes what one local
block does), partial sums added in a tree. Only the order of the float64 additions differs from the local pass.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pyarrow as pa

from tnstore.compute.buffers import Recycler
from tnstore.compute.cluster import SchedulerLike, check_scheduler
from tnstore.errors import ArgumentError, TnstoreError
from tnstore.kernels.centroids import hidden_mean, shared_centroid
from tnstore.kernels.scoring import DISTANCES, LayerTerms, score_sums, value_terms
from tnstore.store import selection as S
from tnstore.store.schema import SAFE_NAME
from tnstore.store.frames import to_polars
from tnstore.store.store import Store, open_store

if TYPE_CHECKING:
    import polars as pl

TYPES = (1, 2)
ENGLISH = "en"
DEFAULT_WHERE = S.PLAIN
GROUP_BYTES = 256 * 2**20  # value vectors + one block of rows of the layers read together


@dataclass(frozen=True)
class DetectSettings:
    """Everything that determines a detection's result."""

    type: int
    lang: str
    split: str
    dist: str
    layer_start: int  # 0-based decoder layer, inclusive
    layer_end: int  # exclusive
    top: int
    where: str = DEFAULT_WHERE

    @property
    def analysis_id(self) -> str:
        """Names the scores and centroids: every setting except `top` (a non-default `where` as a hash)."""
        base = f"type{self.type}_{self.lang}_{self.split}_{self.dist}_layers{self.layer_start}-{self.layer_end}"
        if self.where == DEFAULT_WHERE:
            return base
        return f"{base}_where-{hashlib.sha256(self.where.encode('utf-8')).hexdigest()[:8]}"

    @property
    def set_id(self) -> str:
        """Names one ranked top-n set."""
        return f"{self.analysis_id}_top{self.top}"


@dataclass(frozen=True)
class Selection:
    """Rows of the store a detection reads."""

    scored_rows: np.ndarray  # L2 sentences scored (Eq. 7-9) and, for Type-2, averaged into the centroid (Eq. 5)
    pair_en_rows: np.ndarray  # Type-1: en side of each parallel pair (Eq. 6); empty for Type-2
    pair_l2_rows: np.ndarray  # Type-1: L2 side of the same pairs


@dataclass(frozen=True)
class DetectResult:
    """What a detection wrote. `ranking` is the ranked set (Polars), `ranking_arrow` the same as Arrow."""

    settings: DetectSettings
    n_layers: int
    n_sentences: int
    n_pairs: int
    n_candidates: int
    seconds: float
    ranking_arrow: pa.Table  # the rows written to transfer_neurons, rank 1 first

    @property
    def set_id(self) -> str:
        return self.settings.set_id

    @property
    def ranking(self) -> "pl.DataFrame":
        """The rows written to transfer_neurons (set_id, rank, layer, neuron, score, ...), rank 1 first."""
        return to_polars(self.ranking_arrow)


def default_layers(type_: int, n_layers: int) -> tuple[int, int]:
    """The paper's split (layers 1-20 of 32 are Type-1 candidates) scaled to the model's depth, rounded half up."""
    boundary = (n_layers * 20 + 16) // 32
    return (0, boundary) if type_ == 1 else (boundary, n_layers)


def layer_span(layers: "range | tuple[int, int] | Sequence[int] | None", type_: int, n_layers: int) -> tuple[int, int]:
    """The candidate decoder layers as (start, end), 0-based, end excluded, checked against the model.

    layers: range(A, B), a tuple (A, B) meaning A..B-1, or None for the paper's default split (`default_layers`).
    """
    if layers is None:
        start, end = default_layers(type_, n_layers)
        if start >= end:
            raise ArgumentError("layers", f"the model's {n_layers} layers leave no default Type-{type_} layers; "
                                          "pass {arg}")
        return start, end
    if isinstance(layers, range):
        if layers.step != 1:
            raise ArgumentError("layers", f"{{arg}} {layers!r}: candidate layers are consecutive (step 1)")
        start, end = layers.start, layers.stop
    elif isinstance(layers, tuple) and len(layers) == 2 and all(isinstance(v, (int, np.integer)) for v in layers):
        start, end = int(layers[0]), int(layers[1])
    else:
        raise ArgumentError("layers", f"{{arg}} {layers!r} must be range(A, B) or (A, B): 0-based decoder layers, "
                                      "B excluded")
    if not 0 <= start < end <= n_layers:
        raise ArgumentError("layers", f"{{arg}} {start}:{end}: need 0 <= A < B <= {n_layers} (the model has "
                                      f"{n_layers} decoder layers)")
    return start, end


def resolve_settings(
    facts: dict, type_: int, lang: str, top: int, layers: "range | tuple[int, int] | None", split: str, dist: str,
    where: str | None = None,
) -> DetectSettings:
    """Validate the user's choices against the model (not yet against the sentences)."""
    n_layers, d_mlp = int(facts["n_layers"]), int(facts["d_mlp"])
    if type_ not in TYPES:
        raise ArgumentError("type", f"{{arg}} {type_!r} is not 1 (L2 -> shared space) or 2 (shared space -> L2)")
    if dist not in DISTANCES:
        raise ArgumentError("dist", f"{{arg}} {dist!r} is not one of {', '.join(DISTANCES)}")
    if type_ == 1 and lang == ENGLISH:
        raise ArgumentError(
            "lang", "{arg} en: Type-1 neurons move an L2 towards the en-centred shared space; choose a non-English {arg}")
    start, end = layer_span(layers, type_, n_layers)
    n_candidates = (end - start) * d_mlp
    if not isinstance(top, (int, np.integer)) or not 1 <= top <= n_candidates:
        raise ArgumentError(
            "top", f"{{arg}} {top}: layers {start}:{end} hold {n_candidates} candidate neurons; choose 1..{n_candidates}")
    scope = S.make_scope(where, split, DEFAULT_WHERE)
    settings = DetectSettings(type_, lang, scope.split, dist, start, end, int(top), scope.where)
    if not SAFE_NAME.match(settings.set_id):
        raise ArgumentError("lang", f"{{arg}} {lang!r} / split {split!r}: use letters, digits, '-', '_' or '.' only")
    return settings


def select_rows(store: Store, settings: DetectSettings) -> Selection:
    """The sentences a detection reads (tnstore.store.selection), with one-line errors when the store lacks them."""
    sel = S.select(store, S.Scope(settings.where, settings.split), allow_empty=True)
    scored = sel.subset((sel.lang == settings.lang) & (sel.kind != "nonparallel"))
    if len(scored) == 0:
        _explain_missing_lang(store, sel, settings)
    S.check_one_condition(scored)
    if settings.type == 2:
        empty = np.empty(0, dtype=np.int64)
        return Selection(scored.rows, empty, empty)
    pairs = S.pairs(sel, settings.lang, "parallel")
    if len(pairs) == 0:
        raise ArgumentError(
            "split", f"split {settings.split} has no parallel en-{settings.lang} pairs; Type-1 needs them for the "
                     f"shared centroid (Eq. 6): capture an en-{settings.lang} parallel corpus with {{arg}} "
                     f"{settings.split}")
    return Selection(scored.rows, pairs.en_rows, pairs.l2_rows)


def detect(
    store: "str | Path | Store", type: int, lang: str, top: int = 1000,
    layers: "range | tuple[int, int] | None" = None, split: str = "train", where: str | None = None,
    dist: str = "cosine", max_rows: int = 2048, wait_seconds: float = 0.0, scheduler: SchedulerLike = None,
) -> DetectResult:
    """Score every candidate neuron (Eq. 7-9), rank them and write centroids, neuron_scores and transfer_neurons.

    type: 1 (L2 -> shared region: centroid C_shared, Eq. 6) or 2 (shared -> L2 region: C_L2, Eq. 5).
    layers: candidate decoder layers, range(A, B) or (A, B), 0-based, B excluded; default `default_layers`.
    split, where: the sentences (tnstore.store.selection); where None = plain captures.
    dist: cosine (default) or euclidean (negative distance, so closer = better).
    max_rows: store rows per streamed block (one matrix product per layer and block). Memory stays within about
    two groups of layers (value vectors plus one block of their rows, ~GROUP_BYTES each when a layer fits; the
    value buffers are recycled) plus one float32 (max_rows, d_mlp) product and the elementwise tiles.
    The result's `ranking` is the top-`top` set: (top,) rows of set_id, rank, layer, neuron, score.
    scheduler: `tnstore.Scheduler.at("tcp://HOST:PORT")`, `tnstore.Scheduler.local(N)` or a distributed.Client:
    centroids and scores run as chunk tasks there, the workers reading the store by its path; None: here.
    """
    t0 = time.perf_counter()
    scheduler = check_scheduler(scheduler)
    store = open_store(store)
    settings = resolve_settings(store.model_facts, type, lang, top, layers, split, dist, where)
    with store.writing(f"detect {settings.set_id}", wait_seconds):
        selection = select_rows(store, settings)
        if scheduler is None:
            centroids, scores = _score_layers(store, settings, selection, max_rows)
        else:
            centroids, scores = _score_layers_on(scheduler, store, settings, selection, max_rows)
        if not np.isfinite(scores).all():
            raise TnstoreError(
                f"non-finite neuron scores in {settings.analysis_id} (a zero residual or centroid?); "
                "check the store's sentences with `tnstore info`")
        ranking = _ranking_table(settings, scores)
        store.write_rows("centroids", _centroid_table(settings, selection, centroids))
        store.write_rows("neuron_scores", _scores_table(settings, len(selection.scored_rows), scores))
        store.write_rows("transfer_neurons", ranking)
    return DetectResult(
        settings=settings, n_layers=int(store.model_facts["n_layers"]), n_sentences=len(selection.scored_rows),
        n_pairs=len(selection.pair_en_rows), n_candidates=scores.size, seconds=time.perf_counter() - t0,
        ranking_arrow=ranking,
    )


# ---------------------------------------------------------------- computation
@dataclass(frozen=True)
class _Work:
    """One streamed block of scored rows for one group of consecutive candidate layers (g layers)."""

    layers: range
    centroids: np.ndarray  # (g, d) float64
    terms: list[LayerTerms]  # per layer of the group
    resid: np.ndarray  # (n_block, g, d)
    act: np.ndarray  # (n_block, g, d_mlp)
    scale: np.ndarray  # (n_block, g)
    done_with: tuple[np.ndarray, ...] = ()  # arrays to recycle once this item is scored (the group's last block)


def _score_layers(
    store: Store, settings: DetectSettings, selection: Selection, max_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (n_cand_layers, d) float64 and scores (n_cand_layers, d_mlp) float64 of the candidate layers.

    Reading a group (chunk decoding, float16 widening, per-layer constants) and scoring it take turns, each
    spread over every core.
    """
    first, n_layers = settings.layer_start, settings.layer_end - settings.layer_start
    d_model, d_mlp = int(store.model_facts["d_model"]), int(store.model_facts["d_mlp"])
    centroids = np.zeros((n_layers, d_model))
    sums = np.zeros((n_layers, d_mlp))
    recycler = Recycler()
    # Reads and scoring take turns, each on every core (chunk decoding, BLAS and the elementwise tiles are all
    # parallel): a background reader competing with them for a small machine's cores was slower at every model
    # size measured in bench/bench_detect.py, and stalls OpenBLAS's statically split products on large ones.
    for work in _prepare(store, settings, selection, max_rows, recycler):
        for j, layer in enumerate(work.layers):
            centroids[layer - first] = work.centroids[j]
            sums[layer - first] += score_sums(work.terms[j], work.resid[:, j], work.act[:, j], work.scale[:, j])
        recycler.give(*work.done_with)
    return centroids, sums / len(selection.scored_rows)


def _prepare(
    store: Store, settings: DetectSettings, selection: Selection, max_rows: int, recycler: Recycler,
) -> Iterator[_Work]:
    """Everything scoring needs, layer group by layer group, row block by row block."""
    rows = selection.scored_rows
    for layers in _layer_groups(store.model_facts, settings, min(len(rows), max_rows)):
        group = slice(layers.start, layers.stop)
        if settings.type == 1:
            centroids = shared_centroid(store, selection.pair_en_rows, selection.pair_l2_rows, layers, max_rows)
        else:
            centroids = hidden_mean(store, rows, layers, max_rows)
        terms, done_with = _value_terms(store, group, centroids, settings.dist, recycler)
        scale = store.read_rows("mlp_out_scale", rows, group)  # (n, g)
        for last, (positions, resid, act) in _mark_last(_aligned_blocks(store, rows, group, max_rows)):
            yield _Work(layers, centroids, terms, resid, act, scale[positions], done_with if last else ())


@dataclass(frozen=True)
class ScoreTask:
    """One chunk task: the score sums of `rows` (one local block) for the candidate layers `layers`."""

    ref: str
    layers: range
    centroids: np.ndarray  # (g, d) float64
    dist: str
    rows: np.ndarray
    max_rows: int


def score_chunk(task: ScoreTask) -> np.ndarray:
    """Σ over the task's rows of N - L for every neuron of its layers; (g, d_mlp) float64 (a worker's share)."""
    from tnstore.compute.cluster import worker_store

    store = worker_store(task.ref)
    group = slice(task.layers.start, task.layers.stop)
    recycler = Recycler()
    terms, _ = _value_terms(store, group, task.centroids, task.dist, recycler)
    scale = store.read_rows("mlp_out_scale", task.rows, group)
    sums = np.zeros((len(task.layers), int(store.model_facts["d_mlp"])))
    for positions, resid, act in _aligned_blocks(store, task.rows, group, task.max_rows):
        for j in range(len(task.layers)):
            sums[j] += score_sums(terms[j], resid[:, j], act[:, j], scale[positions, j])
    return sums


def _score_layers_on(
    scheduler: SchedulerLike, store: Store, settings: DetectSettings, selection: Selection, max_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """_score_layers as chunk tasks on a cluster: centroid sums, then score sums, one task per local block."""
    from tnstore.compute import cluster
    from tnstore.kernels.tasks import SumsTask, add_sums, group_sums_chunk, row_spans

    ref = cluster.store_ref(store)
    rows = selection.scored_rows
    mean_rows = (np.concatenate([selection.pair_en_rows, selection.pair_l2_rows]) if settings.type == 1 else rows)
    groups = list(_layer_groups(store.model_facts, settings, min(len(rows), max_rows)))
    one = np.zeros(len(mean_rows), dtype=np.int64)
    mean_spans = row_spans(store, "hidden", mean_rows, max_rows)
    score_spans = row_spans(store, "resid_pre_mlp", rows, max_rows)
    with cluster.session(scheduler) as client:
        sums = cluster.map_reduce(client, [
            [SumsTask(ref, "hidden", slice(layers.start + 1, layers.stop + 1), mean_rows[span], one[span], 1,
                      max_rows)
             for span in mean_spans] for layers in groups], group_sums_chunk, add_sums)
        centroids = [part.sums[0] / part.counts[0] for part in sums]  # (g, d) per group
        scores = cluster.map_reduce(client, [
            [ScoreTask(ref, layers, centroid, settings.dist, rows[span], max_rows) for span in score_spans]
            for layers, centroid in zip(groups, centroids)], score_chunk, np.add)
    return np.concatenate(centroids), np.concatenate(scores) / len(rows)


def _value_terms(
    store: Store, group: slice, centroids: np.ndarray, dist: str, recycler: Recycler,
) -> tuple[list[LayerTerms], tuple[np.ndarray, ...]]:
    """A layer group's LayerTerms, their value vectors in recycled arrays; and the arrays to hand back once the
    group is scored."""
    facts = store.model_facts
    shape = (group.stop - group.start, int(facts["d_mlp"]), int(facts["d_model"]))
    raw = store.read_model_array("down_proj", group, dtype=None,
                                 out=recycler.take(shape, store.model_array_dtype("down_proj")))
    gains = store.read_model_array("mlp_out_gain", group)  # (g, d)
    if raw.dtype == np.float32 and np.all(gains == 1):  # used as read: no copy
        return [value_terms(raw[j], gains[j], centroids[j], dist) for j in range(shape[0])], (raw,)
    terms = [value_terms(raw[j], gains[j], centroids[j], dist, out=recycler.take(shape[1:], np.float32))
             for j in range(shape[0])]
    recycler.give(raw)
    return terms, tuple(t.values for t in terms)


def _mark_last(items: Iterator) -> Iterator[tuple[bool, object]]:
    """(is_last, item) for each item, looking one ahead."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield False, current
        current = following
    yield True, current


def _layer_groups(facts: dict, settings: DetectSettings, block_rows: int) -> Iterator[range]:
    """Consecutive candidate layers read together: as many as fit GROUP_BYTES (at least one).

    A LLaMA-8B layer alone fills the budget; a small model's candidate layers are read in one go, which saves
    a few thousand small reads and calls.
    """
    d_model, d_mlp = int(facts["d_model"]), int(facts["d_mlp"])
    per_layer = 4 * (d_mlp * d_model + block_rows * (d_model + d_mlp))  # float32 value vectors + one block of rows
    size = max(1, GROUP_BYTES // per_layer)
    for start in range(settings.layer_start, settings.layer_end, size):
        yield range(start, min(start + size, settings.layer_end))


def _aligned_blocks(
    store: Store, rows: np.ndarray, layers: slice, max_rows: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, resid_pre_mlp (n, g, d), mlp_act (n, g, d_mlp)) of a layer group, streamed together.

    Both arrays share a segment's row chunking, so their blocks cover the same rows; checked, not assumed.
    """
    resid_blocks = store.iter_rows("resid_pre_mlp", rows, layers, max_rows)
    act_blocks = store.iter_rows("mlp_act", rows, layers, max_rows, dtype=None)  # widened tile by tile when scored
    for (positions, resid), (act_positions, act) in zip(resid_blocks, act_blocks, strict=True):
        if not np.array_equal(positions, act_positions):
            raise RuntimeError("resid_pre_mlp and mlp_act are chunked differently; the store is inconsistent")
        yield positions, resid, act


# ---------------------------------------------------------------- tables
def _ranking_order(scores: np.ndarray) -> np.ndarray:
    """Flat indices into scores (n_layers, d_mlp) by score descending; ties go to the lower layer, then neuron."""
    flat = scores.ravel()
    return np.lexsort((np.arange(flat.size), -flat))


def _ranking_table(settings: DetectSettings, scores: np.ndarray) -> pa.Table:
    best = _ranking_order(scores)[: settings.top]
    d_mlp = scores.shape[1]
    n = len(best)
    return pa.table({
        "set_id": _same(settings.set_id, n), "analysis_id": _same(settings.analysis_id, n),
        "lang": _same(settings.lang, n), "type": np.full(n, settings.type, np.int8),
        "split": _same(settings.split, n), "where_sql": _same(settings.where, n),
        "dist": _same(settings.dist, n), "layer_start": np.full(n, settings.layer_start, np.int32),
        "layer_end": np.full(n, settings.layer_end, np.int32), "top": np.full(n, settings.top, np.int32),
        "rank": np.arange(1, n + 1, dtype=np.int32),
        "layer": (settings.layer_start + best // d_mlp).astype(np.int32),
        "neuron": (best % d_mlp).astype(np.int32),
        "score": scores.ravel()[best],
    })


def _scores_table(settings: DetectSettings, n_sentences: int, scores: np.ndarray) -> pa.Table:
    n_layers, d_mlp = scores.shape
    n = scores.size
    return pa.table({
        "analysis_id": _same(settings.analysis_id, n), "lang": _same(settings.lang, n),
        "type": np.full(n, settings.type, np.int8), "split": _same(settings.split, n),
        "where_sql": _same(settings.where, n), "dist": _same(settings.dist, n),
        "layer_start": np.full(n, settings.layer_start, np.int32), "layer_end": np.full(n, settings.layer_end, np.int32),
        "n_sentences": np.full(n, n_sentences, np.int64),
        "layer": np.repeat(np.arange(settings.layer_start, settings.layer_start + n_layers, dtype=np.int32), d_mlp),
        "neuron": np.tile(np.arange(d_mlp, dtype=np.int32), n_layers),
        "score": scores.ravel(),
    })


def _centroid_table(settings: DetectSettings, selection: Selection, centroids: np.ndarray) -> pa.Table:
    layers = np.arange(settings.layer_start, settings.layer_end, dtype=np.int32)
    n = len(layers)
    shared = settings.type == 1
    count = len(selection.pair_en_rows) if shared else len(selection.scored_rows)
    return pa.table({
        "analysis_id": _same(settings.analysis_id, n), "lang": _same(settings.lang, n),
        "type": np.full(n, settings.type, np.int8), "split": _same(settings.split, n),
        "where_sql": _same(settings.where, n), "target": _same("shared" if shared else "L2", n), "layer": layers, "hidden_index": layers + 1,
        "n": np.full(n, count, np.int64),
        "centroid": pa.FixedSizeListArray.from_arrays(centroids.astype(np.float32).ravel(), centroids.shape[1])
                    .cast(pa.list_(pa.float32())),
    })


# ---------------------------------------------------------------- helpers
def _same(value: str, n: int) -> pa.Array:
    """A string column holding `value` n times, built in Arrow (a Python list of n strings costs milliseconds)."""
    return pa.array([value], pa.string()).take(np.zeros(n, dtype=np.int32))


def _explain_missing_lang(store: Store, sel: "S.Selection", settings: DetectSettings) -> None:
    """Why no `lang` sentence can be scored among those the selection picked."""
    lang, split = settings.lang, settings.split
    everything = store.read_table("sentences", ["lang", "split", "kind", "ablation"])
    col = {name: everything[name].to_numpy(zero_copy_only=False) for name in everything.column_names}
    langs = sorted(set(col["lang"].tolist()))
    if lang not in langs:
        raise ArgumentError("lang", f"{{arg}} {lang}: the store has no {lang} sentences (it has: "
                                    f"{', '.join(langs) or 'none'})")
    scorable = (col["lang"] == lang) & (col["kind"] != "nonparallel") & S.is_null(col["ablation"])
    splits = sorted(set(col["split"][scorable].tolist()))
    if settings.where != DEFAULT_WHERE and split in splits:
        raise ArgumentError("where", f"{{arg}} {settings.where!r} leaves no {lang} sentences to score in split "
                                     f"{split}; loosen it")
    found = f"splits with {lang}: {', '.join(splits)}" if splits else f"only nonparallel {lang} sentences are captured"
    raise ArgumentError("split", f"{{arg}} {split}: no {lang} sentences to score in split {split} ({found}); "
                                 "pass another {arg}")

"""Per-group sufficient statistics of every neuron: one streaming pass over a per-sentence array (`mlp_act`).

For each (group, layer, neuron) the pass accumulates, in float64,

    n       sentences in the group
    shift   a per-group, per-neuron offset: the group's first row in the pass
    sum     Σ (x - shift)
    sumsq   Σ (x - shift)²

from which the group's mean (shift + sum/n) and centred sum of squares (sumsq - sum²/n) follow without the
cancellation that raw Σx² - (Σx)²/n suffers when a neuron's mean dwarfs its spread. Everything the correlation
ratio and the one-way ANOVA need is a function of these numbers, so they are computed once and kept as a table.

The sums are one compiled pass per block (tnstore.kernels.group_sums) on all cores, while a reader thread
decompresses the next block. Optionally the same pass gathers a few neurons' raw activations (for rank
statistics such as Mann-Whitney U). Memory is bounded by a few blocks of rows of one layer and the accumulators
(G × L × D float64, three times).

With a scheduler (tnstore.compute.cluster) the pass runs as chunk tasks, (layer, span of rows) each, on the
cluster's workers: each task sums its rows exactly as the local pass does, with its groups' first rows as shifts;
partials are merged in a tree, re-expressed around the shift of the partial holding the group's lower first row
(Σ(x - b) = Σ(x - a) + n(a - b), Σ(x - b)² = Σ(x - a)² + 2(a - b)Σ(x - a) + n(a - b)²), so the result has the
local pass's shifts (each group's first row) and its sums up to float64 rounding of the reordered additions.
A worker holds one block of rows of one layer and one task's (G, D) accumulators at a time.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from tnstore.errors import TnstoreError
from tnstore.compute.prefetch import prefetched
from tnstore.store.store import Store, as_dtype

if TYPE_CHECKING:
    from tnstore.compute.cluster import SchedulerLike

COLUMN_CHUNK = 512  # columns per parallel work item of the compiled pass: its accumulator rows stay in L1/L2
TASK_ROWS = 2048  # rows per chunk task on a cluster: a few blocks, so task overhead stays small next to the sums
NO_ROW = np.iinfo(np.int64).max  # a partial's first row of a group it has not seen


@dataclass(frozen=True)
class GroupMoments:
    """Shifted sums of one array per group.

    n: (G,) int64. shift, sum, sumsq: (G, L, D) float64, over the layers streamed (in the order asked).
    A group with no rows has n = 0 and zeros elsewhere.
    """

    n: np.ndarray
    shift: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray


def group_moments(
    store: Store,
    rows: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    layers: Iterable[int],
    *,
    array: str = "mlp_act",
    gather: np.ndarray | None = None,
    max_rows: int = 256,
    on_block: Callable[[int], None] | None = None,
    prefetch: bool = True,
    workers: int | None = None,
    scheduler: "SchedulerLike" = None,
) -> tuple[GroupMoments, np.ndarray | None]:
    """Stream `array[rows, layer]` for every layer once and accumulate per-group moments.

    rows: (N,) store rows; codes: (N,) group index in [0, n_groups) of each row.
    gather: optional (K, 2) int array of (layer, neuron) pairs whose activations are also returned, as an
    (N, K) float32 matrix in the order of `rows` (None when not asked for).
    on_block(n_rows) is called after each block, for progress reporting.
    prefetch: read the next block in a background thread while this one is summed.
    workers: threads of the compiled pass (default: numba's, one per CPU).
    scheduler: run the pass as chunk tasks on this cluster (module docstring); None: in this process.
    """
    rows = np.asarray(rows, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    layers = [int(layer) for layer in layers]
    if scheduler is not None:
        return _group_moments_on(scheduler, store, rows, codes, n_groups, layers, array, gather, max_rows, on_block)
    d = store.segments()[0].reader(array).shape[-1]
    # Layer-major while summing, so each layer's (G, D) accumulators are contiguous for the compiled loops.
    shape = (len(layers), n_groups, d)
    shift, total, total_sq = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    shifted = np.zeros((len(layers), n_groups), dtype=bool)  # whether group g's shift is fixed in layer i
    gathered = None if gather is None else np.empty((len(rows), len(gather)), dtype=np.float32)
    blocks = ((i, layer, positions, block) for i, layer in enumerate(layers)
              for positions, block in store.iter_rows(array, rows, layer, max_rows, dtype=None))
    with _threads(workers):
        for i, layer, positions, block in (prefetched(blocks) if prefetch else blocks):
            block = np.ascontiguousarray(block)
            _accumulate(block, codes[positions], shift[i], shifted[i], total[i], total_sq[i])
            if gathered is not None:
                _gather_block(gathered, gather, layer, positions, block)
            if on_block is not None:
                on_block(len(positions))
    return _finish(array, layers, codes, n_groups, shift, total, total_sq), gathered


def _accumulate(block: np.ndarray, block_codes: np.ndarray, shift: np.ndarray, shifted: np.ndarray,
                total: np.ndarray, total_sq: np.ndarray) -> None:
    """Add a C-contiguous block (B, D) of one layer, rows of groups `block_codes` (B,), into that layer's (G, D)
    accumulators; groups seen for the first time get their first row as shift."""
    from tnstore.kernels import group_sums  # compiled on first use: keep numba out of every CLI start-up

    _fix_shifts(block, block_codes, shift, shifted)
    runs = _runs(block_codes)
    if block.dtype == np.float16:
        group_sums.add_float16(block.view(np.int16), *runs, shift, total, total_sq, COLUMN_CHUNK)
    else:
        group_sums.add_float(block, *runs, shift, total, total_sq, COLUMN_CHUNK)


def _finish(array: str, layers: list[int], codes: np.ndarray, n_groups: int, shift: np.ndarray, total: np.ndarray,
            total_sq: np.ndarray) -> GroupMoments:
    """GroupMoments from layer-major (L, G, D) accumulators, refusing non-finite sums (a damaged store)."""
    if not np.isfinite(total_sq).all():
        bad = layers[int(np.flatnonzero(~np.isfinite(total_sq).all(axis=(1, 2)))[0])]
        raise TnstoreError(f"array {array} holds inf or nan in layer {bad}; the store is damaged: capture it again")
    n = np.bincount(codes, minlength=n_groups).astype(np.int64)
    group_major = [np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (shift, total, total_sq)]
    return GroupMoments(n, *group_major)


# ------------------------------------------------------------------------------------------------ on a cluster
@dataclass(frozen=True)
class MomentsTask:
    """One chunk task: rows (n,) ascending of one span, their group codes (n,), of one layer; and the neurons
    of that layer to gather (neurons (K,), cols (K,) their columns in the gathered matrix), with positions (n,)
    of the rows in the whole selection."""

    ref: str
    array: str
    layer: int
    rows: np.ndarray
    codes: np.ndarray
    positions: np.ndarray
    n_groups: int
    max_rows: int
    neurons: np.ndarray
    cols: np.ndarray


@dataclass(frozen=True)
class MomentsPartial:
    """Shifted sums of some rows of one layer: n, first (G,) int64 (a group's lowest row seen, NO_ROW if none);
    shift, sum, sumsq (G, D) float64; gathered pieces (positions, cols, values (n, K))."""

    n: np.ndarray
    first: np.ndarray
    shift: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray
    gathered: tuple


def moments_chunk(task: MomentsTask) -> MomentsPartial:
    """A task's shifted sums, computed as the local pass computes them (a worker's share of the pass)."""
    from tnstore.compute.cluster import worker_store

    store = worker_store(task.ref)
    shift = total = total_sq = None
    shifted = np.zeros(task.n_groups, dtype=bool)
    pieces = []
    for positions, block in store.iter_rows(task.array, task.rows, task.layer, task.max_rows, dtype=None):
        if shift is None:
            shift, total, total_sq = (np.zeros((task.n_groups, block.shape[1])) for _ in range(3))
        block = np.ascontiguousarray(block)
        _accumulate(block, task.codes[positions], shift, shifted, total, total_sq)
        if len(task.neurons):
            pieces.append((task.positions[positions], task.cols, as_dtype(block[:, task.neurons], np.float32)))
    first = np.full(task.n_groups, NO_ROW, dtype=np.int64)
    np.minimum.at(first, task.codes, task.rows)
    n = np.bincount(task.codes, minlength=task.n_groups).astype(np.int64)
    return MomentsPartial(n, first, shift, total, total_sq, tuple(pieces))


def merge_moments(a: MomentsPartial, b: MomentsPartial) -> MomentsPartial:
    """Both partials' sums around the shift of whichever holds each group's lower first row (module docstring)."""
    take_b = (b.first < a.first)[:, None]
    shift = np.where(take_b, b.shift, a.shift)
    sums, squares = [], []
    for part in (a, b):
        delta = part.shift - shift  # zero where this partial's shift is kept, or where it has no rows
        n = part.n[:, None].astype(np.float64)
        sums.append(part.sum + n * delta)
        squares.append(part.sumsq + 2.0 * delta * part.sum + n * delta * delta)
    return MomentsPartial(a.n + b.n, np.minimum(a.first, b.first), shift, sums[0] + sums[1],
                          squares[0] + squares[1], a.gathered + b.gathered)


def _group_moments_on(scheduler: "SchedulerLike", store: Store, rows: np.ndarray, codes: np.ndarray, n_groups: int,
                      layers: list[int], array: str, gather: np.ndarray | None, max_rows: int,
                      on_block: Callable[[int], None] | None) -> tuple[GroupMoments, np.ndarray | None]:
    """group_moments as chunk tasks on a cluster (module docstring)."""
    from tnstore.compute import cluster
    from tnstore.kernels.tasks import row_spans

    ref = cluster.store_ref(store)
    pairs = None if gather is None else np.asarray(gather, dtype=np.int64).reshape(-1, 2)
    spans = row_spans(store, array, rows, max(TASK_ROWS, max_rows))
    groups = []
    for layer in layers:
        cols = np.empty(0, np.int64) if pairs is None else np.flatnonzero(pairs[:, 0] == layer)
        neurons = np.empty(0, np.int64) if pairs is None else pairs[cols, 1]
        groups.append([MomentsTask(ref, array, layer, rows[span], codes[span], span, n_groups, max_rows,
                                   neurons, cols) for span in spans])
    with cluster.session(scheduler) as client:
        partials = cluster.map_reduce(client, groups, moments_chunk, merge_moments)
    shift, total, total_sq = (np.stack([getattr(p, name) for p in partials]) for name in ("shift", "sum", "sumsq"))
    gathered = None
    if pairs is not None:
        gathered = np.empty((len(rows), len(pairs)), dtype=np.float32)
        for part in partials:
            for positions, cols, values in part.gathered:
                gathered[np.ix_(positions, cols)] = values
    if on_block is not None:
        on_block(len(rows) * len(layers))
    return _finish(array, layers, codes, n_groups, shift, total, total_sq), gathered


def gather_columns(store: Store, rows: np.ndarray, pairs: np.ndarray, *, array: str = "mlp_act",
                   max_rows: int = 256) -> np.ndarray:
    """Activations of a few neurons: (N, K) float32 for `pairs` (K, 2) of (layer, neuron), in the order of `rows`."""
    rows = np.asarray(rows, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty((len(rows), len(pairs)), dtype=np.float32)
    for layer in np.unique(pairs[:, 0]):
        for positions, block in store.iter_rows(array, rows, int(layer), max_rows, dtype=None):
            _gather_block(out, pairs, int(layer), positions, block)
    return out


def _runs(block_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The block's rows sorted by group, and the runs of one group in that order: (order, group, start, end)."""
    order = np.argsort(block_codes, kind="stable")
    sorted_codes = block_codes[order]
    start = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    end = np.r_[start[1:], len(sorted_codes)]
    return order, sorted_codes[start], start, end


def _fix_shifts(block: np.ndarray, block_codes: np.ndarray, shift: np.ndarray, shifted: np.ndarray) -> None:
    """A group seen for the first time in this layer gets its first row as its shift (G, D): within a spread
    or so of its mean, so the shifted sums stay small and sumsq - sum²/n does not cancel, at no cost."""
    groups, first = np.unique(block_codes, return_index=True)
    for g, row in zip(groups, first):
        if not shifted[g]:
            shift[g] = as_dtype(block[row], np.float32)
            shifted[g] = True


@contextmanager
def _threads(workers: int | None) -> Iterator[None]:
    """numba's thread count for the block, restored after."""
    if workers is None:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(workers, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _gather_block(out: np.ndarray, pairs: np.ndarray, layer: int, positions: np.ndarray, block: np.ndarray) -> None:
    cols = np.flatnonzero(pairs[:, 0] == layer)
    if len(cols):
        out[np.ix_(positions, cols)] = block[:, pairs[cols, 1]]

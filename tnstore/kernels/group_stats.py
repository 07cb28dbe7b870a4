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
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from tnstore.errors import TnstoreError
from tnstore.compute.prefetch import prefetched
from tnstore.store.store import Store, as_dtype

COLUMN_CHUNK = 512  # columns per parallel work item of the compiled pass: its accumulator rows stay in L1/L2


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
) -> tuple[GroupMoments, np.ndarray | None]:
    """Stream `array[rows, layer]` for every layer once and accumulate per-group moments.

    rows: (N,) store rows; codes: (N,) group index in [0, n_groups) of each row.
    gather: optional (K, 2) int array of (layer, neuron) pairs whose activations are also returned, as an
    (N, K) float32 matrix in the order of `rows` (None when not asked for).
    on_block(n_rows) is called after each block, for progress reporting.
    prefetch: read the next block in a background thread while this one is summed.
    workers: threads of the compiled pass (default: numba's, one per CPU).
    """
    from tnstore.kernels import group_sums  # compiled on first use: keep numba out of every CLI start-up

    rows = np.asarray(rows, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    layers = [int(layer) for layer in layers]
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
            block_codes = codes[positions]
            _fix_shifts(block, block_codes, shift[i], shifted[i])
            runs = _runs(block_codes)
            if block.dtype == np.float16:
                group_sums.add_float16(block.view(np.int16), *runs, shift[i], total[i], total_sq[i], COLUMN_CHUNK)
            else:
                group_sums.add_float(block, *runs, shift[i], total[i], total_sq[i], COLUMN_CHUNK)
            if gathered is not None:
                _gather_block(gathered, gather, layer, positions, block)
            if on_block is not None:
                on_block(len(positions))
    if not np.isfinite(total_sq).all():
        bad = layers[int(np.flatnonzero(~np.isfinite(total_sq).all(axis=(1, 2)))[0])]
        raise TnstoreError(f"array {array} holds inf or nan in layer {bad}; the store is damaged: capture it again")
    n = np.bincount(codes, minlength=n_groups).astype(np.int64)
    group_major = [np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (shift, total, total_sq)]
    return GroupMoments(n, *group_major), gathered


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

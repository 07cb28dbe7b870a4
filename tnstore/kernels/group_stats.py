"""Per-group sufficient statistics of every neuron: one streaming pass over a per-sentence array (`mlp_act`).

For each (group, layer, neuron) the pass accumulates, in float64,

    n       sentences in the group
    shift   a per-group, per-neuron offset: the group's mean over the rows of its first block
    sum     Σ (x - shift)
    sumsq   Σ (x - shift)²

from which the group's mean (shift + sum/n) and centred sum of squares (sumsq - sum²/n) follow without the
cancellation that raw Σx² - (Σx)²/n suffers when a neuron's mean dwarfs its spread. Everything the correlation
ratio and the one-way ANOVA need is a function of these numbers, so they are computed once and kept as a table.

Optionally the same pass gathers a few neurons' raw activations (for rank statistics such as Mann-Whitney U).
Memory is bounded by a few blocks of rows of one layer (the one being summed, its group-sorted float32 copy, the
next ones read ahead), a float64 column strip per worker, and the accumulators (G × L × D float64, three times).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from tnstore.kernels.buffers import Scratch
from tnstore.kernels.prefetch import prefetched
from tnstore.store.store import Store

STRIP_COLUMNS = 2048


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
    workers: threads that sum column slices of a block (default: one per CPU, at most 4); numpy releases the
    GIL in every step, so reading and summing share the cores instead of taking turns.
    """
    rows = np.asarray(rows, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    layers = [int(layer) for layer in layers]
    d = store.segments()[0].array(array).shape[-1]
    shape = (n_groups, len(layers), d)
    shift, total, total_sq = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    shifted = np.zeros((n_groups, len(layers)), dtype=bool)  # whether group g's shift is fixed in layer i
    gathered = None if gather is None else np.empty((len(rows), len(gather)), dtype=np.float32)
    blocks = ((i, layer, positions, block) for i, layer in enumerate(layers)
              for positions, block in store.iter_rows(array, rows, layer, max_rows, dtype=None))
    workers = workers or min(4, os.cpu_count() or 1)
    # Column strips small enough that a strip's float64 copy stays in cache while it is summed.
    spans = [(a, min(a + STRIP_COLUMNS, d)) for a in range(0, d, STRIP_COLUMNS)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tnstore-sum") as pool, _one_torch_thread():
        for i, layer, positions, block in (prefetched(blocks) if prefetch else blocks):
            order, runs = _runs(codes[positions])
            first = ~shifted[:, i]
            jobs = [pool.submit(_add_strip, block[:, a:b], order, runs, first, shift[:, i, a:b], total[:, i, a:b],
                                total_sq[:, i, a:b]) for a, b in spans]
            for job in jobs:
                job.result()
            shifted[[g for g, _, _ in runs], i] = True
            if gathered is not None:
                _gather_block(gathered, gather, layer, positions, block)
            if on_block is not None:
                on_block(len(positions))
    n = np.bincount(codes, minlength=n_groups).astype(np.int64)
    return GroupMoments(n, shift, total, total_sq), gathered


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


_scratch = Scratch()


def _runs(block_codes: np.ndarray) -> tuple[np.ndarray | None, list[tuple[int, int, int]]]:
    """The row order that sorts a block by group (None if it already is), and the runs of equal group in that
    order as (group, first row, end row)."""
    order = np.argsort(block_codes, kind="stable")
    sorted_codes = block_codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(sorted_codes)]
    runs = [(int(sorted_codes[a]), int(a), int(b)) for a, b in zip(starts, ends)]
    return (None if np.array_equal(order, np.arange(len(order))) else order), runs


def _add_strip(columns: np.ndarray, order: np.ndarray | None, runs: list[tuple[int, int, int]], first: np.ndarray,
               shift: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> None:
    """Add a block's columns (B, w) into the (G, w) views, one run of same-group rows at a time.

    Every copy is of one strip, so it stays in this core's cache. first[g]: group g has no shift yet in this
    layer; its mean over this block becomes the shift (a good guess of the final mean, so the shifted sums stay
    small and their squares do not cancel).
    """
    if order is not None:
        columns = np.take(columns, order, axis=0, out=_scratch.get("rows", columns.shape, columns.dtype), mode="clip")
    # float16/float32 values and their squares are exact in float64, so only the sums round.
    x = _scratch.get("x", columns.shape, np.float64)
    np.copyto(x, _widened(columns))
    for g, a, b in runs:
        part = x[a:b]
        if first[g]:
            shift[g] = part.mean(axis=0)
        part -= shift[g]
        total[g] += part.sum(axis=0)
        total_sq[g] += np.einsum("ij,ij->j", part, part)


def _widened(columns: np.ndarray) -> np.ndarray:
    """float16 -> float32 (exact). numpy converts float16 one element at a time (~1-2 ns a value, more than all
    the summing); torch, a dependency anyway, uses the CPU's F16C instructions (~0.1 ns)."""
    if columns.dtype != np.float16:
        return columns
    import torch

    out = _scratch.get("wide", columns.shape, np.float32)
    torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(columns)))
    return out


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The summing workers are the parallelism; torch must not start a thread team inside each of them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gather_block(out: np.ndarray, pairs: np.ndarray, layer: int, positions: np.ndarray, block: np.ndarray) -> None:
    cols = np.flatnonzero(pairs[:, 0] == layer)
    if len(cols):
        out[np.ix_(positions, cols)] = block[:, pairs[cols, 1]]



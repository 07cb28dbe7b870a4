"""Cutting a streaming pass into chunk tasks for a cluster (tnstore.compute.cluster), and the chunk tasks that
several kernels share.

A task reads a span of the selected rows: whole chunks of one segment, cut exactly as `Store.iter_rows` cuts its
reads, so a task of `max_rows` rows computes what one block of the local pass computes. Tasks carry the store's
path or URL (`ref`), never arrays of the store: each worker reads its own rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tnstore.compute.cluster import worker_store
from tnstore.store.store import Store


def row_spans(store: Store, array: str, rows: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """Positions into `rows` of each read `store.iter_rows(array, rows, ..., max_rows)` makes, in its order
    (ascending store rows, one segment per span, whole chunks of `max_rows` rows or fewer where a segment ends).
    Every position appears in exactly one span."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    spans = []
    for seg in store.segments():
        lo, hi = np.searchsorted(sorted_rows, [seg.row_start, seg.row_end])
        if lo == hi:
            continue
        chunk = seg.reader(array).chunks[0]
        local = sorted_rows[lo:hi] - seg.row_start
        start = lo
        while start < hi:
            span_end = local[start - lo] + max(chunk, (max_rows // chunk) * chunk)
            stop = lo + int(np.searchsorted(local, span_end))
            spans.append(order[start:stop])
            start = stop
    return spans


@dataclass(frozen=True)
class SumsTask:
    """Per-group float64 sums of `array[rows, second]` over some rows: rows (n,), codes (n,) in [0, n_groups)."""

    ref: str
    array: str
    second: int | slice | None
    rows: np.ndarray
    codes: np.ndarray
    n_groups: int
    max_rows: int = 512


@dataclass(frozen=True)
class Sums:
    """sums (G, ...) float64 and counts (G,) int64 of one or more SumsTasks."""

    sums: np.ndarray
    counts: np.ndarray


def group_sums_chunk(task: SumsTask) -> Sums:
    """One task's per-group sums, read in blocks of `max_rows` rows and summed per block in float64."""
    store = worker_store(task.ref)
    total = None
    for positions, block in store.iter_rows(task.array, task.rows, task.second, task.max_rows):
        if total is None:
            total = np.zeros((task.n_groups,) + block.shape[1:])
        codes = task.codes[positions]
        for g in np.unique(codes):
            total[g] += block[codes == g].sum(axis=0, dtype=np.float64)
    return Sums(total, np.bincount(task.codes, minlength=task.n_groups).astype(np.int64))


def add_sums(a: Sums, b: Sums) -> Sums:
    return Sums(a.sums + b.sums, a.counts + b.counts)

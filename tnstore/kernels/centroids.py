"""Per-layer language centroids (method §4, Eq. 5 and Eq. 6), streamed from the store's `hidden` array.

As in the authors' code, the centroid for 0-based decoder layer `l` is the mean of HF's `hidden_states[l + 1]`
(the output of that layer), so the last layer's centroid is taken after the final norm.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from tnstore.store.store import Store

if TYPE_CHECKING:
    from tnstore.compute.cluster import SchedulerLike

TASK_ROWS = 2048  # rows per chunk task on a cluster


def stream_mean(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """Mean over the rows (axis 0) of streamed blocks, each (n_block, ...); returns (mean (...) float64, rows seen).

    Summed in float64: a float32 running sum over 1k rows of outlier-heavy states loses the 1e-7 digits
    that neuron scores live in.
    """
    total: np.ndarray | None = None
    count = 0
    for block in blocks:
        part = block.sum(axis=0, dtype=np.float64)
        total = part if total is None else total + part
        count += block.shape[0]
    if total is None or count == 0:
        raise ValueError("stream_mean needs at least one row")
    return total / count, count


def hidden_mean(store: Store, rows: np.ndarray, layers: range, max_rows: int = 512) -> np.ndarray:
    """Eq. 5 for decoder layers `layers` (consecutive): mean of `hidden[rows, l + 1]`; shape (len(layers), d) float64.

    One streamed read covers all the layers (a Zarr call per layer costs milliseconds of overhead).
    """
    hidden_index = slice(layers.start + 1, layers.stop + 1)
    mean, _ = stream_mean(block for _, block in store.iter_rows("hidden", rows, hidden_index, max_rows))
    return mean


def shared_centroid(
    store: Store, en_rows: np.ndarray, l2_rows: np.ndarray, layers: range, max_rows: int = 512,
) -> np.ndarray:
    """Eq. 6 for decoder layers `layers`: mean over parallel pairs of the pair mean (h_en + h_L2) / 2; (len(layers), d).

    `en_rows[k]` and `l2_rows[k]` are the two sides of pair k. Every pair contributes exactly one row per side, so
    the mean of pair means is the plain mean over both sides' rows: one streamed read instead of two (the sides
    are interleaved in the store, so each side's read would decompress the other's chunks too).
    """
    if len(en_rows) != len(l2_rows):
        raise ValueError("en_rows and l2_rows must list the two sides of the same pairs")
    return hidden_mean(store, np.concatenate([en_rows, l2_rows]), layers, max_rows)


def group_means_on(scheduler: "SchedulerLike", store: Store, array: str, rows: np.ndarray, codes: np.ndarray,
                   n_groups: int, indices: Sequence[int], max_rows: int = 512) -> np.ndarray:
    """Per group mean of `array[rows, i]` for each index i, as chunk tasks on a cluster (tnstore.compute.cluster):
    (len(indices), n_groups, width) float64, summed in float64 per block, blocks added in a tree.

    rows (N,), codes (N,) in [0, n_groups); every group needs at least one row.
    """
    from tnstore.compute import cluster
    from tnstore.kernels.tasks import SumsTask, add_sums, group_sums_chunk, row_spans

    ref = cluster.store_ref(store)
    rows, codes = np.asarray(rows, dtype=np.int64), np.asarray(codes, dtype=np.int64)
    spans = row_spans(store, array, rows, max(TASK_ROWS, max_rows))
    with cluster.session(scheduler) as client:
        parts = cluster.map_reduce(client, [[SumsTask(ref, array, int(i), rows[span], codes[span], n_groups, max_rows)
                                             for span in spans] for i in indices], group_sums_chunk, add_sums)
    return np.stack([part.sums / part.counts[:, None] for part in parts])

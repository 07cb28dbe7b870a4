"""Splitting elementwise work over the CPU's cores.

numpy's elementwise loops run on one core while BLAS products use all of them; between products the other cores
would idle. numpy releases the GIL inside its loops, so plain threads over contiguous slices run in parallel.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")
MIN_ITEMS_PER_THREAD = 8  # below this a slice's work does not pay for handing it to another thread

_pool: ThreadPoolExecutor | None = None
_inside = threading.local()  # set in threads running a slice: a nested call runs serially (no deadlock)


def workers() -> int:
    """Threads tnstore's own parallel loops use: $TNSTORE_THREADS, else every core this process may run on."""
    return configured_threads() or available_cores()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def configured_threads() -> int | None:
    """$TNSTORE_THREADS as a positive int, or None when it is unset or not a positive number."""
    value = os.environ.get("TNSTORE_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def over_slices(n: int, fn: Callable[[int, int], T], min_items: int = MIN_ITEMS_PER_THREAD) -> list[T]:
    """[fn(lo, hi) for each of up to `workers()` contiguous slices of range(n)], the slices run in threads.

    fn must only write to disjoint parts of shared arrays (its own slice) and release the GIL in heavy steps.
    """
    global _pool
    parts = max(1, min(workers(), n // max(1, min_items)))
    if parts == 1 or getattr(_inside, "slice", False):  # nested: the outer call already uses every core
        return [fn(0, n)]
    bounds = [n * k // parts for k in range(parts + 1)]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="tnstore-slice",
                                   initializer=_mark_inside)
    futures = [_pool.submit(fn, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    _inside.slice = True
    try:
        first = fn(bounds[0], bounds[1])  # this thread takes the first slice instead of waiting
    finally:
        _inside.slice = False
    return [first] + [f.result() for f in futures]


def _mark_inside() -> None:
    _inside.slice = True

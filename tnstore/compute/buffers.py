"""Reusing large arrays instead of allocating fresh ones.

A fresh multi-MB numpy array comes from mmap, so its first touch costs a page fault per 4 KiB page; in a VM that
is 0.1-0.7 ms per MB, as long as the arithmetic on it for a LLaMA-8B layer's 235 MB of value vectors.
"""
from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np


class Scratch(threading.local):
    """Per-thread buffers, one per name, grown to the largest shape asked for and then reused.

    What `get` returns is only valid until the same thread asks for the same name again.
    """

    def get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        size = int(np.prod(shape))
        buf = getattr(self, name, None)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            setattr(self, name, buf)
        return buf[:size].reshape(shape)


class Recycler:
    """Arrays passed from a producer thread to a consumer and handed back when it is done with them.

    `take` returns a free array of that shape and dtype (or a new one); `give` makes an array free again.
    Thread-safe; the caller guarantees that nothing uses an array after giving it back.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[np.ndarray]] = defaultdict(list)
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str)
        with self._lock:
            if self._free[key]:
                return self._free[key].pop()
        return np.empty(shape, dtype=dtype)

    def give(self, *arrays: np.ndarray) -> None:
        with self._lock:
            for array in arrays:
                self._free[(array.shape, array.dtype.str)].append(array)

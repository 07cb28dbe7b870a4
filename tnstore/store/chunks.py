"""Reading the store's Zarr v3 arrays chunk by chunk, straight from their files.

Why not zarr-python for reads: its async codec pipeline costs about a millisecond per chunk plus two copies of
every chunk, which is most of a detection on a small model and twice the decompression time on a large one.
The store writes one simple layout (regular chunk grid, default "/" chunk keys, a little-endian `bytes` codec then
Blosc, no sharding), and a chunk of it is one file: this reader maps the file and lets Blosc decompress it
straight into the destination array. Any array written otherwise (another tool, a later layout) is read through
zarr-python instead: `ChunkReader.open` returns None for it.

Only the first two axes may be split into chunks (rows, and layers); the store never chunks the others.
"""
from __future__ import annotations

import json
import mmap
import sys
from pathlib import Path

import numpy as np
from numcodecs import blosc

from tnstore.compute.parallel import over_slices
from tnstore.compute.buffers import Scratch

_scratch = Scratch()

# Blosc's own thread team would compete with BLAS and with our reader threads on small machines; decompression
# already runs in a background thread wherever it matters.
blosc.use_threads = False

_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


class ChunkReader:
    """Read-only access to one array: `read(a, b, second)` is `array[a:b]` or `array[a:b, second]`."""

    def __init__(self, path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype, fill_value):
        self.path = path
        self.shape = shape
        self.chunks = chunks
        self.dtype = dtype
        self.fill_value = fill_value

    @classmethod
    def open(cls, path: str | Path) -> "ChunkReader | None":
        """A reader for the Zarr v3 array at `path`, or None if it is not in the layout this reader decodes."""
        path = Path(path)
        try:
            meta = json.loads((path / "zarr.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not _simple_layout(meta):
            return None
        shape = tuple(int(s) for s in meta["shape"])
        chunks = tuple(int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"])
        if len(shape) < 2 or len(chunks) != len(shape) or any(c != s for c, s in zip(chunks[2:], shape[2:])):
            return None
        fill = meta.get("fill_value", 0)
        return cls(path, shape, chunks, np.dtype(meta["data_type"]), 0 if fill is None else fill)

    def read(self, a: int, b: int, second: int | slice | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Rows a..b-1, and of axis 1 the index or unit-step slice `second` (None: all of it).

        Written into `out` if given (C-contiguous, the result's shape before an int `second` drops axis 1, the
        array's dtype), else into a new array.
        """
        if not 0 <= a <= b <= self.shape[0]:
            raise IndexError(f"rows {a}:{b} out of range for {self.shape[0]} rows")
        squeeze = isinstance(second, (int, np.integer))
        lo, hi = _axis1_span(second, self.shape[1])
        shape = (b - a, hi - lo) + self.shape[2:]
        if out is None:
            out = np.empty(shape, dtype=self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {self.dtype} of shape {shape}")
        rows_per_chunk, cols_per_chunk = self.chunks[0], self.chunks[1]
        coords = [(rc, lc) for rc in range(a // rows_per_chunk, -(-b // rows_per_chunk))
                  for lc in range(lo // cols_per_chunk, -(-hi // cols_per_chunk))]

        def decode(first: int, end: int) -> None:  # chunks first..end-1 of `coords`; on the cores in parallel
            for rc, lc in coords[first:end]:
                r0, r1 = max(a, rc * rows_per_chunk), min(b, (rc + 1) * rows_per_chunk)
                c0, c1 = max(lo, lc * cols_per_chunk), min(hi, (lc + 1) * cols_per_chunk)
                dest = out[r0 - a : r1 - a, c0 - lo : c1 - lo]
                if dest.shape == self.chunks and dest.flags.c_contiguous:
                    self._decode((rc, lc), dest)  # a whole chunk lands in place: no copy
                else:  # decoded into this thread's reused buffer (a fresh one costs a page fault per 4 KiB)
                    chunk = _scratch.get("chunk", self.chunks, self.dtype)
                    self._decode((rc, lc), chunk)
                    dest[...] = chunk[r0 - rc * rows_per_chunk : r1 - rc * rows_per_chunk,
                                      c0 - lc * cols_per_chunk : c1 - lc * cols_per_chunk]

        over_slices(len(coords), decode, min_items=1)
        return out[:, 0] if squeeze else out

    def _decode(self, coords: tuple[int, int], dest: np.ndarray) -> None:
        """Decompress chunk `coords` (its index on axes 0 and 1) into `dest`, C-contiguous of the chunk's shape."""
        key = "/".join(str(i) for i in coords + (0,) * (len(self.shape) - 2))
        try:
            fh = open(self.path / "c" / key, "rb")
        except FileNotFoundError:  # never written: Zarr's fill value
            dest[...] = self.fill_value
            return
        with fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            blosc.decompress(data, dest)


def _simple_layout(meta: dict) -> bool:
    """Whether array metadata is the layout this reader decodes (see the module docstring)."""
    codecs = meta.get("codecs") or []
    return (
        meta.get("zarr_format") == 3
        and meta.get("node_type") == "array"
        and meta.get("data_type") in _DTYPES
        and (meta.get("chunk_grid") or {}).get("name") == "regular"
        and (meta.get("chunk_key_encoding") or {}).get("name") == "default"
        and (meta["chunk_key_encoding"].get("configuration") or {}).get("separator", "/") == "/"
        and not meta.get("storage_transformers")
        and len(codecs) == 2
        and codecs[0].get("name") == "bytes"
        and (codecs[0].get("configuration") or {}).get("endian", "little") == sys.byteorder == "little"
        and codecs[1].get("name") == "blosc"
    )


def _axis1_span(second: int | slice | None, size: int) -> tuple[int, int]:
    if second is None:
        return 0, size
    if isinstance(second, (int, np.integer)):
        index = int(second) + (size if second < 0 else 0)
        if not 0 <= index < size:
            raise IndexError(f"index {second} out of range for axis 1 of size {size}")
        return index, index + 1
    start, stop, step = second.indices(size)
    if step != 1:
        raise ValueError("only unit-step slices are read chunk by chunk")
    return start, max(start, stop)

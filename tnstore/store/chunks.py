"""Reading the store's Zarr v3 arrays chunk by chunk, straight from their files, checking each chunk as it is read.

Why not zarr-python for reads: its async codec pipeline costs about a millisecond per chunk plus two copies of
every chunk, which is most of a detection on a small model and twice the decompression time on a large one.
The store writes one simple layout (regular chunk grid, default "/" chunk keys, a little-endian `bytes` codec then
Blosc, no sharding), and a chunk of it is one file: this reader maps the file (or fetches it, for a remote store),
checks its size and XXH3 checksum against the run's catalog and the size it decompresses to against the chunk's,
and lets Blosc decompress it straight into the destination array. Readers never invent data: a chunk that is
missing, not in the catalog, truncated or corrupt is a DamagedStoreError, never zeros. An array in any other
layout is refused (`array_layout`): a store only ever holds the layout tnstore writes, and zarr-python's
pipeline would open codecs (e.g. numcodecs' pickle) that no stored file should be able to ask for.

Only the first two axes may be split into chunks (rows, and layers); the store never chunks the others.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xxhash
from numcodecs import blosc

from tnstore.compute.buffers import Scratch
from tnstore.compute.parallel import over_slices
from tnstore.errors import DamagedStoreError
from tnstore.store.integrity import FileRecord, digest

if TYPE_CHECKING:
    from tnstore.store.files import LocalFiles, RemoteFiles

_scratch = Scratch()

# Blosc's own thread team would compete with BLAS and with our reader threads on small machines; decompression
# already runs in a background thread wherever it matters.
blosc.use_threads = False

_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
MAX_CHUNK_BYTES = 1 << 30  # a chunk the store writes is at most a few hundred MiB (one layer of down_proj)
MAX_META_BYTES = 1 << 20
BLOSC_HEADER = struct.Struct("<4xIII")
BLOSC_FORMAT = 2  # the header's version byte for c-blosc 1.x frames
BLOSC_MEMCPYED = 0x02  # header flag: the payload is the data itself, uncompressed and unshuffled
HASH_PIECE = 512 << 10  # hashed then copied while in the core's cache
# MAP_POPULATE maps every page of the chunk inside mmap() (which runs without the GIL) rather than one fault at a
# time inside the checksum or the decompression.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


@dataclass(frozen=True)
class ArraySource:
    """Where one array's files are: `files`, the array's folder `prefix` (a key), the catalog records of its files
    (keys relative to the array folder: "zarr.json", "c/0/3/0"), `unit` naming what they belong to in messages
    ("run <id>", "the model arrays"), and whether reads check each chunk (`check`)."""

    files: "LocalFiles | RemoteFiles"
    prefix: str
    records: dict[str, FileRecord]
    unit: str
    check: bool = True

    def where(self, key: str) -> str:
        return self.files.where(f"{self.prefix}/{key}")


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype


def array_layout(meta_bytes: bytes, where: str) -> Layout:
    """The shape, chunk shape and dtype of an array's zarr.json, if it is the layout this reader decodes (see the
    module docstring); anything else is a DamagedStoreError."""
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DamagedStoreError(f"{where} is not valid JSON") from None
    if not isinstance(meta, dict) or not _simple_layout(meta):
        raise DamagedStoreError(f"{where} is not an array in the layout tnstore writes (Zarr v3, regular chunks, "
                                "bytes + Blosc)")
    shape, chunks = meta.get("shape"), (meta["chunk_grid"].get("configuration") or {}).get("chunk_shape")
    if not (_int_list(shape) and _int_list(chunks) and 2 <= len(shape) <= 4 and len(chunks) == len(shape)
            and all(0 <= s < 1 << 40 for s in shape) and all(1 <= c for c in chunks)
            and all(c == s for c, s in zip(chunks[2:], shape[2:])) and chunks[1] <= max(shape[1], 1)):
        raise DamagedStoreError(f"{where}: shape {shape!r} with chunks {chunks!r} is not one tnstore writes")
    dtype = np.dtype(meta["data_type"])
    if int(np.prod(chunks, dtype=np.float64)) * dtype.itemsize > MAX_CHUNK_BYTES:
        raise DamagedStoreError(f"{where}: chunks of {chunks} values are larger than any tnstore writes")
    return Layout(tuple(shape), tuple(chunks), dtype)


def _int_list(value) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


class ChunkReader:
    """Read-only access to one array: `read(a, b, second)` is `array[a:b]` or `array[a:b, second]`."""

    def __init__(self, source: ArraySource, layout: Layout):
        self.source = source
        self.shape = layout.shape
        self.chunks = layout.chunks
        self.dtype = layout.dtype

    @classmethod
    def open(cls, source: ArraySource) -> "ChunkReader":
        """A reader for the array in `source`: its zarr.json read, checked against the catalog, and parsed."""
        payload = read_checked(source, "zarr.json", MAX_META_BYTES)
        try:
            return cls(source, array_layout(payload, source.where("zarr.json")))
        except DamagedStoreError as exc:
            raise exc.for_store(source.files.label) from None

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
        # A remote store's chunks are fetched together (concurrent requests), then decoded on the cores.
        fetched = None
        if self.source.files.remote:
            records = [self.source.records.get(self._chunk_key(c)) for c in coords]
            sizes = [r.size if r is not None else 0 for r in records]
            fetched = self.source.files.read_many([self._key_path(c) for c in coords], MAX_CHUNK_BYTES, sizes)

        def decode(first: int, end: int) -> None:  # chunks first..end-1 of `coords`; on the cores in parallel
            for i in range(first, end):
                rc, lc = coords[i]
                data = fetched[i] if fetched is not None else None
                r0, r1 = max(a, rc * rows_per_chunk), min(b, (rc + 1) * rows_per_chunk)
                c0, c1 = max(lo, lc * cols_per_chunk), min(hi, (lc + 1) * cols_per_chunk)
                dest = out[r0 - a : r1 - a, c0 - lo : c1 - lo]
                if dest.shape == self.chunks and dest.flags.c_contiguous:
                    self._decode((rc, lc), dest, data, fetched is not None)  # a whole chunk lands in place
                else:  # decoded into this thread's reused buffer (a fresh one costs a page fault per 4 KiB)
                    chunk = _scratch.get("chunk", self.chunks, self.dtype)
                    self._decode((rc, lc), chunk, data, fetched is not None)
                    dest[...] = chunk[r0 - rc * rows_per_chunk : r1 - rc * rows_per_chunk,
                                      c0 - lc * cols_per_chunk : c1 - lc * cols_per_chunk]

        over_slices(len(coords), decode, min_items=1)
        return out[:, 0] if squeeze else out

    def _chunk_key(self, coords: tuple[int, int]) -> str:
        return "c/" + "/".join(str(i) for i in coords + (0,) * (len(self.shape) - 2))

    def _key_path(self, coords: tuple[int, int]) -> str:
        return f"{self.source.prefix}/{self._chunk_key(coords)}"

    def _decode(self, coords: tuple[int, int], dest: np.ndarray, data: bytes | None, fetched: bool) -> None:
        """Check chunk `coords` (its index on axes 0 and 1) and decompress it into `dest` (C-contiguous, the
        chunk's shape). `data`: its bytes if already fetched (remote), else the local file is mapped."""
        key = self._chunk_key(coords)
        record = self.source.records.get(key)
        if record is None:
            raise DamagedStoreError(f"{self.source.where(key)}: chunk {key} of {self.source.unit} is not in its "
                                    "catalog (an incomplete run)", self.source.files.label)
        if fetched:
            if data is None:
                raise _missing(self.source, key)
            decode_checked(self.source, key, data, record, dest)
            return
        fd = self.source.files.open_fd(f"{self.source.prefix}/{key}")
        if fd is None:
            raise _missing(self.source, key)
        try:
            size = os.fstat(fd).st_size
            if size != record.size or size == 0:
                raise _bad(self.source, key, f"is {size} bytes, the catalog says {record.size} (truncated or "
                                            "replaced)")
            with mmap.mmap(fd, 0, flags=_MAP_FLAGS, prot=mmap.PROT_READ) as mapped:
                decode_checked(self.source, key, mapped, record, dest)
        finally:
            os.close(fd)


def decode_checked(source: ArraySource, key: str, data, record: FileRecord, dest: np.ndarray) -> None:
    """Check a chunk's bytes against its catalog record (size, XXH3) and its Blosc header (the size it
    decompresses to), and decompress it into `dest`; DamagedStoreError (naming the file) if anything is off.

    Float16 activations do not compress, so Blosc stores most chunks as a plain copy behind its header
    (the MEMCPYED flag) and decoding is a memory copy; such a chunk is hashed and copied piece by piece, each
    piece hashed while it is in cache, so checking adds no second pass over memory. Other frames are hashed,
    then decompressed (never decompressed before the hash matches: Blosc is not written for damaged input).
    """
    size = len(data)
    if size != record.size:
        raise _bad(source, key, f"is {size} bytes, the catalog says {record.size} (truncated or replaced)")
    if size < BLOSC_HEADER.size:
        raise _bad(source, key, "is too short to be a Blosc frame")
    # Blosc's 16-byte header (its documented frame format): version, versionlz, flags, typesize, then the
    # uncompressed size, the block size and the frame's own size, little-endian.
    expanded, _, compressed = BLOSC_HEADER.unpack_from(data)
    nbytes = dest.nbytes
    if expanded != nbytes or compressed != size:
        if source.check and digest(data) != record.xxh3:
            raise _bad(source, key, "does not match its checksum (corrupt)")
        raise _bad(source, key, f"decompresses to {expanded} bytes, the chunk holds {nbytes}")
    copied = data[0] == BLOSC_FORMAT and data[2] & BLOSC_MEMCPYED and size == BLOSC_HEADER.size + nbytes
    if not source.check:
        blosc.decompress(data, dest)
    elif copied and dest.flags.c_contiguous:
        if _hash_and_copy(data, dest) != record.xxh3:
            raise _bad(source, key, "does not match its checksum (corrupt)")
    else:
        if digest(data) != record.xxh3:
            raise _bad(source, key, "does not match its checksum (corrupt)")
        blosc.decompress(data, dest)


def _hash_and_copy(data, dest: np.ndarray) -> str:
    """XXH3-64 of a plain-copy Blosc frame, copying its payload into `dest` as it goes (see decode_checked)."""
    head = BLOSC_HEADER.size
    source = piece = np.frombuffer(data, dtype=np.uint8)
    try:
        target = dest.reshape(-1).view(np.uint8)
        state = xxhash.xxh3_64()
        state.update(source[:head])
        for start in range(0, target.size, HASH_PIECE):
            piece = source[head + start : head + start + HASH_PIECE]
            state.update(piece)
            target[start : start + piece.size] = piece
        return state.hexdigest()
    finally:
        del source, piece  # views of `data`: a mapped file cannot close while they live


def read_checked(source: ArraySource, key: str, limit: int) -> bytes:
    """A small file of the array (its zarr.json), checked against the catalog."""
    record = source.records.get(key)
    if record is None:
        raise DamagedStoreError(f"{source.where(key)}: not in the catalog of {source.unit}", source.files.label)
    data = source.files.read(f"{source.prefix}/{key}", limit)
    if data is None:
        raise _missing(source, key)
    if len(data) != record.size or digest(data) != record.xxh3:
        raise _bad(source, key, "does not match its catalog entry (truncated or corrupt)")
    return data


def _missing(source: ArraySource, key: str) -> DamagedStoreError:
    return DamagedStoreError(f"{source.where(key)}: this file of {source.unit} is missing (a partial copy?)",
                             source.files.label)


def _bad(source: ArraySource, key: str, what: str) -> DamagedStoreError:
    return DamagedStoreError(f"{source.where(key)} of {source.unit} {what}", source.files.label)


def _simple_layout(meta: dict) -> bool:
    """Whether array metadata is the layout this reader decodes (see the module docstring)."""
    codecs = meta.get("codecs") or []
    grid, keys = meta.get("chunk_grid"), meta.get("chunk_key_encoding")
    return (
        meta.get("zarr_format") == 3
        and meta.get("node_type") == "array"
        and meta.get("data_type") in _DTYPES
        and isinstance(grid, dict) and grid.get("name") == "regular"
        and isinstance(keys, dict) and keys.get("name") == "default"
        and (keys.get("configuration") or {}).get("separator", "/") == "/"
        and not meta.get("storage_transformers")
        and isinstance(codecs, list) and len(codecs) == 2 and all(isinstance(c, dict) for c in codecs)
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

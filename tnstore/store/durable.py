"""Writing Zarr groups durably, with a record of every file written: zarr-python encodes, this store writes.

`RecordingStore` is zarr-python's LocalStore with its file write replaced: each file (a chunk or a zarr.json) is
written to a temp file, fsynced, renamed into place, and its size and XXH3 checksum (of the encoded bytes zarr
hands over) are recorded. `sync()` then fsyncs the folders that got new entries and returns the records since the
last sync, so a caller (the capture runner) can make a block's chunk files durable before its journal records
the block, and the run's catalog is made of what was actually written rather than of a re-read.

`ZarrWriter.write_rows` writes whole chunks of rows without zarr-python's pipeline, as ChunkReader reads them:
each chunk is encoded by the array's own Blosc codec (the settings in its zarr.json, so the bytes are zarr's) and
handed to the same durable write. zarr-python spends most of a capture's write time on its async per-chunk
machinery, which on a machine whose cores all run the forward is time taken from the forward.
"""
from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from tnstore.store.files import check_key, fsync_dirs
from tnstore.store.integrity import FileRecord


class Recorder:
    """Records of the files a RecordingStore wrote, shared by its copies (zarr makes some)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, FileRecord] = {}  # every file written since the store was opened
        self.unsynced: dict[str, FileRecord] = {}
        self.dirs: set[Path] = set()


class RecordingStore(LocalStore):
    """LocalStore that writes each file durably and records its size and checksum (see the module docstring)."""

    def __init__(self, root: Path | str, *, read_only: bool = False, recorder: Recorder | None = None) -> None:
        super().__init__(root, read_only=read_only)
        self.recorder = recorder or Recorder()

    def with_read_only(self, read_only: bool = False) -> "RecordingStore":
        return type(self)(self.root, read_only=read_only, recorder=self.recorder)

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(self._put, key, value)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._ensure_open_sync()
        self._check_writable()
        self._put(key, value)

    async def delete(self, key: str) -> None:
        with self.recorder.lock:
            self.recorder.records.pop(key, None)
            self.recorder.unsynced.pop(key, None)
        await super().delete(key)

    def _put(self, key: str, value: Buffer) -> None:
        self.put_bytes(key, value.as_buffer_like())

    def put_bytes(self, key: str, data: Any) -> None:
        """Write `data` (bytes-like) as file `key`, durably, and record it."""
        check_key(key, str(self.root))
        record = FileRecord.of(data)
        path = Path(self.root) / key
        new_dirs = []
        for parent in reversed(path.parents):
            if len(parent.parts) > len(Path(self.root).parts) - 1 and not parent.exists():
                parent.mkdir(exist_ok=True)
                new_dirs.append(parent.parent)  # a new folder is an entry of its parent
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        with self.recorder.lock:
            self.recorder.records[key] = record
            self.recorder.unsynced[key] = record
            self.recorder.dirs.add(path.parent)
            self.recorder.dirs.update(new_dirs)

    def sync(self) -> dict[str, FileRecord]:
        """Make every file written since the last sync durable (their folders fsynced; the files already are);
        returns their records."""
        with self.recorder.lock:
            dirs, self.recorder.dirs = self.recorder.dirs, set()
            written, self.recorder.unsynced = self.recorder.unsynced, {}
        fsync_dirs(d for d in dirs if d.exists())
        return written


class ZarrWriter:
    """A Zarr group written through a RecordingStore: `writer[name]` is the array (every chunk written, even one
    of zeros, so a finished run has every chunk its catalog lists), `sync()` as RecordingStore.sync, `records`
    every file written so far."""

    def __init__(self, path: Path, mode: str = "a") -> None:
        import zarr

        self.path = path
        self.store = RecordingStore(path)
        self.group = zarr.open_group(store=self.store, mode=mode)
        self._arrays: dict[str, Any] = {}
        self._layouts: dict[str, dict] = {}

    def create_array(self, name: str, **kwargs: Any):
        self.group.create_array(name, config={"write_empty_chunks": True}, **kwargs)
        self._arrays.pop(name, None)
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self.group

    def __getitem__(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name].with_config({"write_empty_chunks": True})
        return self._arrays[name]

    def write_rows(self, name: str, start: int, values: np.ndarray) -> None:
        """array `name`[start : start + len(values)] = values, written chunk by chunk without zarr's pipeline.

        values: (n, *row_shape) in the array's dtype; `start` is a multiple of the array's row chunk and the rows
        end at a chunk boundary or at the array's end (where the chunk is padded with the fill value, as zarr
        stores an edge chunk). Anything else goes through zarr-python.
        """
        layout = self._layout(name)
        rows_per_chunk = layout["chunks"][0]
        stop = start + len(values)
        if (values.dtype != layout["dtype"] or values.shape[1:] != layout["shape"][1:] or start % rows_per_chunk
                or (stop % rows_per_chunk and stop != layout["shape"][0])):
            self[name][start:stop] = values
            return
        per_layer = len(layout["shape"]) > 2 or layout["chunks"][1] != layout["shape"][1]
        n_second = layout["shape"][1] // layout["chunks"][1] if per_layer else 1
        tail = "/0" * (len(layout["shape"]) - (2 if per_layer else 1))
        padded = np.full((rows_per_chunk,) + layout["chunks"][1:], layout["fill"], dtype=layout["dtype"])
        for first in range(0, len(values), rows_per_chunk):
            rows = values[first:first + rows_per_chunk]
            row_chunk = (start + first) // rows_per_chunk
            for j in range(n_second):
                part = rows[:, j:j + 1] if per_layer else rows
                if len(part) < rows_per_chunk:
                    padded[...] = layout["fill"]
                    padded[:len(part)] = part
                    part = padded
                encoded = layout["codec"].encode(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
                key = f"{name}/c/{row_chunk}" + (f"/{j}" if per_layer else "") + tail
                self.store.put_bytes(key, encoded)

    def _layout(self, name: str) -> dict:
        """Shape, chunks, dtype, fill value and Blosc codec of array `name`, from its zarr.json (cached)."""
        if name not in self._layouts:
            import json

            from numcodecs import Blosc

            meta = json.loads((self.path / name / "zarr.json").read_text("utf-8"))
            codecs = meta["codecs"]
            if ([c["name"] for c in codecs] != ["bytes", "blosc"]
                    or (codecs[0].get("configuration") or {}).get("endian", "little") != "little"
                    or meta["chunk_key_encoding"]["name"] != "default"):
                raise RuntimeError(f"array {name} is not in the layout ZarrWriter.write_rows encodes")
            blosc = codecs[1]["configuration"]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc["shuffle"]]
            self._layouts[name] = {
                "shape": tuple(meta["shape"]), "chunks": tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
                "dtype": np.dtype(meta["data_type"]), "fill": meta.get("fill_value") or 0,
                "codec": Blosc.from_config({"cname": blosc["cname"], "clevel": blosc["clevel"], "shuffle": shuffle,
                                            "blocksize": blosc.get("blocksize", 0),
                                            "typesize": blosc["typesize"]}),
            }
        return self._layouts[name]

    def sync(self) -> dict[str, FileRecord]:
        return self.store.sync()

    @property
    def records(self) -> dict[str, FileRecord]:
        with self.store.recorder.lock:
            return dict(self.store.recorder.records)

"""Advisory writer lock: one writer per store at a time; readers never wait."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tnstore.errors import ArgumentError, DamagedStoreError


@contextmanager
def writer_lock(lock_path: Path, purpose: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` while the body runs.

    flock is released by the kernel when the process dies (kill -9 included), so a crashed writer never
    leaves a stale lock behind; the JSON written into the file only serves the error message.
    """
    # Never through a link: a store from someone else could point LOCK at a file of yours, which this truncates.
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DamagedStoreError(f"{lock_path} is a symbolic link; tnstore does not write through links",
                                    str(lock_path.parent)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DamagedStoreError(f"{lock_path} is not a regular file", str(lock_path.parent))
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(lock_path)
                    raise ArgumentError(
                        "wait_seconds",
                        f"store {lock_path.parent} is busy ({holder}); wait for it to finish or pass {{arg}} SECONDS"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "purpose": purpose}).encode())
        yield
    finally:
        os.close(fd)


def _read_holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
        return f"{info.get('purpose', 'a writer')} in process {info.get('pid', '?')}"
    except (OSError, ValueError):
        return "another writer"

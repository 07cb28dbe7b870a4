"""Where a store's bytes live — a local folder, or a read-only remote one through fsspec — behind one interface.

Files are named by keys: store-relative POSIX paths such as `tables/runs/<run_id>.parquet` or
`segments/<run_id>.zarr/mlp_act/c/0/3/0`. A store may come from someone else, so every key is checked before it
is used (`check_key`): relative, made of plain names (letters, digits, `_ . = -`, never starting with a dot, so
never `.` or `..`), nothing else. A local store is read without following symbolic links anywhere below its root
(a link could point out of the store, e.g. at ~/.ssh), and a file must be a regular file (a FIFO would hang a
read). Remote keys are appended to the store's URL as they are, which the same check makes safe (no `..`, `?`,
`#`, `%` or `//`). Sizes are bounded by the caller (`limit`) so a crafted file cannot make a read allocate
without end.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from tnstore.errors import DamagedStoreError, TnstoreError

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]{0,199}$")
MAX_KEY = 1000
REMOTE_SCHEMES = ("http", "https", "s3", "s3a", "gs", "gcs", "az", "abfs", "memory")


def check_key(key: str, where: str = "", store: str | None = None) -> str:
    """`key` if it is a safe store-relative path, else DamagedStoreError (see the module docstring)."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or not all(NAME.match(p) for p in key.split("/")):
        shown = repr(key)[:120]
        raise DamagedStoreError(f"{where + ': ' if where else ''}the path {shown} leaves the store or is not a "
                                "plain file name; the store is damaged or was made to escape it", store)
    return key


def is_remote(location: str | os.PathLike) -> bool:
    """Whether `location` is a URL of a remote store (http(s)://, s3://, ...); file:// and paths are local."""
    if isinstance(location, os.PathLike):
        return False
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def local_root(location: str | os.PathLike) -> Path:
    text = os.fspath(location)
    if isinstance(text, str) and text.startswith("file://"):
        text = text[len("file://"):]
    return Path(text).absolute()


class LocalFiles:
    """A store folder on this machine. Reads never follow a symbolic link below `root`."""

    remote = False
    can_list = True

    def __init__(self, root: str | os.PathLike):
        # The root itself is the user's choice (it may be a link); everything below it must be real.
        self.root = Path(os.path.realpath(local_root(root)))
        self.label = str(self.root)
        self._real_dirs: set[str] = set()

    def where(self, key: str) -> str:
        return str(self.root / key)

    def path(self, key: str) -> Path:
        """The checked local path of `key`: every folder on the way a real folder inside the store."""
        check_key(key, self.label, self.label)
        path = self.root / key
        self._check_dir(path.parent, key)
        return path

    def _check_dir(self, folder: Path, key: str) -> None:
        text = str(folder)
        if text in self._real_dirs:
            return
        if os.path.realpath(text) != text:
            raise DamagedStoreError(f"{self.where(key)}: a folder on its path is a symbolic link; tnstore does not "
                                    "follow links inside a store (they may point out of it)", self.label)
        if os.path.isdir(text):
            self._real_dirs.add(text)

    def _open(self, key: str, flags: int = os.O_RDONLY) -> int | None:
        """A descriptor of regular file `key` (None if it does not exist); links and non-files are refused."""
        path = self.path(key)
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the file is a symbolic link
                raise DamagedStoreError(f"{self.where(key)} is a symbolic link; tnstore does not follow links "
                                        "inside a store", self.label) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DamagedStoreError(f"{self.where(key)} is not a regular file", self.label)
        return fd

    def read(self, key: str, limit: int) -> bytes | None:
        """The bytes of `key` (None if missing); a file over `limit` bytes is refused as damaged."""
        fd = self._open(key)
        if fd is None:
            return None
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                raise DamagedStoreError(f"{self.where(key)} is {size} bytes, more than such a file can be "
                                        f"({limit}); the store is damaged", self.label)
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read(limit + 1)
        finally:
            os.close(fd)

    def open_fd(self, key: str) -> int | None:
        """An open descriptor of regular file `key` for the caller to map and close (None if missing)."""
        return self._open(key)

    def read_many(self, keys: list[str], limit: int, sizes: list[int] | None = None) -> list[bytes | None]:
        return [self.read(k, limit) for k in keys]

    def size(self, key: str) -> int | None:
        """Size of `key` without reading it (None if missing); a link or a non-file is refused."""
        path = self.path(key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise DamagedStoreError(f"{self.where(key)} is a symbolic link; tnstore does not follow links inside a "
                                    "store", self.label)
        if not stat.S_ISREG(st.st_mode):
            raise DamagedStoreError(f"{self.where(key)} is not a regular file", self.label)
        return st.st_size

    def stamp(self, key: str) -> tuple | None:
        """Identity of the file now at `key` (inode, size, mtime), None if missing: it changes when it is replaced."""
        try:
            st = os.lstat(self.path(key))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def listing(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, kind) of everything below folder `prefix`, kind "file" | "link" | "other"; links not followed.
        Names that are not valid keys are listed as they are (verify reports them as unexpected)."""
        base = self.root / prefix if prefix else self.root
        if not base.is_dir() or base.is_symlink():
            return
        stack = [(base, prefix)]
        while stack:
            folder, rel = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    key = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.is_symlink():
                        yield key, "link"
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), key))
                    elif entry.is_file(follow_symlinks=False):
                        yield key, "file"
                    else:
                        yield key, "other"

    # ---------------------------------------------------------------- writing (a local store only)
    def makedirs(self, folder_key: str) -> list[Path]:
        """Create folder `folder_key` (and parents) inside the store; returns the folders created, outermost first."""
        path = self.path(folder_key + "/x").parent
        created = []
        for parent in reversed([path, *path.parents]):
            if len(parent.parts) <= len(self.root.parts):
                continue
            if not parent.exists():
                parent.mkdir(exist_ok=True)
                created.append(parent)
            elif parent.is_symlink() or not parent.is_dir():
                raise DamagedStoreError(f"{parent} is not a real folder; tnstore does not write through links",
                                        self.label)
        return created

    def write_atomic(self, key: str, payload: bytes) -> None:
        """Write `key` whole or not at all: a temp file, fsync, rename, fsync of the folder."""
        path = self.path(key)
        if "/" in key:
            self.makedirs(key.rsplit("/", 1)[0])
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def unlink(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass


class RemoteFiles:
    """A store under a URL, read through fsspec (http(s): aiohttp; s3: s3fs). Read-only."""

    remote = True

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.label = self.url
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise TnstoreError(f"cannot open {self.url}: {exc}") from None
        self.root = root.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.can_list = protocol not in ("http", "https")  # an HTTP server need not list folders: catalogs say it

    def where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key, self.label, self.label)}"

    def read(self, key: str, limit: int) -> bytes | None:
        try:
            data = self.fs.cat_file(self._path(key), start=0, end=limit + 1)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise their own kinds; name the URL instead
            raise TnstoreError(f"cannot read {self.where(key)}: {_reason(exc)}") from None
        if len(data) > limit:
            raise DamagedStoreError(f"{self.where(key)} is more than {limit} bytes, more than such a file can be",
                                    self.label)
        return data

    def read_many(self, keys: list[str], limit: int, sizes: list[int] | None = None) -> list[bytes | None]:
        """Fetch several files at once (concurrent GETs, one per file: no listing, no HEAD); None where one does
        not exist. `sizes` (from a catalog) make each GET a range of one byte more than the file should hold, so
        no backend asks for the size first and a longer file still shows."""
        if not keys:
            return []
        paths = [self._path(k) for k in keys]
        ends = [None] * len(paths) if sizes is None else [s + 1 for s in sizes]
        if getattr(self.fs, "async_impl", False):
            import asyncio

            from fsspec.asyn import sync

            async def fetch() -> list:
                return await asyncio.gather(*(self.fs._cat_file(p, start=None if e is None else 0, end=e)
                                              for p, e in zip(paths, ends)), return_exceptions=True)

            got = sync(self.fs.loop, fetch)
        else:
            got = []
            for path in paths:
                try:
                    got.append(self.fs.cat_file(path))
                except Exception as exc:  # noqa: BLE001 - handled below, per file
                    got.append(exc)
        out = []
        for key, value in zip(keys, got):
            if isinstance(value, FileNotFoundError):
                out.append(None)
            elif isinstance(value, BaseException):
                raise TnstoreError(f"cannot read {self.where(key)}: {_reason(value)}")
            elif len(value) > limit:
                raise DamagedStoreError(f"{self.where(key)} is more than {limit} bytes, more than it can be",
                                        self.label)
            else:
                out.append(value)
        return out

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.info(self._path(key))["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise TnstoreError(f"cannot read {self.where(key)}: {_reason(exc)}") from None

    def stamp(self, key: str) -> tuple | None:
        return ("remote",)  # a remote store is a snapshot: read once per Store (Store.refresh re-reads)

    def listing(self, prefix: str) -> Iterator[tuple[str, str]]:
        if not self.can_list:
            return
        base = f"{self.root}/{prefix}" if prefix else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        for path in found:
            rel = path[len(self.root) + 1:] if path.startswith(self.root + "/") else path
            yield rel, "file"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in folder `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(paths: Iterable[Path]) -> None:
    for path in sorted(set(paths), key=lambda p: -len(p.parts)):
        fsync_dir(path)


def open_files(location: str | os.PathLike,
               storage_options: dict[str, Any] | None = None) -> "LocalFiles | RemoteFiles":
    """The files of the store at `location`: a path or file:// URL, or a remote URL (read-only)."""
    if is_remote(location):
        return RemoteFiles(str(location), storage_options)
    return LocalFiles(location)

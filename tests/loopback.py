"""Servers on 127.0.0.1 that serve a store folder the way a teammate's would, counting every request.

`http_server(root)`: a plain static file server (GET and HEAD, Range requests answered with 206 and
Content-Range, no folder listings: a store must be readable from its catalogs alone).
`s3_server()`: moto's S3 as a WSGI app under werkzeug, behind a middleware that records each request; `upload`
puts a local store into a bucket with s3fs.

Both bind 127.0.0.1 on a free port, run in a daemon thread, serve only while their `with` block runs, and never
reach anything but this machine. Used by tests/tiny_models/test_remote_store.py and bench/bench_sharing.py.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Requests:
    """Every request a server answered: (method, path, range header or None)."""

    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, method: str, path: str, byte_range: str | None) -> None:
        with self.lock:
            self.log.append((method, path, byte_range))

    def clear(self) -> None:
        with self.lock:
            self.log.clear()

    def paths(self, method: str = "GET") -> list[str]:
        with self.lock:
            return [p for m, p, _ in self.log if m == method]


def _handler(root: Path, requests: Requests):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _file(self) -> Path | None:
            rel = unquote(urlparse(self.path).path).lstrip("/")
            path = (root / rel).resolve()
            if root not in path.parents or not path.is_file():
                return None
            return path

        def _send(self, body: bool) -> None:
            requests.add(self.command, urlparse(self.path).path, self.headers.get("Range"))
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            size = path.stat().st_size
            start, end, status = 0, size, 200
            match = RANGE.match(self.headers.get("Range") or "")
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(size, int(match.group(2)) + 1) if match.group(2) else size
                else:  # a suffix range: the last N bytes
                    start = max(0, size - int(match.group(2)))
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(max(0, end - start)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{max(start, end - 1)}/{size}")
            self.end_headers()
            if body and end > start:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    self.wfile.write(fh.read(end - start))

        def do_GET(self) -> None:
            self._send(True)

        def do_HEAD(self) -> None:
            self._send(False)

    return Handler


@contextmanager
def http_server(root: Path) -> Iterator[tuple[str, Requests]]:
    """Serve folder `root` on http://127.0.0.1:<free port>; yields (base URL, Requests)."""
    requests = Requests()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Path(root).resolve(), requests))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server() -> Iterator[tuple[str, Requests]]:
    """moto's S3 on http://127.0.0.1:<free port>; yields (endpoint URL, Requests). Needs the S3_ENV credentials
    (moto accepts any) in the environment of whatever talks to it."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    requests = Requests()
    app = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        requests.add(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE"))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, counting, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        thread.join(timeout=10)


def s3_options(endpoint: str) -> dict:
    """fsspec storage options for the moto server (credentials from S3_ENV; no instance cache, so each test's
    server is talked to afresh)."""
    return {"endpoint_url": endpoint, "key": S3_ENV["AWS_ACCESS_KEY_ID"], "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "skip_instance_cache": True}


def upload(store: Path, endpoint: str, bucket: str, prefix: str = "store") -> str:
    """Put local store folder `store` into s3://bucket/prefix on the moto server; returns the store's URL."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options(endpoint))
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for path in sorted(Path(store).rglob("*")):
        if path.is_file() and not path.is_symlink():
            fs.put_file(str(path), f"{bucket}/{prefix}/{path.relative_to(store).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def env_for_s3() -> dict:
    return {**os.environ, **S3_ENV}

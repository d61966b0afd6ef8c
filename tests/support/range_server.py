"""A loopback file server for transfer tests: HTTP Range, redirects and injected faults.

``tests/support/dandi_server.py`` plays the DANDI API (and serves blobs with Range and a
rate cap); this one covers what a downloader must survive that DANDI does not model: a
server that ignores ``Range``, and connections cut mid-transfer (``cut``), with a log of
which byte ranges were asked for and fully sent.

Usage::

    with RangeServer() as server:
        url = server.add("blob.bin", path)        # /files/blob.bin
        server.redirect_url("blob.bin")           # /redirect/blob.bin -> 302 -> /files/...
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.loopback_http import LoopbackServer, parse_range, send_range


@dataclass(frozen=True)
class Served:
    """One GET: the byte range asked for (None: whole file) and whether all of it was sent."""

    path: str
    start: int
    end: int  # inclusive
    ranged: bool
    complete: bool


class RangeServer(LoopbackServer):
    """Threaded HTTP/1.1 file server on 127.0.0.1 (random port); stops with its ``with`` block.

    ``ranges=False`` ignores ``Range`` (answers 200 with the whole file). ``cut(start, end)``,
    if set, is asked before each body is sent; True sends the headers and then closes the
    connection without a byte of body (a dropped connection).
    """

    thread_name = "range-server"

    def __init__(self, *, ranges: bool = True, rate_limit_bps: float | None = None) -> None:
        super().__init__()
        self.ranges = ranges
        self.rate_limit_bps = rate_limit_bps
        self.cut: Callable[[int, int], bool] | None = None
        self.served: list[Served] = []
        self._files: dict[str, Path] = {}
        self._lock = threading.Lock()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("_BoundHandler", (_Handler,), {"owner": self})

    def add(self, name: str, path: Path) -> str:
        """Serve ``path`` at ``/files/<name>``; returns its URL."""
        self._files[name] = Path(path)
        return f"{self.base_url}/files/{name}"

    def redirect_url(self, name: str) -> str:
        """A URL that answers 302 to the file's URL (like DANDI's ``/download/``)."""
        return f"{self.base_url}/redirect/{name}"

    def record(self, entry: Served) -> None:
        with self._lock:
            self.served.append(entry)

    def complete_ranges(self) -> set[tuple[int, int]]:
        """Byte ranges (inclusive) that were sent in full, the 1-byte probes left out."""
        with self._lock:
            return {(s.start, s.end) for s in self.served if s.complete and s.end > s.start}


class _Handler(BaseHTTPRequestHandler):
    owner: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _empty(self, status: int, **headers: str) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        kind, _, name = urlsplit(self.path).path.lstrip("/").partition("/")
        if kind == "redirect":
            return self._empty(HTTPStatus.FOUND, Location=f"{self.owner.base_url}/files/{name}")
        path = self.owner._files.get(name) if kind == "files" else None
        if path is None:
            return self._empty(HTTPStatus.NOT_FOUND)
        size = path.stat().st_size
        wanted = parse_range(self.headers.get("Range") if self.owner.ranges else None, size)
        if wanted is None:
            return self._empty(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, Content_Range=f"bytes */{size}"
            )
        start, end, ranged = wanted
        length = end - start + 1
        self.send_response(HTTPStatus.PARTIAL_CONTENT if ranged else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", f'"{size}-{path.stat().st_mtime_ns}"')
        if self.owner.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        cut = self.owner.cut
        if cut is not None and cut(start, end):
            self.owner.record(Served(name, start, end, ranged, False))
            self.close_connection = True
            return
        sent = send_range(self, path, start, length, rate_bps=self.owner.rate_limit_bps)
        self.owner.record(Served(name, start, end, ranged, sent == length))

"""What every loopback test server here shares: start/stop on 127.0.0.1, and Range serving.

``FakeDandiArchive`` (the DANDI API) and ``RangeServer`` (downloader fault injection) both
serve files with HTTP ``Range``, an optional per-connection rate cap (S3 gives ~100 MB/s per
stream) and optional corruption; this module is the one home of that logic.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

SEND_BLOCK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (random port) for a ``with`` block.

    Subclasses return their request handler class, bound to ``self``, from ``_handler``.
    """

    thread_name = "loopback-http"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        assert self._server is not None, f"use {type(self).__name__} as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


def parse_range(header: str | None, size: int) -> tuple[int, int, bool] | None:
    """``(start, end_inclusive, ranged)`` for a ``Range`` header (suffix ranges too).

    No header: the whole file, not ranged. None: unsatisfiable (answer 416).
    """
    if not header:
        return 0, size - 1, False
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m[1] and not m[2]):
        return None
    if m[1]:
        start = int(m[1])
        end = min(int(m[2]), size - 1) if m[2] else size - 1
    else:  # suffix range: the last N bytes
        start, end = max(0, size - int(m[2])), size - 1
    if start >= size or start > end:
        return None
    return start, end, True


def send_range(
    handler: BaseHTTPRequestHandler,
    path: Path,
    start: int,
    length: int,
    *,
    rate_bps: float | None = None,
    flip_at: int = -1,
) -> int:
    """Send ``length`` bytes of ``path`` from ``start``; returns how many went out.

    ``rate_bps`` caps this connection; ``flip_at`` (a file offset) inverts that one byte,
    so the bytes no longer match the digests the server advertises. Uncapped, unaltered
    bodies go through ``sendfile`` (the fastest a loopback server can be).
    """
    sent = 0
    began = time.monotonic()
    try:
        with open(path, "rb") as fh:
            if not rate_bps and flip_at < 0:
                return handler.connection.sendfile(fh, start, length) if length else 0
            fh.seek(start)
            while sent < length and (block := bytearray(fh.read(min(SEND_BLOCK, length - sent)))):
                offset = flip_at - (start + sent)
                if 0 <= offset < len(block):
                    block[offset] ^= 0xFF
                handler.wfile.write(block)
                sent += len(block)
                if rate_bps and (ahead := sent / rate_bps - (time.monotonic() - began)) > 0:
                    time.sleep(ahead)
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True  # the client gave up on this range
    return sent

"""Parallel ranged HTTP(S) downloads that resume after an interruption.

One pooled ``requests`` session fetches the file's parts concurrently (S3 serves each
connection at roughly 100 MB/s, so one stream leaves most of the instance's bandwidth
idle). Each part is written in place with ``pwrite`` into ``<dest>.part``; a JSON sidecar
lists the finished parts, so a rerun fetches only what is missing. The default part layout
is the DANDI etag's, so each part's md5 is computed while it lands and the etag costs
nothing extra. Servers that ignore ``Range`` get one plain stream instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from spikebatch.transfer import digests
from spikebatch.transfer.errors import SizeMismatchError, TransferError
from spikebatch.transfer.progress import Progress
from spikebatch.transfer.result import Fetched

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 16
READ_CHUNK = 1 << 20
#: Consecutive failed requests (no byte gained) before a part gives up, and the first backoff.
PART_ATTEMPTS = 5
BACKOFF_S = 0.25
TIMEOUT_S = (15, 120)  # connect, read
_NET_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_SIDECAR_VERSION = 1


def redact(url: str) -> str:
    """The URL without its query: presigned URLs carry credentials there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def new_session(workers: int) -> requests.Session:
    """A session whose pool holds one connection per worker; retries 5xx/429 with backoff."""
    retry = Retry(
        total=4,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=workers + 2, max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself
    return session


@dataclass
class _Probe:
    url: str  # after redirects
    size: int | None
    validator: str | None  # ETag or Last-Modified: a changed file must not be resumed
    stream: requests.Response | None = None  # open 200 response when Range is ignored


def _probe(session: requests.Session, url: str) -> _Probe:
    """GET the first byte: follows redirects, learns the size and whether Range works.

    A GET rather than HEAD because presigned S3 URLs (DANDI's blob redirects) are signed
    for GET only.
    """
    resp = session.get(url, headers={"Range": "bytes=0-0"}, stream=True, timeout=TIMEOUT_S)
    validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
    if resp.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
        _ = resp.content
        if match and match[3] != "*":
            return _Probe(resp.url, int(match[3]), validator)
    if resp.status_code in (206, 416):  # total unknown, or an empty file: plain GET
        resp.close()
        resp = session.get(url, stream=True, timeout=TIMEOUT_S)
    if resp.status_code != 200:
        resp.close()
        raise TransferError(f"GET {redact(url)}: HTTP {resp.status_code} {resp.reason}")
    length = resp.headers.get("Content-Length")
    return _Probe(resp.url, int(length) if length else None, validator, stream=resp)


def part_layout(size: int, part_size: int | None) -> list[tuple[int, int]]:
    """``(offset, length)`` of each part; by default the DANDI etag's parts (64 MiB)."""
    if part_size is None:
        return [(p.offset, p.size) for p in digests.etag_parts(size)]
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    return [(off, min(part_size, size - off)) for off in range(0, size, part_size)]


def discard_partial(part_path: Path) -> None:
    """Remove an unfinished download and its resume state."""
    part_path.unlink(missing_ok=True)
    _Sidecar(part_path, {}).delete()


class _Sidecar:
    """``<dest>.part.json``: which parts of ``<dest>.part`` are complete, and of what."""

    def __init__(self, part_path: Path, key: dict[str, object]) -> None:
        self.path = part_path.with_name(part_path.name + ".json")
        self.key = key

    def load(self, part_path: Path, size: int) -> set[int]:
        """Finished parts from an earlier attempt at the same file, else nothing."""
        try:
            state = json.loads(self.path.read_text())
            if state.get("key") != self.key or part_path.stat().st_size != size:
                return set()
            return {int(i) for i in state.get("done", [])}
        except (OSError, ValueError):
            return set()

    def save(self, done: set[int]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "done": sorted(done)}))
        os.replace(tmp, self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


class _OrderedHasher:
    """Hashes the file's parts in order on a thread as they complete (overlaps the fetch)."""

    def __init__(self, fd: int, parts: list[tuple[int, int]], hasher: digests.Hasher) -> None:
        self._fd, self._parts, self._hasher = fd, parts, hasher
        self._ready = [False] * len(parts)
        self._cond = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def mark_done(self, index: int) -> None:
        with self._cond:
            self._ready[index] = True
            self._cond.notify()

    def _run(self) -> None:
        try:
            for index, (offset, length) in enumerate(self._parts):
                with self._cond:
                    self._cond.wait_for(lambda i=index: self._ready[i] or self._stopped)
                    if self._stopped:
                        return
                digests.hash_range(self._fd, offset, length, self._hasher)
        except BaseException as exc:  # re-raised in result()
            self._error = exc

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise TransferError(f"hashing the download failed: {self._error}") from self._error
        return self._hasher.hexdigest()


class _Aborted(Exception):
    """Another part failed or the caller was interrupted: stop quietly."""


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class RangedDownload:
    """One ranged download of ``url`` into ``part_path``; see the module docstring."""

    def __init__(
        self,
        session: requests.Session,
        url: str,
        probe: _Probe,
        part_path: Path,
        parts: list[tuple[int, int]],
        *,
        digest_name: str | None,
        inline_etag: bool,
        workers: int,
        progress: Progress,
    ) -> None:
        self.session, self.url, self.part_path, self.parts = session, url, part_path, parts
        self.resolved = probe.url
        self.size = probe.size or 0
        self.workers = workers
        self.progress = progress
        self.digest_name = digest_name
        self.inline_etag = inline_etag
        self.etag = digests.EtagHasher(self.size) if inline_etag else None
        self.sidecar = _Sidecar(
            part_path,
            {
                "v": _SIDECAR_VERSION,
                # Presigned URLs change their query on every resolution: key on the path
                # (plus size and ETag), unless the server gives no validator at all.
                "url": redact(url) if probe.validator else url,
                "size": self.size,
                "validator": probe.validator,
                "parts": [len(parts), parts[0][1] if parts else 0],
            },
        )
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._done: set[int] = set()
        self.resumed_bytes = 0

    def run(self) -> str | None:
        """Fetch every missing part; returns the digest (None without one)."""
        self._done = self.sidecar.load(self.part_path, self.size)
        if not self._done:
            with open(self.part_path, "wb") as fh:
                fh.truncate(self.size)
            self.sidecar.save(self._done)
        else:
            self.resumed_bytes = sum(self.parts[i][1] for i in self._done)
            log.info(
                "resuming %s: %d of %d parts already here (%.1f MB)",
                redact(self.url),
                len(self._done),
                len(self.parts),
                self.resumed_bytes / 1e6,
            )
            self.progress.advance(self.resumed_bytes)
        fd = os.open(self.part_path, os.O_RDWR)
        ordered = None
        if self.digest_name and not self.inline_etag:
            hasher = digests.new_hasher(self.digest_name, self.size)
            ordered = _OrderedHasher(fd, self.parts, hasher)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="range") as pool:
                futures: list[Future[None]] = []
                for index in range(len(self.parts)):
                    if index in self._done:
                        if ordered:
                            ordered.mark_done(index)
                        if self.etag:
                            futures.append(pool.submit(self._rehash_part, fd, index))
                    else:
                        futures.append(pool.submit(self._fetch_part, fd, index, ordered))
                try:
                    self._wait(futures)
                finally:
                    self._abort.set()  # no-op on success; stops workers on any failure
            if ordered:
                return ordered.result()
            return self.etag.hexdigest() if self.etag else None
        finally:
            if ordered:
                ordered.stop()
            os.close(fd)

    @staticmethod
    def _wait(futures: list[Future[None]]) -> None:
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in finished:
            exc = future.exception()
            if exc is not None and not isinstance(exc, _Aborted):
                for other in futures:
                    other.cancel()
                raise exc

    def _rehash_part(self, fd: int, index: int) -> None:
        offset, length = self.parts[index]
        assert self.etag is not None
        self.etag.set_part_digest(index, digests.md5_of_range(fd, offset, length))

    def _refresh(self, stale: str) -> None:
        """Follow the original URL again (a presigned redirect target may have expired)."""
        with self._lock:
            if self.resolved == stale:
                probe = _probe(self.session, self.url)
                if probe.stream is not None:
                    probe.stream.close()
                self.resolved = probe.url

    def _fetch_part(self, fd: int, index: int, ordered: _OrderedHasher | None) -> None:
        offset, length = self.parts[index]
        pos, end = offset, offset + length
        md5 = hashlib.md5() if self.inline_etag else None
        failures = 0
        while pos < end:
            if self._abort.is_set():
                raise _Aborted
            url, start = self.resolved, pos
            try:
                pos = self._fetch_range(fd, url, pos, end, md5)
            except _NET_ERRORS as exc:
                log.debug("part %d: %s", index, exc)
                error: BaseException = exc
            except _Expired as exc:
                self._refresh(url)
                error = exc
            else:
                continue
            failures = 0 if pos > start else failures + 1
            if failures >= PART_ATTEMPTS:
                raise TransferError(
                    f"GET {redact(url)} bytes {pos}-{end - 1}: gave up after "
                    f"{PART_ATTEMPTS} attempts: {error}"
                ) from error
            time.sleep(min(8.0, BACKOFF_S * 2**failures))
        if md5 is not None:
            assert self.etag is not None
            self.etag.set_part_digest(index, md5.digest())
        with self._lock:
            self._done.add(index)
            self.sidecar.save(self._done)
        if ordered:
            ordered.mark_done(index)

    def _fetch_range(self, fd: int, url: str, pos: int, end: int, md5: hashlib._Hash | None) -> int:
        """One GET of bytes ``pos..end-1``; returns how far it got (short on a cut stream)."""
        headers = {"Range": f"bytes={pos}-{end - 1}"}
        with self.session.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as resp:
            if resp.status_code in (401, 403):
                raise _Expired(f"HTTP {resp.status_code}")
            if resp.status_code != 206:
                raise TransferError(
                    f"GET {redact(url)} bytes {pos}-{end - 1}: HTTP {resp.status_code} "
                    f"{resp.reason} (expected 206 Partial Content)"
                )
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not match or int(match[1]) != pos:
                raise TransferError(
                    f"GET {redact(url)}: asked for bytes {pos}-{end - 1}, got "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            read = resp.raw.read
            while pos < end:
                chunk = read(min(READ_CHUNK, end - pos))
                if not chunk:
                    break
                _pwrite_all(fd, chunk, pos)
                if md5 is not None:
                    md5.update(chunk)
                pos += len(chunk)
                self.progress.advance(len(chunk))
                if self._abort.is_set():
                    raise _Aborted
        return pos


class _Expired(Exception):
    """401/403 on a part: the resolved (presigned) URL likely expired."""


def _stream_whole(
    resp: requests.Response, part_path: Path, hasher: digests.Hasher | None, advance: Callable
) -> int:
    """Write a plain 200 response to ``part_path`` (no resume: the server ignores Range)."""
    received = 0
    with resp, open(part_path, "wb") as fh:
        try:
            while chunk := resp.raw.read(READ_CHUNK):
                fh.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                received += len(chunk)
                advance(len(chunk))
        except _NET_ERRORS as exc:
            msg = f"GET {redact(resp.url)}: stream cut at byte {received}: {exc}"
            raise TransferError(msg) from exc
    return received


def fetch_http(
    url: str,
    part_path: Path,
    *,
    label: str,
    expected_size: int | None,
    digest_name: str | None,
    progress: bool,
    part_size: int | None,
    max_workers: int | None,
) -> Fetched:
    """Download ``url`` into ``part_path`` (resuming it if possible); see the module docstring."""
    workers = max_workers or DEFAULT_WORKERS
    with new_session(workers) as session:
        try:
            probe = _probe(session, url)
        except _NET_ERRORS as exc:
            raise TransferError(f"GET {redact(url)}: {exc}") from exc
        size = probe.size
        if expected_size is not None and size is not None and size != expected_size:
            if probe.stream is not None:
                probe.stream.close()
            raise SizeMismatchError(
                f"{redact(url)}: the server has {size} bytes, expected {expected_size}"
            )
        if probe.stream is not None:
            _Sidecar(part_path, {}).delete()
            known = digest_name and size is not None
            hasher = digests.new_hasher(digest_name, size or 0) if known else None
            log.info("%s: server ignores Range, one stream", redact(probe.url))
            with Progress(label, size, enabled=progress) as bar:
                received = _stream_whole(probe.stream, part_path, hasher, bar.advance)
            if size is not None and received != size:
                raise TransferError(f"GET {redact(url)}: got {received} of {size} bytes")
            value = hasher.hexdigest() if hasher else None
            return Fetched(received, value, redact(probe.url))
        assert size is not None
        parts = part_layout(size, part_size)
        with Progress(label, size, enabled=progress) as bar:
            job = RangedDownload(
                session,
                url,
                probe,
                part_path,
                parts,
                digest_name=digest_name,
                inline_etag=digest_name == digests.ETAG and parts == part_layout(size, None),
                workers=max(1, min(workers, len(parts))),
                progress=bar,
            )
            value = job.run()
        job.sidecar.delete()
        return Fetched(size, value, redact(probe.url), job.resumed_bytes)

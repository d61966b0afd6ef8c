"""Digest verification with the keys DANDI uses in asset metadata (``digest``), and S3's ETag.

The DANDI etag is an S3-multipart-style hash: md5 of each part's md5, where the part layout
comes from ``dandischema.digests.dandietag.PartGenerator``. Its parts hash independently, so
it is the cheapest to verify: the ranged downloader hashes each part as it lands, in parallel.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from dandischema.digests.dandietag import Part, PartGenerator

ETAG = "dandi:dandi-etag"
SHA256 = "dandi:sha2-256"
MD5 = "md5"
#: An S3 multipart ETag (md5 of the parts' md5s, "-N"): the name carries the part size,
#: ``s3-etag:<bytes>``, since S3 does not say it in the ETag (:func:`s3_etag_name`).
S3_ETAG = "s3-etag:"
#: Cheapest first. The etag parallelises over parts; md5 beats sha256 on CPUs without
#: SHA extensions (g4dn's Cascade Lake has none).
PREFERENCE = (ETAG, S3_ETAG, MD5, SHA256)
READ_BLOCK = 8 << 20

log = logging.getLogger(__name__)


class Hasher(Protocol):
    """What the downloaders feed bytes into (hashlib objects fit)."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


def choose(digests: Mapping[str, str] | None) -> tuple[str, str] | None:
    """The cheapest digest we can verify, as ``(name, expected_value)``; None to skip."""
    if not digests:
        return None
    for name in PREFERENCE:
        if name == S3_ETAG:
            found = next((k for k in digests if k.startswith(S3_ETAG) and digests[k]), None)
            if found is not None:
                return found, digests[found].lower()
        elif digests.get(name):
            return name, digests[name].lower()
    log.warning("no verifiable digest among %s (supported: %s)", sorted(digests), PREFERENCE)
    return None


def etag_parts(size: int, part_size: int | None = None) -> list[Part]:
    """The DANDI etag's part layout for a file of ``size`` bytes (dandischema's rules), or
    S3's for an upload in parts of ``part_size`` bytes."""
    if part_size is None:
        return list(PartGenerator.for_file_size(size))
    offsets = range(0, max(size, 1), part_size)
    return [Part(i + 1, o, min(part_size, size - o)) for i, o in enumerate(offsets)]


def s3_etag_name(part_size: int) -> str:
    """The digest name of an S3 multipart ETag uploaded in ``part_size``-byte parts."""
    return f"{S3_ETAG}{part_size}"


class EtagHasher:
    """The DANDI etag, fed either as one ordered stream or part by part in any order."""

    def __init__(self, size: int, part_size: int | None = None) -> None:
        self.parts = etag_parts(size, part_size)
        self._digests: list[bytes | None] = [None] * len(self.parts)
        self._index = 0
        self._current = hashlib.md5()
        self._filled = 0

    def set_part_digest(self, index: int, digest: bytes) -> None:
        """Record the md5 of part ``index`` (0-based) computed elsewhere."""
        self._digests[index] = digest

    def update(self, data: bytes | memoryview, /) -> None:
        """Feed the next bytes of the file in order; splits them at part boundaries."""
        view = memoryview(data)
        while view:
            if self._index >= len(self.parts):
                raise ValueError("more bytes than the etag's file size")
            take = min(len(view), self.parts[self._index].size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.parts[self._index].size:
                self._digests[self._index] = self._current.digest()
                self._index += 1
                self._current = hashlib.md5()
                self._filled = 0

    def hexdigest(self) -> str:
        if any(d is None for d in self._digests):
            raise ValueError("not every etag part has been hashed")
        joined = b"".join(d for d in self._digests if d is not None)
        return f"{hashlib.md5(joined).hexdigest()}-{len(self._digests)}"


def new_hasher(name: str, size: int) -> Hasher:
    """A streaming hasher for digest ``name`` of a file of ``size`` bytes."""
    if name == ETAG:
        return EtagHasher(size)
    if name.startswith(S3_ETAG):
        return EtagHasher(size, int(name.removeprefix(S3_ETAG)))
    if name == MD5:
        return hashlib.md5()
    if name == SHA256:
        return hashlib.sha256()
    raise ValueError(f"unsupported digest {name!r}; supported: {PREFERENCE}")


def hash_range(fd: int, offset: int, length: int, hasher: Hasher) -> None:
    """Feed ``length`` bytes at ``offset`` of an open file to ``hasher`` (pread: threads
    share the fd)."""
    end = offset + length
    while offset < end:
        block = os.pread(fd, min(READ_BLOCK, end - offset), offset)
        if not block:
            raise OSError(f"file shorter than expected at byte {offset}")
        hasher.update(block)
        offset += len(block)


def md5_of_range(fd: int, offset: int, length: int) -> bytes:
    """md5 of ``length`` bytes at ``offset`` of an open file."""
    digest = hashlib.md5()
    hash_range(fd, offset, length, digest)
    return digest.digest()


def file_digest(path: Path, name: str, *, workers: int | None = None) -> str:
    """Hash a whole file; the etag's parts are hashed in parallel threads."""
    size = path.stat().st_size
    hasher = new_hasher(name, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        if isinstance(hasher, EtagHasher):
            n = workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=n, thread_name_prefix="etag") as pool:
                futures = [pool.submit(md5_of_range, fd, p.offset, p.size) for p in hasher.parts]
                for i, future in enumerate(futures):
                    hasher.set_part_digest(i, future.result())
        else:
            offset = 0
            while block := os.pread(fd, READ_BLOCK, offset):
                hasher.update(block)
                offset += len(block)
    finally:
        os.close(fd)
    return hasher.hexdigest()

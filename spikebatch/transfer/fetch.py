"""``download``: one call for every source scheme, verified, resumable, retried."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from spikebatch.transfer import digests as _digests
from spikebatch.transfer import local, ranged_http, s3
from spikebatch.transfer.errors import DigestMismatchError, SizeMismatchError
from spikebatch.transfer.result import DownloadResult, Fetched
from spikebatch.transfer.uris import scheme_of

log = logging.getLogger(__name__)

#: Whole-file attempts when the digest does not match (each starts from scratch).
DIGEST_ATTEMPTS = 3


def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    digests: Mapping[str, str] | None = None,
    progress: bool = True,
    part_size: int | None = None,
    max_workers: int | None = None,
) -> DownloadResult:
    """Fetch ``url`` (``https://``, ``http://``, ``s3://``, ``file://``) to ``dest``, verified.

    ``digests`` uses DANDI's asset-metadata keys (``dandi:dandi-etag``, ``dandi:sha2-256``)
    or ``md5``; the cheapest one present is checked. A mismatch deletes the bytes and
    starts again, up to ``DIGEST_ATTEMPTS`` times, then raises ``DigestMismatchError``.
    Until it is verified, the data lives in ``<dest>.part``: ``dest`` only ever holds a
    verified file. An interrupted HTTP(S) download resumes from ``<dest>.part`` on the next
    call. ``part_size`` and ``max_workers`` tune the HTTP(S) ranged fetch (default: the
    DANDI etag's 64 MiB parts, 16 connections).
    """
    dest = Path(dest)
    scheme = scheme_of(url)
    chosen = _digests.choose(digests)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if cached := _already_here(dest, expected_size, chosen):
        return cached
    dest.unlink(missing_ok=True)
    part = dest.with_name(dest.name + ".part")
    name = chosen[0] if chosen else None
    fetch: Callable[..., Fetched]
    if scheme in ("http", "https"):
        fetch = partial(
            ranged_http.fetch_http, digest_name=name, part_size=part_size, max_workers=max_workers
        )
    else:
        fetch = s3.fetch if scheme == "s3" else local.fetch
    label = f"download {ranged_http.redact(url)}"
    for attempt in range(1, DIGEST_ATTEMPTS + 1):
        start = time.monotonic()
        fetched = fetch(url, part, label=label, expected_size=expected_size, progress=progress)
        size = part.stat().st_size
        if expected_size is not None and size != expected_size:
            ranged_http.discard_partial(part)
            raise SizeMismatchError(f"{url}: received {size} bytes, expected {expected_size}")
        value = None
        if chosen:
            value = fetched.digest_value or _digests.file_digest(part, chosen[0])
            if value != chosen[1]:
                log.warning(
                    "%s: %s is %s, expected %s (attempt %d of %d)",
                    ranged_http.redact(url),
                    chosen[0],
                    value,
                    chosen[1],
                    attempt,
                    DIGEST_ATTEMPTS,
                )
                ranged_http.discard_partial(part)
                continue
        os.replace(part, dest)
        seconds = time.monotonic() - start
        return DownloadResult(
            dest, size, name, value, seconds, fetched.resolved_url, fetched.resumed_bytes
        )
    assert chosen is not None
    raise DigestMismatchError(
        f"{ranged_http.redact(url)}: {chosen[0]} did not match {chosen[1]} "
        f"in {DIGEST_ATTEMPTS} attempts; nothing was kept"
    )


def _already_here(
    dest: Path, expected_size: int | None, chosen: tuple[str, str] | None
) -> DownloadResult | None:
    """A complete, verified ``dest`` from an earlier run is reused, not fetched again."""
    if chosen is None or not dest.is_file():
        return None
    size = dest.stat().st_size
    if expected_size is not None and size != expected_size:
        return None
    start = time.monotonic()
    if _digests.file_digest(dest, chosen[0]) != chosen[1]:
        return None
    log.info("%s is already here and verified (%s)", dest, chosen[0])
    return DownloadResult(dest, size, chosen[0], chosen[1], time.monotonic() - start)

"""What a download returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Fetched:
    """One scheme's fetch into the ``.part`` file, before verification."""

    size: int
    digest_value: str | None = None  # computed while fetching, when the scheme could
    resolved_url: str | None = None
    resumed_bytes: int = 0


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A verified download. ``digest_name`` is None when no digest was given to check."""

    path: Path
    size: int
    digest_name: str | None
    digest_value: str | None
    seconds: float
    #: Where the bytes came from after redirects (query string removed: it may hold a signature).
    resolved_url: str | None = None
    #: Bytes reused from an interrupted earlier attempt instead of fetched again.
    resumed_bytes: int = 0

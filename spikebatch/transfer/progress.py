"""Byte progress for long transfers: a rich bar on a terminal, periodic log lines elsewhere.

Batch jobs log to CloudWatch, where a redrawn bar is noise; there a line every few
seconds with the rate is what a person watching the job wants.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

log = logging.getLogger("spikebatch.transfer")

MB = 1_000_000


class Progress:
    """Thread-safe byte counter that reports itself; use as a context manager."""

    def __init__(
        self, label: str, total: int | None, *, enabled: bool = True, interval_s: float = 10.0
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.interval_s = interval_s
        self._enabled = enabled
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_log = self._start
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        self._start = self._last_log = time.monotonic()
        if self._enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        return self

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more; safe to call from many worker threads."""
        with self._lock:
            self.done += nbytes
            now = time.monotonic()
            due = self._bar is None and self._enabled and now - self._last_log >= self.interval_s
            if due:
                self._last_log = now
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)
        elif due:
            log.info("%s: %s", self.label, self._summary(now))

    def _summary(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed / MB
        if self.total:
            pct = 100.0 * self.done / self.total
            return (
                f"{self.done / MB:,.1f}/{self.total / MB:,.1f} MB ({pct:.0f}%) at {rate:,.1f} MB/s"
            )
        return f"{self.done / MB:,.1f} MB at {rate:,.1f} MB/s"

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._start

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._enabled:
            outcome = "done" if exc_type is None else "stopped"
            log.info("%s %s: %s", self.label, outcome, self._summary(time.monotonic()))

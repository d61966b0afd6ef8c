"""Busy processes that load the machine while a test runs (the "loaded machine" condition)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Each spins for at most this long, so a test that dies cannot leave them behind for long.
MAX_SECONDS = 900


@contextmanager
def cpu_load(processes: int = 2) -> Iterator[list[subprocess.Popen]]:
    """``processes`` CPU-bound Python processes for the duration of the block."""
    spin = (
        f"import time\nend = time.monotonic() + {MAX_SECONDS}\nwhile time.monotonic() < end: pass"
    )
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(processes)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

"""SpikeInterface job kwargs (parallelism and chunking) for this machine, in one place."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may use (the container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def available_memory_bytes() -> int:
    """Physical memory (the cgroup limit is applied by Batch; this is the upper bound)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def job_kwargs(total_memory: int | None = None, n_cores: int | None = None) -> dict[str, object]:
    """``n_jobs``/``chunk_duration`` for SpikeInterface: one worker per core, 1 s chunks.

    Each worker holds a few chunks of float32 traces; 1 s x 384 ch x 4 B x ~10 copies is
    ~0.5 GB, so cap the workers by memory as well as by cores.
    """
    n_cores = n_cores or available_cores()
    total_memory = total_memory or available_memory_bytes()
    by_memory = max(1, int(total_memory // (768 * 1024**2)))
    return {
        "n_jobs": max(1, min(n_cores, by_memory)),
        "chunk_duration": "1s",
        "progress_bar": False,
    }

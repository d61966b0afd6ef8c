"""SpikeInterface job kwargs (parallelism and chunking) for this machine, in one place."""

from __future__ import annotations

import os

#: Seconds of traces per chunk. Longer chunks amortise per-chunk costs: the margins (the
#: phase shift's 40 ms each side, the filters') decompress neighbouring HDF5 chunks again and
#: are transformed for nothing, and SpikeInterface runs a ``gc.collect()`` per chunk. On the
#: default Kilosort path (phase shift only), 384 channels, 5 s chunks wrote the sorter's
#: input 1.3x faster than 1 s (``make bench`` convert, 2026-12-01); with bandpass + CMR
#: 5 s was 15-20% faster than 1 s before the phase shift was in the chain (2026-11-22).
CHUNK_DURATION_S = 5
#: Peak memory of one worker at that chunk size, 384 channels, bandpass + CMR (measured
#: 1.3 GB: the filter works on float64 copies), rounded up.
WORKER_BYTES = int(1.5 * 1024**3)
#: Share of the machine's memory the chunk workers may take (the rest: the main process,
#: the page cache that the sorter's binary goes through).
WORKER_MEMORY_SHARE = 0.5


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
    """``n_jobs``/``chunk_duration`` for SpikeInterface: one worker per core, 5 s chunks.

    Workers are capped by memory as well as by cores: each holds ~1.3 GB at 5 s x 384
    channels, and half the memory is left to everything else.
    """
    n_cores = n_cores or available_cores()
    total_memory = total_memory or available_memory_bytes()
    by_memory = max(1, int(total_memory * WORKER_MEMORY_SHARE // WORKER_BYTES))
    return {
        "n_jobs": max(1, min(n_cores, by_memory)),
        "chunk_duration": f"{CHUNK_DURATION_S}s",
        "progress_bar": False,
    }

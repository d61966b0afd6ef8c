"""``spikebatch run-local``: the worker, in this process, on one recording.

The worker needs the ``worker`` extra (SpikeInterface, Kilosort, ...); it is imported only
here, so the rest of the CLI works without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from spikebatch.control.request import JobRequest
from spikebatch.control.submission import local_environment


def run_locally(request: JobRequest, output: Path) -> int:
    """Run the worker entry point with the env a Batch job would get; its exit status."""
    try:
        from spikebatch.worker.__main__ import main as worker_main
    except ImportError as exc:
        raise ValueError(
            f"run-local needs the worker extra (pip install 'spikebatch[worker]'): {exc}"
        ) from None
    env = {**os.environ, **local_environment(request, output.resolve().as_uri())}
    return int(worker_main(env) or 0)

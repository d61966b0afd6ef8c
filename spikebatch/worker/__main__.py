"""``python -m spikebatch.worker`` / ``spikebatch-worker``: the container entrypoint.

The stop handling is installed before anything heavy is imported (SpikeInterface, torch and
the sorter take seconds), so a stop in the first seconds also ends with exit 130.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from spikebatch.worker import stop
from spikebatch.worker.errors import ExitCode, Interrupted


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run one job from the environment; returns the exit code (see the README)."""
    # As the process's entrypoint (no environ given) the handling stays installed: the process
    # ends with the run, and an armed watchdog must still end it if the interpreter's shutdown
    # hangs (on a library's thread). In-process callers get theirs back afterwards.
    process_entrypoint = environ is None
    environ = os.environ if environ is None else environ
    mine = False
    try:
        try:
            mine = stop.install(stop.parse_grace(environ), owns_process=process_entrypoint)
            from spikebatch.worker.pipeline import main as pipeline_main
        except Interrupted as exc:  # while importing: no run id yet, so no record
            print(f"spikebatch-worker: failed in config: {exc}", file=sys.stderr)
            return ExitCode.INTERRUPTED
        return pipeline_main(environ)
    finally:
        if mine and not process_entrypoint:
            stop.uninstall()


if __name__ == "__main__":
    sys.exit(main())

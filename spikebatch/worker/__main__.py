"""``python -m spikebatch.worker`` / ``spikebatch-worker``: the container entrypoint."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from spikebatch.worker.pipeline import main as _pipeline_main


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run one job from the environment; returns the exit code (see the README)."""
    return _pipeline_main(environ)


if __name__ == "__main__":
    sys.exit(main())

"""Serve a benchmark blob from its own process (``python -m bench.serve``).

A server in the benchmark's own process would share its GIL with the client being
measured; S3 does not. Two servers: ``dandi`` is the fake DANDI archive
(``tests/support/dandi_server.py``: API, ``/download/`` redirect, rate cap, etag metadata);
``range`` is ``tests/support/range_server.py``, which answers uncapped ranges with
``sendfile`` so that the server is not what limits an uncapped measurement.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import PIPE, Popen
from typing import Any


@contextmanager
def serving(kind: str, blob: Path, rate_bps: float | None = None) -> Iterator[dict[str, Any]]:
    """Serve ``blob`` from a child process. Yields ``{"url": ...}`` (+ DANDI ``metadata``)."""
    args = [sys.executable, "-m", "bench.serve", kind, str(blob), str(rate_bps or 0)]
    with Popen(args, stdin=PIPE, stdout=PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                raise RuntimeError(f"the benchmark's {kind} server did not start")
            yield json.loads(line)
        finally:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)


def main() -> None:
    kind, blob, rate = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]) or None
    if kind == "dandi":
        from tests.support.dandi_server import FakeDandiArchive

        with FakeDandiArchive(rate_limit_bps=rate) as archive:
            asset = archive.add_asset("000001", "sub-1/sub-1_ecephys.nwb", blob)
            meta = archive._asset_metadata(asset)
            # The API's /download/ URL, as the worker gets it; it redirects to the blob.
            print(json.dumps({"url": meta["contentUrl"][0], "metadata": meta}), flush=True)
            sys.stdin.read()  # until the parent closes our stdin
    else:
        from tests.support.range_server import RangeServer

        with RangeServer(rate_limit_bps=rate) as server:
            print(json.dumps({"url": server.add(blob.name, blob)}), flush=True)
            sys.stdin.read()


if __name__ == "__main__":
    main()

"""Overlap: fetch-then-convert (what the worker does) vs converting while streaming the NWB.

The NWB is served like S3 (100 MB/s per connection). Sequential: the worker's verified
parallel download, then the sorter-input write from local disk. Streamed: SpikeInterface
reads the remote file through fsspec HTTP ranges while it writes, so fetching and
converting overlap (but nothing is verified before it is read, and fsspec's HTTP reader
works in one process only: with SpikeInterface's worker processes it hangs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import MB, BenchResult, Ratio, scratch_dir, timed
from bench.ingest import S3_STREAM_BPS
from bench.serve import serving
from spikebatch import transfer
from spikebatch.worker import recording
from spikebatch.worker.jobkw import job_kwargs


def _write(rec, out: Path, kwargs: dict) -> float:
    from spikeinterface.core import write_binary_recording

    out.unlink(missing_ok=True)
    start = time.perf_counter()
    write_binary_recording(rec, file_paths=[out], dtype="int16", **kwargs)
    seconds = time.perf_counter() - start
    out.unlink()
    return seconds


def run(nwb: Path) -> BenchResult:
    from spikeinterface.extractors import read_nwb_recording

    kwargs = job_kwargs()
    [series] = recording.choose_series(nwb, None)
    with scratch_dir("overlap") as tmp, serving("dandi", nwb, S3_STREAM_BPS) as srv:
        meta = srv["metadata"]
        local = tmp / "input.nwb"
        fetch_s, _ = timed(
            lambda: transfer.download(
                srv["url"],
                local,
                expected_size=meta["contentSize"],
                digests=meta["digest"],
                progress=False,
            )
        )
        convert_s = _write(recording.open_recording(local, series), tmp / "a.dat", kwargs)
        open_s, remote = timed(
            lambda: read_nwb_recording(
                file_path=meta["contentUrl"][1],
                stream_mode="fsspec",
                electrical_series_path=series,
            )
        )
        # One process: fsspec's event-loop thread does not survive SpikeInterface's worker
        # processes (n_jobs > 1 hangs), so streaming runs on one core.
        streamed_s = open_s + _write(remote, tmp / "b.dat", {**kwargs, "n_jobs": 1})
    sequential_s = fetch_s + convert_s
    return BenchResult(
        "overlap",
        [
            Ratio(
                "overlap: (fetch + convert) / streamed convert",
                sequential_s / streamed_s,
                1.0,
                lower_is_better=True,
                note="the worker fetches first: streaming would have to be faster to pay",
            )
        ],
        measurements={
            "nwb_bytes": meta["contentSize"],
            "rate_cap_bps": S3_STREAM_BPS,
            "fetch_s": fetch_s,
            "convert_s": convert_s,
            "fetch_plus_convert_s": sequential_s,
            "streamed_s": streamed_s,
            "fetch_share_of_sequential": round(fetch_s / sequential_s, 3),
            "fetch_MBps": round(meta["contentSize"] / fetch_s / MB, 1),
            "job_kwargs": {k: v for k, v in kwargs.items() if k != "progress_bar"},
            "load_avg_1m": os.getloadavg()[0],
        },
        notes=[
            "the worker fetches first (digest-verified), then converts from local disk",
        ],
    )

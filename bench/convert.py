"""NWB -> sorter input: the worker's open + preprocess + int16 binary write vs h5py's read.

The input is a 384-channel ground-truth NWB written like DANDI's (int16, chunked, gzip) by
``tests/support/ground_truth.py``, with Neuropixels 1.0-like ``inter_sample_shift``s, so the
default Kilosort path (phase shift only: Kilosort filters and re-references on the GPU) runs
what it runs on real Neuropixels data. The limit is one h5py pass over the dataset, chunk by
chunk (read + decompress, nothing else). Ours is what the worker writes before the sorter
starts (``preprocess.materialize``'s job kwargs: ``spikebatch.worker.jobkw`` with chunks
the phase shift's FFTs like), for each preprocessing the worker defaults to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py

from bench.common import MB, BenchResult, PeakMemory, Ratio, scratch_dir
from spikebatch.sorters import FILTERED_PREPROCESSING, GPU_FILTERING_PREPROCESSING
from spikebatch.worker import preprocess, recording
from spikebatch.worker.jobkw import available_cores, job_kwargs

CHANNELS = 384
#: Seconds of traces: 12 of the worker's 5 s chunks, 6 per worker on 2 cores, so the rates
#: are the stage's and not its start. At 20 s (4 chunks) one worker's first chunk (pool
#: start, first-touch page faults: up to 3.1 s instead of 1.7) decided half the time, and the
#: same code measured 0.45-0.69 of h5py from run to run (2026-12-02).
DURATION_S = 60.0
QUICK_DURATION_S = 4.0


def make_nwb(folder: Path, duration_s: float, firing_rate_hz: float = 15.0) -> Path:
    from tests.support.ground_truth import GroundTruthSpec, write_ground_truth_nwb

    spec = GroundTruthSpec(
        duration_s=duration_s,
        num_channels=CHANNELS,
        num_units=40,
        num_columns=4,
        seed=7,
        inter_sample_shift=True,
        firing_rate_hz=firing_rate_hz,
    )
    return write_ground_truth_nwb(folder, spec).nwb


def h5py_read_s(nwb: Path, series: str) -> float:
    """One pass over the traces, one HDF5 chunk row at a time: the decompression limit."""
    start = time.perf_counter()
    with h5py.File(nwb, "r") as f:
        data = f[series]["data"]
        step = data.chunks[0] if data.chunks else 30_000
        for row in range(0, data.shape[0], step):
            data[row : row + step]
    return time.perf_counter() - start


def convert(
    nwb: Path,
    series: str,
    chain: Callable[[Any], Any],
    kwargs: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """``chain(raw)`` written as Kilosort's int16 binary, as the worker writes it; time + memory."""
    from spikeinterface.core import write_binary_recording

    out.unlink(missing_ok=True)
    traces = chain(recording.open_recording(nwb, series))
    kwargs = preprocess.fft_friendly_chunks(traces, kwargs)
    with PeakMemory() as memory:
        start = time.perf_counter()
        write_binary_recording(traces, file_paths=[out], dtype="int16", **kwargs)
        seconds = time.perf_counter() - start
    out.unlink()
    return {
        "seconds": seconds,
        "peak_rss_mb": round(memory.peak_bytes / MB),
        "peak_rss_over_baseline_mb": round((memory.peak_bytes - memory.baseline_bytes) / MB),
        "job_kwargs": {k: v for k, v in kwargs.items() if k != "progress_bar"},
    }


def steps(chosen: dict[str, Any] | None) -> Callable[[Any], Any]:
    """The worker's preprocessing of ``chosen`` steps (None: none)."""
    return lambda raw: preprocess.preprocess(raw, chosen)[0]


def spikeinterface_phase_shift(raw: Any) -> Any:
    import spikeinterface.preprocessing as spre

    return spre.phase_shift(raw)


def spikeinterface_filtered(raw: Any) -> Any:
    """``FILTERED_PREPROCESSING`` with SpikeInterface's own functions (what the worker ran)."""
    import spikeinterface.preprocessing as spre

    steps = {"phase_shift": spre.phase_shift, "bandpass": spre.bandpass_filter}
    steps["common_reference"] = spre.common_reference
    for step, kwargs in FILTERED_PREPROCESSING.items():
        raw = steps[step](raw, **kwargs)
    return raw


#: Seconds of traces held in memory for the transform-only timing (460 MB at 384 channels).
TRANSFORM_DURATION_S = 20.0


def transform_s(raw: Any, chain: Callable[[Any], Any], kwargs: dict[str, Any]) -> float:
    """The chain's own time: ``get_traces`` over decoded traces held in memory, chunk by chunk
    at the worker's chunk length, in this process (the fastest of two passes). Read,
    decompress and write, shared by every chain, are left out: in a convert they dilute the
    speed-up by a host-dependent amount (2.62 on an Intel host, 1.71 on an AMD one, for the
    same code)."""
    from spikeinterface.core import NumpyRecording

    frames = min(raw.get_num_samples(), int(TRANSFORM_DURATION_S * raw.sampling_frequency))
    held = NumpyRecording([raw.get_traces(end_frame=frames)], raw.sampling_frequency)
    held.set_property("inter_sample_shift", raw.get_property("inter_sample_shift"))
    traces = chain(held)
    step = preprocess.fft_friendly_chunks(traces, kwargs)["chunk_size"]
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for first in range(0, frames, step):
            traces.get_traces(start_frame=first, end_frame=min(frames, first + step))
        best = min(best, time.perf_counter() - start)
    return best


def two_passes(nwb: Path, series: str, kwargs: dict[str, Any], tmp: Path, *, once: bool) -> float:
    """The sorter's input plus one more full pass (the analyzer's amplitudes), timed.

    ``once``: the worker's way, the chain saved once (``preprocess.materialize``; Kilosort
    reads that file as it is) and the second pass reads plain samples. Otherwise the lazy
    chain is decompressed and filtered for each pass. The second pass is timed as a
    binary write in both cases, so the two differ only in what they read.
    """
    from spikeinterface.core import write_binary_recording

    traces, _ = preprocess.preprocess(recording.open_recording(nwb, series), FILTERED_PREPROCESSING)
    kwargs = preprocess.fft_friendly_chunks(traces, kwargs)  # as materialize chunks it
    start = time.perf_counter()
    if once:
        traces = preprocess.materialize(traces, tmp / "preprocessed", kwargs)
    else:
        write_binary_recording(traces, file_paths=[tmp / "sorter.dat"], dtype="int16", **kwargs)
    write_binary_recording(traces, file_paths=[tmp / "second.dat"], dtype="int16", **kwargs)
    return time.perf_counter() - start


def run(nwb: Path) -> BenchResult:
    """Convert ``nwb`` (from :func:`make_nwb`) each default way; ratios to the h5py limit."""
    tuned = job_kwargs()
    #: What the worker used before tuning: every core, SpikeInterface's 1 s chunks.
    baseline = {"n_jobs": available_cores(), "chunk_duration": "1s", "progress_bar": False}
    [series] = recording.choose_series(nwb, None)
    raw = recording.open_recording(nwb, series)
    raw_bytes, duration_s = raw.get_total_memory_size(), raw.get_total_duration()
    with scratch_dir("convert") as tmp:
        out = tmp / "recording.dat"
        limit_s = min(h5py_read_s(nwb, series) for _ in range(2))
        runs = {
            "kilosort_default_phase_shift": convert(
                nwb, series, steps(GPU_FILTERING_PREPROCESSING), tuned, out
            ),
            "spikeinterface_phase_shift": convert(
                nwb, series, spikeinterface_phase_shift, tuned, out
            ),
            "no_preprocessing": convert(nwb, series, steps(None), tuned, out),
            "filtered_default_tuned": convert(
                nwb, series, steps(FILTERED_PREPROCESSING), tuned, out
            ),
            "spikeinterface_filtered": convert(nwb, series, spikeinterface_filtered, tuned, out),
            "kilosort_default_1s_chunks": convert(
                nwb, series, steps(GPU_FILTERING_PREPROCESSING), baseline, out
            ),
        }
        transform = {
            "ours_s": transform_s(raw, steps(GPU_FILTERING_PREPROCESSING), tuned),
            "spikeinterface_s": transform_s(raw, spikeinterface_phase_shift, tuned),
            "duration_s": min(duration_s, TRANSFORM_DURATION_S),
        }
        passes = {
            "lazy_chain_twice_s": two_passes(nwb, series, tuned, tmp, once=False),
            "materialized_once_s": two_passes(nwb, series, tuned, tmp, once=True),
        }
        limit_s = min(limit_s, h5py_read_s(nwb, series))  # re-measured: load drifts
        compressed = nwb.stat().st_size
    for record in runs.values():
        record["MBps_raw"] = round(raw_bytes / record["seconds"] / MB, 1)
        record["ratio_to_h5py"] = round(limit_s / record["seconds"], 3)
    kilosort = runs["kilosort_default_phase_shift"]
    filtered = runs["filtered_default_tuned"]
    ratios = [
        Ratio(
            "convert, default Kilosort path (phase shift): ours / h5py read+decompress",
            limit_s / kilosort["seconds"],
            0.5,
            note=f"Neuropixels shifts; peak RSS {kilosort['peak_rss_mb']} MB",
        ),
        Ratio(
            "convert, no CPU preprocessing (PREPROCESSING=null): ours / h5py",
            limit_s / runs["no_preprocessing"]["seconds"],
            0.5,
            note=f"peak RSS {runs['no_preprocessing']['peak_rss_mb']} MB",
        ),
        Ratio(
            "phase shift alone, in memory: SpikeInterface's / ours (speed-up)",
            transform["spikeinterface_s"] / transform["ours_s"],
            2.0,
            note="same result within one int16 step (tests/worker/test_worker_phase_shift.py); "
            f"in a convert: {runs['spikeinterface_phase_shift']['seconds'] / kilosort['seconds']:.2f}",
        ),
        Ratio(
            "convert, CPU sorters' default (phase shift + bandpass + median CMR): ours / h5py",
            limit_s / filtered["seconds"],
            0.5,
            note=f"one FFT per channel for both filters; peak RSS {filtered['peak_rss_mb']} MB",
        ),
        Ratio(
            "phase shift + bandpass + median CMR: SpikeInterface's / ours (speed-up)",
            runs["spikeinterface_filtered"]["seconds"] / filtered["seconds"],
            3.0,
            note="same result within two int16 steps (tests/worker/test_worker_spectral.py)",
        ),
        Ratio(
            "sorter input + analyzer pass: lazy chain twice / preprocessed once (speed-up)",
            passes["lazy_chain_twice_s"] / passes["materialized_once_s"],
            1.2,
            note="bandpass+CMR; the worker saves the chain once",
        ),
        Ratio(
            "convert, default Kilosort path: 1 s chunks / the worker's 5 s (speed-up)",
            runs["kilosort_default_1s_chunks"]["seconds"] / kilosort["seconds"],
            1.0,
            note="fewer phase-shift margins to transform; SpikeInterface's default is 1 s",
        ),
    ]
    return BenchResult(
        "convert",
        ratios,
        measurements={
            "channels": CHANNELS,
            "duration_s": duration_s,
            "raw_bytes": raw_bytes,
            "nwb_bytes": compressed,
            "h5py_read_s": limit_s,
            "h5py_MBps_raw": round(raw_bytes / limit_s / MB, 1),
            "cores": available_cores(),
            "load_avg_1m": os.getloadavg()[0],
            **runs,
            **passes,
            "phase_shift_transform": transform,
        },
        notes=[
            "h5py reads on one core; ours uses n_jobs worker processes",
            "convert MB/s are of raw int16 traces (what the sorter reads), not of the NWB",
        ],
    )

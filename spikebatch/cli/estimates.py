"""Cost and time estimates for a request: the same numbers for `estimate` and `--dry-run`.

Duration comes from ``--duration-s`` or, failing that, from the asset's size on DANDI,
read as int16 samples at 30 kHz over ``channels`` channels (how Neuropixels data is stored);
prices and throughput come from :mod:`spikebatch.cost`.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikebatch import cost
from spikebatch.instances import INSTANCE_TYPES
from spikebatch.request import JobRequest


@dataclass(frozen=True, slots=True)
class RecordingSize:
    name: str
    size_bytes: int | None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunEstimate:
    name: str
    duration_s: float | None
    estimate: cost.CostEstimate | None


def recording_seconds(size: RecordingSize, channels: int) -> float | None:
    if size.duration_s is not None:
        return size.duration_s
    if size.size_bytes is None:
        return None
    return size.size_bytes / (channels * cost.BYTES_PER_SAMPLE * cost.SAMPLING_RATE_HZ)


def _cheapest(
    request: JobRequest, duration_s: float, channels: int, nbytes: int | None
) -> cost.CostEstimate:
    names = [n for n, s in INSTANCE_TYPES.items() if (s.gpus > 0) == request.needs_gpu]
    options = [
        cost.estimate(
            duration_s,
            channels,
            instance_type=name,
            spot=request.resources.spot,
            sorter=request.sorter,
            input_bytes=nbytes,
        )
        for name in names
    ]
    return min(options, key=lambda e: e.usd)


def estimate_runs(
    request: JobRequest, sizes: list[RecordingSize], channels: int
) -> list[RunEstimate]:
    """One estimate per recording on the cheapest instance type that fits the sorter."""
    rows = []
    for size in sizes:
        seconds = recording_seconds(size, channels)
        if seconds is None:
            rows.append(RunEstimate(size.name, None, None))
            continue
        if request.max_duration_s is not None:
            seconds = min(seconds, request.max_duration_s)
        rows.append(
            RunEstimate(size.name, seconds, _cheapest(request, seconds, channels, size.size_bytes))
        )
    return rows

"""Cost and time estimates for a request: the same numbers for `estimate` and `--dry-run`.

Duration comes from ``--duration-s`` or, failing that, from the asset's size on DANDI,
read as int16 samples at 30 kHz over ``channels`` channels (how Neuropixels data is stored);
prices and throughput come from :mod:`spikebatch.cost`. The scratch budget
(:mod:`spikebatch.scratch`) says which instance types can hold the recording: only those
are priced, and a recording no type can hold gets no price but the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikebatch import cost, scratch
from spikebatch.control.request import JobRequest
from spikebatch.instances import INSTANCE_TYPES
from spikebatch.sorters import get_sorter


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
    #: The job's scratch peak, and the instance types (of those it fits) that can hold it.
    scratch: scratch.ScratchPlan | None = None
    holding: tuple[str, ...] = ()


def recording_seconds(size: RecordingSize, channels: int) -> float | None:
    if size.duration_s is not None:
        return size.duration_s
    if size.size_bytes is None:
        return None
    return size.size_bytes / (channels * cost.BYTES_PER_SAMPLE * cost.SAMPLING_RATE_HZ)


def fitting_instance_types(request: JobRequest) -> list[str]:
    """Instance types a job of this request can be placed on: GPU types (the stack's compute
    environments have only those; CPU sorters run there too) with room for its vCPUs and
    memory. Unset resources are the sorter's defaults, which are also the stack's default
    job size (``gpu_job_vcpus``/``gpu_job_memory_gib``)."""
    spec = get_sorter(request.sorter)
    vcpus = request.resources.vcpus or spec.default_vcpus
    memory_gib = request.resources.memory_gib or spec.default_memory_gib
    gpus = request.gpus
    return [
        name
        for name, s in INSTANCE_TYPES.items()
        if s.gpus > 0 and s.gpus >= gpus and s.vcpus >= vcpus and s.memory_gib >= memory_gib
    ]


def scratch_plan(
    request: JobRequest, seconds: float, channels: int, size_bytes: int | None
) -> scratch.ScratchPlan:
    """The job's scratch budget: the traces of ``seconds`` (already capped by
    ``max_duration_s``) and the whole file downloaded (its size, else the traces' size)."""
    part = scratch.Part(n_frames=round(seconds * cost.SAMPLING_RATE_HZ), n_channels=channels)
    input_bytes = size_bytes if size_bytes is not None else part.raw_bytes
    return scratch.plan(input_bytes, [part], request.sorter, request.sorter_params)


def holding_instance_types(
    request: JobRequest, plan: scratch.ScratchPlan, root_volume_gib: int
) -> list[str]:
    """The instance types this job fits whose /scratch holds the plan."""
    return scratch.instance_types_holding(
        plan, fitting_instance_types(request), root_volume_gib=root_volume_gib
    )


def _cheapest(
    request: JobRequest, duration_s: float, channels: int, nbytes: int | None, names: list[str]
) -> cost.CostEstimate | None:
    options = [
        cost.estimate(
            duration_s,
            channels,
            instance_type=name,
            spot=request.resources.spot,
            sorter=request.sorter,
            input_bytes=nbytes,
            preprocessing=request.preprocessing or cost.SORTER_DEFAULT,
        )
        for name in names
    ]
    return min(options, key=lambda e: e.usd) if options else None


def estimate_runs(
    request: JobRequest,
    sizes: list[RecordingSize],
    channels: int,
    *,
    root_volume_gib: int = scratch.DEFAULT_ROOT_VOLUME_GIB,
) -> list[RunEstimate]:
    """One estimate per recording, on the cheapest instance type that fits the job and holds
    its scratch; none (with the scratch plan saying why) when no type holds it."""
    if not fitting_instance_types(request):
        raise ValueError(
            f"no known instance type has room for this job ({request.sorter}, resources "
            f"{request.resources.model_dump(exclude_none=True)}); lower resources.vcpus/memory_gib"
        )
    rows = []
    for size in sizes:
        seconds = recording_seconds(size, channels)
        if seconds is None:
            rows.append(RunEstimate(size.name, None, None))
            continue
        if request.max_duration_s is not None:
            seconds = min(seconds, request.max_duration_s)
        plan = scratch_plan(request, seconds, channels, size.size_bytes)
        holding = holding_instance_types(request, plan, root_volume_gib)
        estimate = _cheapest(request, seconds, channels, size.size_bytes, holding)
        rows.append(RunEstimate(size.name, seconds, estimate, plan, tuple(holding)))
    return rows

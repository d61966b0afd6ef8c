"""Cost and time model: what a sorting job costs, stage by stage, per instance type.

Shared by ``spikebatch estimate``, ``submit --dry-run`` and the worker's run.json.
Every constant says where it comes from:

- *measured*: by ``make bench`` on the 2-core development machine (date given);
- *cited*: from a named source (the anchor run, AWS and NVIDIA data sheets);
- *derived*: computed from a cited anchor with the other constants;
- *assumed*: a stated guess, to be replaced by a measurement.

No GPU was available where this model was built, so the sorter's GPU throughput is
*derived* from the cited anchor, not measured. Prices come from ``spikebatch.instances``.
Run ``python -m spikebatch.cost`` to print the README's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from spikebatch import scratch
from spikebatch.instances import INSTANCE_TYPES, PRICES_AS_OF, get_instance
from spikebatch.sorters import FILTERED_PREPROCESSING, default_preprocessing

SAMPLING_RATE_HZ = 30_000.0
BYTES_PER_SAMPLE = 2  # int16, as Neuropixels/DANDI store raw data
NEUROPIXELS_CHANNELS = 384

#: Cited anchor (issue 5; README "Performance"): a 78-minute Neuropixels recording
#: downloaded and sorted with Kilosort3 in one job on an on-demand g4dn.2xlarge
#: ($0.752/h) cost $1.44: 1.915 h of instance time, about $1.11 per recording-hour.
ANCHOR = {
    "recording_minutes": 78.0,
    "instance_type": "g4dn.2xlarge",
    "usd": 1.44,
    "usd_per_recording_hour": 1.11,
}
ANCHOR_ON_DEMAND_USD_PER_HOUR = 0.752  # the anchor's own price, fixed with it
TARGET_SPOT_USD_PER_RECORDING_HOUR = 0.30

# ---- stage constants ------------------------------------------------------------------
#: Before the image pull: Batch scales the compute environment up, EC2 launches and boots
#: the instance, its ECS agent registers (assumed: 4 minutes).
INSTANCE_START_S = 240.0
#: The worker image as a new instance pulls it (measured: ``make image``, then pushed to a
#: registry on loopback, 2026-12-01): its gzip layers on the wire and its bytes unpacked.
IMAGE_PULL_BYTES = 3.02e9
IMAGE_BYTES = 5.42e9
#: Docker fetches three layers at a time, one connection per layer (cited: AWS Batch User
#: Guide, "Optimize containers and AMIs"); the image has four of 1.1-1.8 GB, so three
#: connections stay busy. ECR serves layers from S3: S3_STREAM_BPS per connection (assumed).
PULL_CONCURRENT_LAYERS = 3
#: Layers are unpacked one after another: gunzip and disk writes (measured: cold `docker pull`
#: from a registry on loopback into an empty engine, 2-core development machine, 2026-12-01:
#: this image in 46.2 s, the 6.35 GB single-layer image it replaced in 55.8 s).
UNPACK_BPS = 115e6
#: One S3 (or DANDI blob) connection's rate (assumed: the ~100 MB/s per stream that
#: issue 5 quotes for S3).
S3_STREAM_BPS = 100e6
#: Connections of the worker's ranged download (spikebatch.transfer's default).
FETCH_STREAMS = 16
#: md5 per vCPU, the cost of verifying the DANDI etag while the parts land
#: (measured: ``make bench`` host, Xeon with SHA-NI, 2026-11-22: 530 MB/s).
MD5_BPS_PER_VCPU = 530e6
#: Sustained (baseline) network bandwidth, Gbit/s (cited: AWS EC2 instance-type pages,
#: "network bandwidth"; the "up to" burst figures are not sustained over a large fetch).
NETWORK_BASELINE_GBPS: dict[str, float] = {
    "g4dn.xlarge": 5.0,
    "g4dn.2xlarge": 10.0,
    "g4dn.4xlarge": 20.0,
    "g4dn.8xlarge": 50.0,
    "g5.xlarge": 2.5,
    "g5.2xlarge": 5.0,
    "g5.4xlarge": 10.0,
    "g5.8xlarge": 25.0,
    "g6.xlarge": 2.5,
    "g6.2xlarge": 5.0,
    "g6.4xlarge": 10.0,
    "g6.8xlarge": 25.0,
}
DEFAULT_NETWORK_GBPS = 5.0  # other types (assumed)
#: Writing the sorter's int16 input from the gzip NWB through SpikeInterface's bandpass +
#: common median reference, raw bytes per second per vCPU (measured: ``make bench``
#: convert, 384 channels, 2 vCPUs, 2026-11-22: 45-46 MB/s in two runs; the Butterworth
#: filtering was the bottleneck). What the anchor's setup ran: the sort time is derived
#: with it.
ANCHOR_CONVERT_BPS_PER_VCPU = 22e6
#: The same write through the phase shift only (the Kilosort default on Neuropixels files,
#: which record ``inter_sample_shift``; Kilosort filters and re-references on the GPU).
#: Measured: ``make bench`` convert, 60 s of 384 channels with Neuropixels shifts, 2 vCPUs
#: (Intel Xeon), 2026-12-02 03:16: 96.6 MB/s (the worker's phase shift,
#: ``spikebatch/worker/phase_shift.py``; SpikeInterface's own ran at 36.9 MB/s). The AMD EPYC
#: host of 2026-12-01 ran the earlier code at 191 MB/s: absolute rates differ by host.
CONVERT_PHASE_SHIFT_BPS_PER_VCPU = 48e6
#: The same write through the worker's phase shift + bandpass + median reference (the
#: default of sorters that do not filter themselves; ``spikebatch/worker/spectral.py``,
#: ``reference.py``): the phase shift's rate times the ratio of the two measured in one
#: process, back to back (``bench.convert``'s method, 60 s of 384 channels with Neuropixels
#: shifts, 2 vCPUs, AMD EPYC, 2026-12-03, four pairs: 0.63-0.88 of the phase shift's rate,
#: 0.73 on average; the host's load average was 6-7 from other jobs, so its absolute rates
#: are not the ones to use).
FILTERED_OVER_PHASE_SHIFT = 0.73
CONVERT_FILTERED_BPS_PER_VCPU = CONVERT_PHASE_SHIFT_BPS_PER_VCPU * FILTERED_OVER_PHASE_SHIFT
#: The same write without CPU preprocessing (``PREPROCESSING=null``, or a file without
#: shifts): gzip decompression bound (measured, same run: 236 MB/s on 2 vCPUs; h5py alone
#: read 170 MB/s on one. The AMD host of 2026-12-01 gave 413 MB/s).
CONVERT_RAW_BPS_PER_VCPU = 118e6
#: Filter steps the worker computes itself (``spectral.py``, ``reference.py``) and those
#: still SpikeInterface's own code (priced at SpikeInterface's filtering rate).
FAST_FILTER_STEPS = frozenset({"bandpass", "common_reference"})
SLOW_FILTER_STEPS = frozenset({"highpass", "notch"})
#: ``estimate(preprocessing=...)``'s default: the sorter's declared default.
SORTER_DEFAULT = "sorter default"


@dataclass(frozen=True)
class PostSortRates:
    """What the worker does after the sort (analyzer and extensions, quality metrics, labels,
    ``sorting/``, ``phy/`` with every spike's PC features, figures, the units NWB, the run
    page) at 384 channels and ``units``: a fixed part and a part per recording second, each
    split into what runs in one process and what SpikeInterface spreads over the vCPUs
    (vCPU-seconds). Units, spikes and traces all grow with the channels: so does the time."""

    units: int
    serial_s: float
    serial_s_per_recording_s: float
    vcpu_s: float
    vcpu_s_per_recording_s: float

    def seconds(self, duration_s: float, n_channels: int, vcpus: int) -> float:
        scale = max(n_channels, 1) / NEUROPIXELS_CHANNELS
        fixed = self.serial_s + self.vcpu_s / vcpus
        per_s = self.serial_s_per_recording_s + self.vcpu_s_per_recording_s / vcpus
        return scale * (fixed + per_s * duration_s)


#: Measured: ``make bench`` postsort (``bench/postsort.py``), 2026-12-07 14:23 UTC, AMD EPYC,
#: 2 vCPUs: 384 channels, 400 units at 2-15 Hz (8.5 Hz mean, 12 M spikes an hour), 5 and 10
#: minutes; each step's CPU seconds, a line through the two durations. An hour of 384
#: channels then takes 107 s on a g4dn.2xlarge (8 vCPUs), 3% of Kilosort4's modelled sort.
POST_SORT = PostSortRates(
    units=400,
    serial_s=20.9,
    serial_s_per_recording_s=0.00963,
    vcpu_s=33.82,
    vcpu_s_per_recording_s=0.10424,
)
PUBLISH_S = 30.0

#: GPU speed relative to the T4 for Kilosort (assumed from NVIDIA data sheets: A10G has
#: 1.9x the T4's memory bandwidth and 3.8x its FP32; the L4 ~1x bandwidth, 3.7x FP32).
GPU_SPEEDUP_VS_T4: dict[str, float] = {"T4": 1.0, "A10G": 1.8, "L4": 1.2}
#: Kilosort4 time relative to Kilosort3 on the same GPU (assumed).
KS4_VS_KS3 = 0.85
DEFAULT_SORT_S_PER_RECORDING_S = 1.2  # other sorters on a GPU instance (assumed)
CPU_SORT_S_PER_RECORDING_S = 25.0  # sorters on a CPU-only instance (assumed)


def image_pull_seconds(instance_type: str | None = None) -> float:
    """A cold instance's pull of the worker image: download and unpack overlap, so the
    slower of the two (on every current GPU type, the unpacking)."""
    gbps = NETWORK_BASELINE_GBPS.get(instance_type or "", DEFAULT_NETWORK_GBPS)
    download_bps = min(PULL_CONCURRENT_LAYERS * S3_STREAM_BPS, gbps * 1e9 / 8)
    return max(IMAGE_PULL_BYTES / download_bps, IMAGE_BYTES / UNPACK_BPS)


def startup_seconds(instance_type: str | None = None) -> float:
    """Instance time paid before the container starts: scale-up and boot, then the pull."""
    return INSTANCE_START_S + image_pull_seconds(instance_type)


def raw_bytes(
    duration_s: float, n_channels: int, sampling_rate_hz: float = SAMPLING_RATE_HZ
) -> int:
    return int(duration_s * sampling_rate_hz * n_channels * BYTES_PER_SAMPLE)


def _anchor_recording_s() -> float:
    return ANCHOR["recording_minutes"] * 60.0


def _derive_ks3_t4() -> float:
    """Kilosort3's seconds per recording second on a T4, from the cited anchor.

    The anchor's 1.915 h minus what the other stages of this model take in the anchor's
    setup (one download stream, 8 vCPUs converting with SpikeInterface's bandpass + CMR) is
    the sort.
    So the model reproduces the anchor's $1.44 when asked about the anchor's setup.
    """
    spec = get_instance(ANCHOR["instance_type"])
    job_s = ANCHOR["usd"] / ANCHOR_ON_DEMAND_USD_PER_HOUR * 3600.0
    duration = _anchor_recording_s()
    nbytes = raw_bytes(duration, NEUROPIXELS_CHANNELS)
    others = (
        startup_seconds(spec.name)
        + nbytes / S3_STREAM_BPS
        + nbytes / (ANCHOR_CONVERT_BPS_PER_VCPU * spec.vcpus)
        + POST_SORT.seconds(duration, NEUROPIXELS_CHANNELS, spec.vcpus)
        + PUBLISH_S
    )
    return (job_s - others) / duration


#: Kilosort3 on a T4, seconds per recording second (*derived* from the anchor).
KS3_T4_S_PER_RECORDING_S = _derive_ks3_t4()
#: Sorter wall seconds per recording second on a 384-channel probe, by GPU model
#: ("" = CPU-only instance): the derived T4 figure scaled by the assumed factors above.
SORT_S_PER_RECORDING_S: dict[str, dict[str, float]] = {
    "kilosort3": {g: KS3_T4_S_PER_RECORDING_S / f for g, f in GPU_SPEEDUP_VS_T4.items()},
    "kilosort4": {
        **{g: KS3_T4_S_PER_RECORDING_S * KS4_VS_KS3 / f for g, f in GPU_SPEEDUP_VS_T4.items()},
        "": CPU_SORT_S_PER_RECORDING_S,
    },
}


@dataclass(frozen=True)
class CostEstimate:
    instance_type: str
    spot: bool
    sorter: str
    duration_s: float
    n_channels: int
    price_per_hour: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds.values())

    @property
    def usd(self) -> float:
        return self.price_per_hour * self.total_seconds / 3600.0

    @property
    def usd_per_recording_hour(self) -> float:
        return self.usd / (self.duration_s / 3600.0) if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.update(
            total_seconds=round(self.total_seconds, 1),
            usd=round(self.usd, 4),
            usd_per_recording_hour=round(self.usd_per_recording_hour, 4),
        )
        return out


def instance_price_per_hour(instance_type: str, spot: bool) -> float | None:
    """USD/hour for an instance type, or None if we don't know the type."""
    spec = INSTANCE_TYPES.get(instance_type)
    if spec is None:
        return None
    return spec.spot_usd_per_hour if spot else spec.on_demand_usd_per_hour


def sort_seconds(sorter: str, gpu_model: str, duration_s: float, n_channels: int) -> float:
    """Sorter wall time; scales linearly with channels relative to a 384-channel probe."""
    per_s = SORT_S_PER_RECORDING_S.get(sorter, {}).get(gpu_model)
    if per_s is None:
        per_s = DEFAULT_SORT_S_PER_RECORDING_S if gpu_model else CPU_SORT_S_PER_RECORDING_S
    return duration_s * per_s * max(n_channels, 1) / NEUROPIXELS_CHANNELS


def fetch_bytes_per_s(instance_type: str, streams: int = FETCH_STREAMS) -> float:
    """Ingest rate: the least of the connections, the network and the etag's md5."""
    spec = get_instance(instance_type)
    network = NETWORK_BASELINE_GBPS.get(spec.name, DEFAULT_NETWORK_GBPS) * 1e9 / 8
    return min(streams * S3_STREAM_BPS, network, MD5_BPS_PER_VCPU * spec.vcpus)


def convert_bytes_per_s_per_vcpu(preprocessing: Mapping[str, Any] | None) -> float:
    """How fast the worker writes the sorter's input through these CPU steps, per vCPU."""
    steps = set(preprocessing or {})
    if steps & SLOW_FILTER_STEPS:
        return ANCHOR_CONVERT_BPS_PER_VCPU
    if steps & FAST_FILTER_STEPS:
        return CONVERT_FILTERED_BPS_PER_VCPU
    if "phase_shift" in steps:
        return CONVERT_PHASE_SHIFT_BPS_PER_VCPU
    return CONVERT_RAW_BPS_PER_VCPU


def _steps(sorter: str, preprocessing: Mapping[str, Any] | str | None) -> Mapping[str, Any] | None:
    if isinstance(preprocessing, str):  # SORTER_DEFAULT
        return default_preprocessing(sorter)
    return preprocessing


def scratch_plan(
    duration_s: float, n_channels: int, sorter: str, input_bytes: int | None = None
) -> scratch.ScratchPlan:
    """The job's scratch budget: one series of these traces, the input (default: their size)."""
    part = scratch.Part(n_frames=round(duration_s * SAMPLING_RATE_HZ), n_channels=n_channels)
    return scratch.plan(input_bytes if input_bytes is not None else part.raw_bytes, [part], sorter)


def estimate(
    duration_s: float,
    n_channels: int,
    *,
    instance_type: str | None = None,
    spot: bool = True,
    sorter: str = "kilosort3",
    input_bytes: int | None = None,
    preprocessing: Mapping[str, Any] | str | None = SORTER_DEFAULT,
    fetch_streams: int = FETCH_STREAMS,
) -> CostEstimate:
    """Estimate one job's stage times and cost (default instance: the cheapest GPU type whose
    scratch holds the recording).

    ``input_bytes`` is the size to download (a DANDI asset's size; default: the raw int16
    size). ``preprocessing`` is the CPU chain (default: the sorter's declared one; ``None``
    models ``PREPROCESSING=null``). ``fetch_streams=1`` models a plain single-stream
    download (the anchor's setup).
    """
    if duration_s < 0 or n_channels < 1:
        raise ValueError("duration_s must be >= 0 and n_channels >= 1")
    if instance_type is None:
        rows = compare_instances(
            duration_s,
            n_channels,
            spot=spot,
            sorter=sorter,
            gpu_only=True,
            preprocessing=preprocessing,
            input_bytes=input_bytes,
        )
        if not rows:
            peak = scratch_plan(duration_s, n_channels, sorter, input_bytes).peak_bytes
            raise ValueError(
                f"no GPU instance type holds this job's {scratch.size_text(peak)} of scratch"
            )
        return rows[0]
    spec = get_instance(instance_type)
    nbytes = raw_bytes(duration_s, n_channels)
    fetched = nbytes if input_bytes is None else input_bytes
    convert_rate = convert_bytes_per_s_per_vcpu(_steps(sorter, preprocessing))
    stages = {
        "startup": INSTANCE_START_S,
        "image_pull": image_pull_seconds(spec.name),
        "fetch": fetched / fetch_bytes_per_s(spec.name, fetch_streams),
        "convert": nbytes / (convert_rate * spec.vcpus),
        "sort": sort_seconds(sorter, spec.gpu_model, duration_s, n_channels),
        "postprocess": POST_SORT.seconds(duration_s, n_channels, spec.vcpus),
        "publish": PUBLISH_S,
    }
    price = spec.spot_usd_per_hour if spot else spec.on_demand_usd_per_hour
    return CostEstimate(
        instance_type=spec.name,
        spot=spot,
        sorter=sorter,
        duration_s=duration_s,
        n_channels=n_channels,
        price_per_hour=price,
        stage_seconds={k: round(v, 1) for k, v in stages.items()},
    )


def compare_instances(
    duration_s: float = 3600.0,
    n_channels: int = NEUROPIXELS_CHANNELS,
    *,
    spot: bool = True,
    sorter: str = "kilosort3",
    gpu_only: bool = True,
    preprocessing: Mapping[str, Any] | str | None = SORTER_DEFAULT,
    input_bytes: int | None = None,
    holding_only: bool = True,
) -> list[CostEstimate]:
    """One estimate per known instance type, cheapest first; ``holding_only`` keeps the
    types whose /scratch holds the job (``spikebatch.scratch``)."""
    plan = scratch_plan(duration_s, n_channels, sorter, input_bytes)
    holding = set(scratch.instance_types_holding(plan, INSTANCE_TYPES))
    rows = [
        estimate(
            duration_s,
            n_channels,
            instance_type=name,
            spot=spot,
            sorter=sorter,
            preprocessing=preprocessing,
            input_bytes=input_bytes,
        )
        for name, spec in INSTANCE_TYPES.items()
        if (spec.gpus > 0 or not gpu_only) and (name in holding or not holding_only)
    ]
    return sorted(rows, key=lambda e: e.usd)


def default_job(
    duration_s: float = 3600.0,
    n_channels: int = NEUROPIXELS_CHANNELS,
    *,
    sorter: str = "kilosort3",
    spot: bool = True,
) -> CostEstimate:
    """The job a request that names no resources gets: the sorter's default size (the
    stack's ``gpu_job_vcpus``/``gpu_job_memory_gib``) on the cheapest GPU type that fits it
    and holds its scratch."""
    from spikebatch.sorters import get_sorter

    wanted = get_sorter(sorter)
    rows = [
        row
        for row in compare_instances(duration_s, n_channels, spot=spot, sorter=sorter)
        if get_instance(row.instance_type).vcpus >= wanted.default_vcpus
        and get_instance(row.instance_type).memory_gib >= wanted.default_memory_gib
    ]
    if not rows:
        raise ValueError(f"no GPU instance type fits and holds the default {sorter} job")
    return rows[0]


def readme_table(duration_s: float = 3600.0, sorter: str = "kilosort3") -> str:
    """The README's Markdown table: $ per recording-hour, spot and on-demand, per type."""
    plan = scratch_plan(duration_s, NEUROPIXELS_CHANNELS, sorter)
    head = (
        "| instance | GPU | vCPUs | NVMe GB | holds it | spot $/h | job h | spot $/rec-h | "
        "on-demand $/rec-h | spot $/rec-h, bandpass+CMR on CPU |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    rows = compare_instances(duration_s, sorter=sorter, spot=True, holding_only=False)
    holding = set(scratch.instance_types_holding(plan))
    for row in sorted(rows, key=lambda r: (r.instance_type not in holding, r.usd)):
        spec = get_instance(row.instance_type)
        on_demand = estimate(duration_s, NEUROPIXELS_CHANNELS, instance_type=spec.name,
                             spot=False, sorter=sorter)  # fmt: skip
        filtered = estimate(duration_s, NEUROPIXELS_CHANNELS, instance_type=spec.name,
                            spot=True, sorter=sorter,
                            preprocessing=FILTERED_PREPROCESSING)  # fmt: skip
        holds = "yes" if spec.name in holding else "**no**"
        lines.append(
            f"| {spec.name} | {spec.gpu_model} | {spec.vcpus} | {spec.nvme_gb} | {holds} | "
            f"{row.price_per_hour:.3f} | {row.total_seconds / 3600:.2f} | "
            f"{row.usd_per_recording_hour:.2f} | {on_demand.usd_per_recording_hour:.2f} | "
            f"{filtered.usd_per_recording_hour:.2f} |"
        )
    job = default_job(duration_s, sorter=sorter)
    note = (
        f"\n\n{sorter}, {NEUROPIXELS_CHANNELS} channels, {duration_s / 3600:g} h recording, "
        f"CPU preprocessing: the sorter's default ({', '.join(default_preprocessing(sorter)) or 'none'}); "
        f"peak scratch {scratch.size_text(plan.peak_bytes)} ({plan.peak_stage}); "
        f"prices {PRICES_AS_OF} (us-east-1). The default job ({job.instance_type}, spot): "
        f"${job.usd_per_recording_hour:.2f} per recording-hour "
        f"(target ${TARGET_SPOT_USD_PER_RECORDING_HOUR:.2f})."
    )
    return head + "\n".join(lines) + note


if __name__ == "__main__":
    print(readme_table())

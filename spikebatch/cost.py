"""Cost and time model: what a sorting job costs, stage by stage, per instance type.

Shared by ``spikebatch estimate``, ``submit --dry-run`` and the worker's run.json.
Every constant says where it comes from: *measured* (by ``make bench``, with the date),
*derived* (from a cited anchor) or *assumed*. Prices come from ``spikebatch.instances``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from spikebatch.instances import INSTANCE_TYPES, get_instance

SAMPLING_RATE_HZ = 30_000.0
BYTES_PER_SAMPLE = 2  # int16, as Neuropixels/DANDI store raw data
NEUROPIXELS_CHANNELS = 384

# Anchor (cited in the issue tracker and README): a 78-minute Neuropixels recording
# downloaded and sorted with Kilosort3 in one job on an on-demand g4dn.2xlarge
# ($0.752/h) cost $1.44, i.e. 1.915 h of instance time, about $1.11 per recording-hour.
ANCHOR = {
    "recording_minutes": 78.0,
    "instance_type": "g4dn.2xlarge",
    "usd": 1.44,
    "usd_per_recording_hour": 1.11,
}

# Instance start + image pull before the container runs (assumed: Batch scale-up of
# 2-4 min plus a ~8 GB image pull from ECR).
STARTUP_S = 300.0
# Ingest rate of the worker's parallel ranged download (bytes/s; assumed until measured
# by `make bench`, which reports the ratio to a single ~100 MB/s S3 stream).
INGEST_BYTES_PER_S = 300e6
# Preprocess + write the sorter's binary input, per vCPU (bytes/s/vCPU; assumed).
CONVERT_BYTES_PER_S_PER_VCPU = 25e6
# Post-processing (SortingAnalyzer + quality metrics + export) per recording second (assumed).
POSTPROCESS_S_PER_RECORDING_S = 0.08
PUBLISH_S = 30.0

# Sorter wall seconds per recording second on a 384-channel probe, by GPU model.
# T4 is derived from the anchor: 1.915 h total - 0.08 h start - 0.10 h fetch
# (108 GB at 300 MB/s) - convert/post ~ 0.2 h over 1.3 h of recording ~ 1.18.
# A10G and L4 are scaled from the T4 by GPU memory bandwidth (Kilosort's template
# matching is bandwidth bound): assumed, not measured.
SORT_S_PER_RECORDING_S: dict[str, dict[str, float]] = {
    "kilosort3": {"T4": 1.18, "A10G": 0.65, "L4": 1.0},
    "kilosort4": {"T4": 1.0, "A10G": 0.55, "L4": 0.85, "": 25.0},
}
DEFAULT_SORT_S_PER_RECORDING_S = 1.2  # other sorters on a GPU instance (assumed)
CPU_SORT_S_PER_RECORDING_S = 3.0  # CPU sorters on 8 vCPUs (assumed)


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


def raw_bytes(
    duration_s: float, n_channels: int, sampling_rate_hz: float = SAMPLING_RATE_HZ
) -> int:
    return int(duration_s * sampling_rate_hz * n_channels * BYTES_PER_SAMPLE)


def sort_seconds(sorter: str, gpu_model: str, duration_s: float, n_channels: int) -> float:
    """Sorter wall time; scales linearly with channels relative to a 384-channel probe."""
    per_s = SORT_S_PER_RECORDING_S.get(sorter, {}).get(gpu_model)
    if per_s is None:
        per_s = DEFAULT_SORT_S_PER_RECORDING_S if gpu_model else CPU_SORT_S_PER_RECORDING_S
    return duration_s * per_s * max(n_channels, 1) / NEUROPIXELS_CHANNELS


def estimate(
    duration_s: float,
    n_channels: int,
    *,
    instance_type: str | None = None,
    spot: bool = True,
    sorter: str = "kilosort3",
    input_bytes: int | None = None,
) -> CostEstimate:
    """Estimate one job's stage times and cost (default instance: the cheapest GPU type)."""
    if duration_s < 0 or n_channels < 1:
        raise ValueError("duration_s must be >= 0 and n_channels >= 1")
    if instance_type is None:
        return min(
            compare_instances(duration_s, n_channels, spot=spot, sorter=sorter, gpu_only=True),
            key=lambda e: e.usd,
        )
    spec = get_instance(instance_type)
    nbytes = raw_bytes(duration_s, n_channels)
    fetched = nbytes if input_bytes is None else input_bytes
    stages = {
        "startup": STARTUP_S,
        "fetch": fetched / INGEST_BYTES_PER_S,
        "convert": nbytes / (CONVERT_BYTES_PER_S_PER_VCPU * spec.vcpus),
        "sort": sort_seconds(sorter, spec.gpu_model, duration_s, n_channels),
        "postprocess": duration_s * POSTPROCESS_S_PER_RECORDING_S,
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
) -> list[CostEstimate]:
    """One estimate per known instance type, cheapest first (for the README table)."""
    rows = [
        estimate(duration_s, n_channels, instance_type=name, spot=spot, sorter=sorter)
        for name, spec in INSTANCE_TYPES.items()
        if spec.gpus > 0 or not gpu_only
    ]
    return sorted(rows, key=lambda e: e.usd)

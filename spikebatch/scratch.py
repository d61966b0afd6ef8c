"""The scratch budget: what a job keeps on the scratch volume, stage by stage, per sorter.

One model for three users: the worker checks it before any byte of the recording is
downloaded (and again, exactly, once the file is here, before anything is converted);
``spikebatch estimate`` and ``submit --dry-run`` say which instance types can hold a
recording; the submit path refuses a request that fits none. Pure Python: the Lambda
imports it. Bytes throughout; GB means 1e9 bytes, as AWS sizes instance storage.

The worker frees what later stages no longer read, so a job holds at most:

========== ===================================================================================
fetch      the input file
convert    the input file + every part's sorter input (its int16 traces as one binary)
sort       the sorter inputs + one part's sorter scratch (Kilosort3's whitened ``temp_wh.dat``
           is a full copy) and results; the NWB is gone: it is deleted once every part's
           traces and the session's metadata are out
postprocess the sorter inputs + one part's SortingAnalyzer and sorter results; the sorter's
           copy is deleted as soon as it has sorted
export     the postprocess stage + what every part leaves in ``results/`` until the upload
           (``sorting/``, ``phy/``); phy's PC features are sized exactly once the spikes are
           known (:func:`phy_pc_features_bytes`), and left out if they do not fit
========== ===================================================================================

A *part* is one sort: a raw ElectricalSeries (one probe), or one channel group (shank) of
it. Parts are sorted one after another in one job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spikebatch.instances import INSTANCE_TYPES, InstanceSpec
from spikebatch.sorters import sorter_or_undeclared

GB = 1e9
GiB = 1024**3

#: What the worker's SortingAnalyzer keeps (``spikebatch.worker.postprocess`` uses these):
#: waveforms of at most this many spikes per unit, 1 ms before to 2 ms after the peak.
MAX_SPIKES_PER_UNIT = 500
WAVEFORM_MS_BEFORE = 1.0
WAVEFORM_MS_AFTER = 2.0
#: Bounds for the analyzer's size, which depends on units not known before sorting
#: (assumed, on the high side: Neuropixels sorts give 0.5-1.5 units per channel at a few Hz;
#: SpikeInterface's 100 um sparsity keeps ~20-40 Neuropixels contacts per unit).
ANALYZER_UNITS_PER_CHANNEL = 1.5
ANALYZER_FIRING_HZ = 20.0
ANALYZER_SPARSE_CHANNELS = 64
#: Per spike the analyzer stores the sorting's spike vector (3 x int64) and an amplitude.
ANALYZER_BYTES_PER_SPIKE = 28
#: What a part leaves in ``results/`` until the upload: ``sorting/`` (the spike vector:
#: sample, unit and segment index, int64 each) and ``phy/`` (per spike its time, template
#: and cluster, int64, and amplitude, float32; the templates, float64, on a unit's sparse
#: channels; this many spike waveforms per unit, float32, for phy's waveform view).
SORTING_BYTES_PER_SPIKE = 24
PHY_BYTES_PER_SPIKE = 28
PHY_WAVEFORMS_PER_UNIT = 100
#: Files too small to model one by one (the recording's JSON, metrics, PCA models, the CSV,
#: figures and page): a margin per unit in each of the analyzer and the results (26 MB a
#: side at 400 units, which measured ~15 MB of them: ``bench.postsort``).
SMALL_FILES_BYTES_PER_UNIT = 64 << 10
#: phy's PC features (``pc_features.npy``): 5 components per channel of a unit, float32.
PHY_PC_COMPONENTS = 5
#: Share of an instance-store volume usable after formatting (file-system metadata).
FILESYSTEM_USABLE = 0.97
#: The stack's default root volume (``root_volume_gib`` in cdk.json), which holds /scratch
#: on instance types without NVMe; the OS and the pulled images keep this much of it.
DEFAULT_ROOT_VOLUME_GIB = 200
ROOT_VOLUME_RESERVED_GB = 40.0
#: What the worker writes its sorter input as: int16 (2 bytes) unless the file is not.
INT16_BYTES = 2


@dataclass(frozen=True, slots=True)
class Part:
    """One sort's input: a raw series (or one channel group of it) as written for the sorter."""

    n_frames: int
    n_channels: int
    sampling_frequency: float = 30_000.0
    itemsize: int = INT16_BYTES

    @property
    def raw_bytes(self) -> int:
        return self.n_frames * self.n_channels * self.itemsize

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.sampling_frequency

    def first(self, seconds: float | None) -> Part:
        """The part cut to its first ``seconds`` (``MAX_DURATION_S``)."""
        if seconds is None:
            return self
        return replace(self, n_frames=min(self.n_frames, round(seconds * self.sampling_frequency)))


@dataclass(frozen=True, slots=True)
class Sorted:
    """What a sort found, known once it has run: the bounds below then use these in place of
    their high-side guesses (units, spikes and the analyzer's channels per unit)."""

    units: int
    spikes: int
    sparse_channels: int


def _units_spikes_samples_channels(
    part: Part, found: Sorted | None = None
) -> tuple[int, float, int, int]:
    """The sizes the analyzer and results bounds share: units, spikes per unit, samples per
    waveform, sparse channels per unit (high-side guesses unless ``found``)."""
    samples = round((WAVEFORM_MS_BEFORE + WAVEFORM_MS_AFTER) * part.sampling_frequency / 1000)
    if found is not None:
        units = max(found.units, 1)
        return units, found.spikes / units, samples, found.sparse_channels
    units = math.ceil(ANALYZER_UNITS_PER_CHANNEL * part.n_channels)
    spikes_per_unit = ANALYZER_FIRING_HZ * part.duration_s
    return units, spikes_per_unit, samples, min(part.n_channels, ANALYZER_SPARSE_CHANNELS)


def analyzer_bytes(part: Part, found: Sorted | None = None) -> int:
    """An upper bound on one part's SortingAnalyzer folder (waveforms dominate)."""
    units, spikes_per_unit, samples, sparse = _units_spikes_samples_channels(part, found)
    sampled = units * min(MAX_SPIKES_PER_UNIT, spikes_per_unit)
    waveforms = sampled * samples * sparse * 4
    projections = sampled * PHY_PC_COMPONENTS * sparse * 4  # phy's PCA of those waveforms
    templates = units * samples * part.n_channels * 8 * 2  # average and std, float64, dense
    spikes = units * spikes_per_unit * ANALYZER_BYTES_PER_SPIKE
    pairwise = units * units * 8  # template similarity
    small = units * SMALL_FILES_BYTES_PER_UNIT
    return int(waveforms + projections + templates + spikes + pairwise + small)


def published_bytes(part: Part, found: Sorted | None = None) -> int:
    """An upper bound on what one part leaves in ``results/`` (``sorting/``, ``phy/`` without
    its PC features, ``units.nwb``; the CSV, figures and page are small beside them)."""
    units, spikes_per_unit, samples, sparse = _units_spikes_samples_channels(part, found)
    spikes = units * spikes_per_unit
    per_spike = spikes * (SORTING_BYTES_PER_SPIKE + PHY_BYTES_PER_SPIKE)
    # phy's waveform view: each kept spike's waveform, channel list and index.
    shown = (
        units
        * min(PHY_WAVEFORMS_PER_UNIT, spikes_per_unit)
        * (samples * sparse * 4 + sparse * 4 + 8)
    )
    templates = units * samples * sparse * 8 + units * units * 8  # and their similarity
    # units.nwb: each unit's mean and sd waveform on every channel (float64), spike times.
    nwb = units * samples * part.n_channels * 8 * 2 + spikes * 8
    small = units * SMALL_FILES_BYTES_PER_UNIT
    return int(per_spike + shown + templates + nwb + small)


def post_sort_bytes(part: Part, found: Sorted) -> int:
    """What the stages after the sort add to the scratch for one part, once its sort is
    known: the analyzer, the results and phy's PC features (``bench.postsort`` measures it)."""
    pcs = phy_pc_features_bytes(found.spikes, found.sparse_channels)
    return analyzer_bytes(part, found) + published_bytes(part, found) + pcs


def phy_pc_features_bytes(n_spikes: int, channels: int) -> int:
    """``pc_features.npy``: every spike's PCs on ``channels`` (the most any unit has).

    Not in :func:`plan`: it grows with the spike count, which only the sorter knows (an
    hour of 384 channels: ~10 GB at 4,000 spikes/s on 40 channels, 50 GB at the plan's
    high side), so the worker sizes it exactly after sorting and leaves it out when the
    scratch volume cannot hold it, rather than refuse or fail the job for it.
    """
    return n_spikes * PHY_PC_COMPONENTS * channels * 4


@dataclass(frozen=True)
class ScratchPlan:
    """Peak scratch bytes of each stage of one job."""

    sorter: str
    input_bytes: int
    raw_bytes: int
    stages: dict[str, int]
    #: What the same job held before the worker freed anything (NWB and copy kept).
    without_freeing: int
    parts: tuple[Part, ...] = field(default_factory=tuple)

    @property
    def peak_bytes(self) -> int:
        return max(self.stages.values())

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=lambda s: self.stages[s])

    def fits(self, available_bytes: float) -> bool:
        return self.peak_bytes <= available_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "sorter": self.sorter,
            "input_bytes": self.input_bytes,
            "raw_bytes": self.raw_bytes,
            "peak_bytes": self.peak_bytes,
            "peak_stage": self.peak_stage,
            "stages": dict(self.stages),
            "without_freeing_bytes": self.without_freeing,
        }


def plan(
    input_bytes: int,
    parts: Sequence[Part],
    sorter: str,
    sorter_params: Mapping[str, Any] | None = None,
) -> ScratchPlan:
    """The peak bytes of each stage for ``parts`` sorted from an ``input_bytes`` file."""
    spec = sorter_or_undeclared(sorter)
    copy_factor = spec.scratch_copy_bytes_factor(sorter_params)
    raw = sum(p.raw_bytes for p in parts)
    # The sorter and the analyzer handle one part at a time: the largest one bounds them.
    sorter_scratch = max(
        (int(p.raw_bytes * (copy_factor + spec.scratch_output_factor)) for p in parts), default=0
    )
    results = max((int(p.raw_bytes * spec.scratch_output_factor) for p in parts), default=0)
    analyzer = max((analyzer_bytes(p) for p in parts), default=0)
    # Results stay until the upload: a part sorts beside every earlier part's results.
    each = [published_bytes(p) for p in parts]
    published, earlier = sum(each), sum(each) - min(each, default=0)
    stages = {
        "fetch": input_bytes,
        "convert": input_bytes + raw,
        "sort": raw + sorter_scratch + earlier,
        "postprocess": raw + results + analyzer + earlier,
        "export": raw + results + analyzer + published,
    }
    return ScratchPlan(
        sorter=sorter,
        input_bytes=input_bytes,
        raw_bytes=raw,
        stages=stages,
        without_freeing=input_bytes + raw + sorter_scratch + analyzer + published,
        parts=tuple(parts),
    )


def max_duration_that_fits(
    input_bytes: int,
    parts: Sequence[Part],
    sorter: str,
    available_bytes: float,
    sorter_params: Mapping[str, Any] | None = None,
) -> float | None:
    """The longest ``MAX_DURATION_S`` whose plan fits, or None if not even a second does.

    The whole file is downloaded whatever the duration, so the input alone can rule it out.
    """
    longest = max((p.duration_s for p in parts), default=0.0)

    def fits(seconds: float) -> bool:
        cut = [p.first(seconds) for p in parts]
        return plan(input_bytes, cut, sorter, sorter_params).fits(available_bytes)

    if longest <= 1.0 or not fits(1.0):
        return None
    low, high = 1.0, longest
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return math.floor(low)


def instance_scratch_bytes(
    spec: InstanceSpec, root_volume_gib: int = DEFAULT_ROOT_VOLUME_GIB
) -> float:
    """Usable /scratch of one instance type: its NVMe, else the root volume less the OS and images."""
    if spec.nvme_gb:
        return spec.nvme_gb * GB * FILESYSTEM_USABLE
    return max(0.0, root_volume_gib * GiB - ROOT_VOLUME_RESERVED_GB * GB)


def instance_types_holding(
    scratch: ScratchPlan,
    names: Iterable[str] | None = None,
    *,
    root_volume_gib: int = DEFAULT_ROOT_VOLUME_GIB,
) -> list[str]:
    """The instance types (default: every GPU type we know) whose /scratch holds the plan."""
    specs = [INSTANCE_TYPES[n] for n in names] if names is not None else gpu_types()
    return [s.name for s in specs if scratch.fits(instance_scratch_bytes(s, root_volume_gib))]


def gpu_types() -> list[InstanceSpec]:
    return [s for s in INSTANCE_TYPES.values() if s.gpus > 0]


def size_only_parts(
    input_bytes: int,
    *,
    n_channels: int,
    max_duration_s: float | None = None,
    sampling_frequency: float = 30_000.0,
) -> list[Part]:
    """Before the file's header is read: one int16 series of ``input_bytes`` (uncompressed).

    For a gzip-compressed NWB this is *less* than the real traces, so a check built on it
    never refuses a job that fits; the worker checks the exact shape before it downloads.
    """
    frames = input_bytes // (n_channels * INT16_BYTES)
    part = Part(n_frames=int(frames), n_channels=n_channels, sampling_frequency=sampling_frequency)
    return [part.first(max_duration_s)]


def size_text(nbytes: float) -> str:
    """``123.4 GB`` (AWS's unit for instance storage), or MB/kB for small test files."""
    for unit, scale in (("GB", GB), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes / 1e3:,.1f} kB"


def largest_scratch_bytes(
    *,
    max_vcpus: int | None = None,
    max_memory_gib: float | None = None,
    root_volume_gib: int = DEFAULT_ROOT_VOLUME_GIB,
) -> float:
    """The most /scratch any GPU type within these limits offers (a stack's ResourceLimits
    name its largest type): no job of that stack can hold more."""
    return max(
        (
            instance_scratch_bytes(s, root_volume_gib)
            for s in gpu_types()
            if (max_vcpus is None or s.vcpus <= max_vcpus)
            and (max_memory_gib is None or s.memory_gib <= max_memory_gib)
        ),
        default=0.0,
    )


def refusal(
    input_bytes: int,
    sorter: str,
    *,
    capacity_bytes: float,
    sorter_params: Mapping[str, Any] | None = None,
    max_duration_s: float | None = None,
) -> str | None:
    """Why a recording of ``input_bytes`` cannot be sorted by any instance type, or None.

    Before submission only the size is known: the traces are taken as the file itself (one
    uncompressed int16 series; for a compressed NWB they are larger), with
    ``max_duration_s`` of at most 384 channels. This errs towards submitting: what it lets
    through, the worker's exact check stops before the download.
    """
    parts = size_only_parts(input_bytes, n_channels=384, max_duration_s=max_duration_s)
    job = plan(input_bytes, parts, sorter, sorter_params)
    if job.fits(capacity_bytes):
        return None
    return (
        f"needs {size_text(job.peak_bytes)} of scratch at its peak ({job.peak_stage}), more "
        f"than any instance type of this stack holds ({size_text(capacity_bytes)}): sort less "
        "(max_duration_s) or add an instance type with more NVMe"
    )

"""Declared sorter backends: what each needs, so no code branches on sorter names.

Parameter *validation* happens in the worker against SpikeInterface's own default
params (the source of truth); this table carries what the rest must know without
SpikeInterface installed: GPU or not, default resources, the default CPU preprocessing,
and what the sorter writes to scratch (for the scratch budget, ``spikebatch.scratch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Neuropixels-style CPU preprocessing for sorters that expect filtered, re-referenced
#: traces: undo the ADC multiplexing delay (only where the file records
#: ``inter_sample_shift``), 300-6000 Hz band, global median reference.
FILTERED_PREPROCESSING: dict[str, dict[str, Any]] = {
    "phase_shift": {},
    "bandpass": {"freq_min": 300.0, "freq_max": 6000.0},
    "common_reference": {"reference": "global", "operator": "median"},
}
#: Kilosort high-passes, re-references (CAR) and whitens on the GPU itself; filtering on
#: the CPU first is work done twice (and was the slowest stage of the worker). Only the
#: phase shift, which Kilosort does not do, stays on the CPU.
GPU_FILTERING_PREPROCESSING: dict[str, dict[str, Any]] = {"phase_shift": {}}
#: Kilosort's results (spike times, PC features, templates, diagnostics) per byte of its
#: input. Measured with Kilosort 4.1.7 on our int16 binary (40 s x 32 channels, 10 units,
#: 155 spikes/s): 4.3 MB for 77 MB of traces (0.055), of which ~280 bytes per spike (PC
#: features: 240) and 2.4 MB of figures and ops. 0.10 allows 8,200 spikes/s on 384
#: channels, about twice what hour-long Neuropixels sorts find (400 units at 5-10 Hz).
KILOSORT_OUTPUT_FACTOR = 0.10


@dataclass(frozen=True, slots=True)
class SorterSpec:
    name: str
    needs_gpu: bool
    description: str
    default_vcpus: int
    default_memory_gib: int
    #: What PREPROCESSING means when unset or ``{}`` (a request/env may ask for anything).
    default_preprocessing: dict[str, dict[str, Any]] = field(
        default_factory=lambda: dict(FILTERED_PREPROCESSING)
    )
    #: Bytes the sorter writes next to its input, per byte of that (int16) input, at most,
    #: while it sorts: Kilosort3's whitened ``temp_wh.dat`` is a full copy (1.0).
    scratch_copy_factor: float = 1.0
    #: Sorter params that, when true, make it write one more full copy (KS4's
    #: ``save_preprocessed_copy`` writes ``temp_wh.dat``).
    scratch_copy_params: tuple[str, ...] = ()
    #: Its results (spike times, features, templates) per byte of input.
    scratch_output_factor: float = 0.05
    #: Files in the sorter folder that later stages never read: deleted after the sort.
    scratch_leftovers: tuple[str, ...] = ()

    def scratch_copy_bytes_factor(self, params: Mapping[str, Any] | None = None) -> float:
        """The copy factor for these params (each true ``scratch_copy_params`` adds a copy)."""
        extra = sum(1.0 for p in self.scratch_copy_params if (params or {}).get(p))
        return self.scratch_copy_factor + extra


SORTERS: dict[str, SorterSpec] = {
    spec.name: spec
    for spec in (
        SorterSpec(
            name="kilosort3",
            needs_gpu=True,
            description="Kilosort 3, MATLAB-compiled (no licence), CUDA",
            default_vcpus=8,
            default_memory_gib=30,
            default_preprocessing=GPU_FILTERING_PREPROCESSING,
            # temp_wh.dat: the whitened int16 traces, the size of the input (SpikeInterface's
            # KS3 wrapper keeps it unless delete_tmp_files names it).
            scratch_copy_factor=1.0,
            scratch_output_factor=KILOSORT_OUTPUT_FACTOR,
            scratch_leftovers=("sorter_output/temp_wh.dat",),
        ),
        SorterSpec(
            name="kilosort4",
            needs_gpu=True,
            description="Kilosort 4 (PyTorch); runs on CPU too, slowly",
            default_vcpus=8,
            default_memory_gib=30,
            default_preprocessing=GPU_FILTERING_PREPROCESSING,
            # Measured: on our int16 binary (binary_compatible_with: no recording.dat copy)
            # Kilosort 4 writes no copy of the traces, only its results.
            scratch_copy_factor=0.0,
            scratch_copy_params=("save_preprocessed_copy",),
            scratch_output_factor=KILOSORT_OUTPUT_FACTOR,
            scratch_leftovers=("sorter_output/temp_wh.dat",),
        ),
        SorterSpec(
            name="spykingcircus2",
            needs_gpu=False,
            description="SpyKING CIRCUS 2 (SpikeInterface internal sorter), CPU",
            default_vcpus=8,
            default_memory_gib=30,
        ),
        SorterSpec(
            name="tridesclous2",
            needs_gpu=False,
            description="Tridesclous 2 (SpikeInterface internal sorter), CPU",
            default_vcpus=8,
            default_memory_gib=30,
        ),
        SorterSpec(
            name="mountainsort5",
            needs_gpu=False,
            description="MountainSort 5, CPU",
            default_vcpus=8,
            default_memory_gib=30,
        ),
    )
}

DEFAULT_SORTER = "kilosort3"

#: A SpikeInterface sorter we have not declared (the worker runs any installed one): the
#: generic CPU preprocessing, and a full copy in scratch assumed (the safe side).
UNDECLARED = SorterSpec(
    name="(undeclared)",
    needs_gpu=False,
    description="a SpikeInterface sorter spikebatch has not declared",
    default_vcpus=8,
    default_memory_gib=30,
)


class UnknownSorterError(ValueError):
    pass


def get_sorter(name: str) -> SorterSpec:
    """Look a sorter up by name; the error lists the ones we know."""
    try:
        return SORTERS[name]
    except KeyError:
        known = ", ".join(sorted(SORTERS))
        raise UnknownSorterError(f"unknown sorter {name!r}; known sorters: {known}") from None


def sorter_or_undeclared(name: str) -> SorterSpec:
    """The declared spec, or :data:`UNDECLARED` for another installed SpikeInterface sorter."""
    return SORTERS.get(name, UNDECLARED)


def default_preprocessing(sorter: str) -> dict[str, dict[str, Any]]:
    """The CPU preprocessing a job gets when PREPROCESSING is unset or ``{}``."""
    return {k: dict(v) for k, v in sorter_or_undeclared(sorter).default_preprocessing.items()}

"""Declared sorter backends: what each needs, so no code branches on sorter names.

Parameter *validation* happens in the worker against SpikeInterface's own default
params (the source of truth); this table only carries what the submit path must know
without SpikeInterface installed (GPU or not, default resources).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SorterSpec:
    name: str
    needs_gpu: bool
    description: str
    default_vcpus: int
    default_memory_gib: int


SORTERS: dict[str, SorterSpec] = {
    spec.name: spec
    for spec in (
        SorterSpec(
            name="kilosort3",
            needs_gpu=True,
            description="Kilosort 3, MATLAB-compiled (no licence), CUDA",
            default_vcpus=8,
            default_memory_gib=30,
        ),
        SorterSpec(
            name="kilosort4",
            needs_gpu=True,
            description="Kilosort 4 (PyTorch); runs on CPU too, slowly",
            default_vcpus=8,
            default_memory_gib=30,
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


class UnknownSorterError(ValueError):
    pass


def get_sorter(name: str) -> SorterSpec:
    """Look a sorter up by name; the error lists the ones we know."""
    try:
        return SORTERS[name]
    except KeyError:
        known = ", ".join(sorted(SORTERS))
        raise UnknownSorterError(f"unknown sorter {name!r}; known sorters: {known}") from None

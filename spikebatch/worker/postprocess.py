"""Postprocess stage: a SortingAnalyzer (waveforms, templates, amplitudes, locations) and QC.

The analyzer lives in scratch; only its products (metrics, figures, units.nwb) are published.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from spikebatch.scratch import (
    MAX_SPIKES_PER_UNIT,
    WAVEFORM_MS_AFTER,
    WAVEFORM_MS_BEFORE,
)
from spikebatch.worker.errors import WorkerError

log = logging.getLogger(__name__)

#: The quality metrics in quality_metrics.csv (SpikeInterface names).
QUALITY_METRICS = [
    "num_spikes",
    "firing_rate",
    "presence_ratio",
    "snr",
    "isi_violation",
    "amplitude_cutoff",
]

#: What the analyzer computes; the sizes that bound its folder are shared with the scratch
#: budget (``spikebatch.scratch``). Each is read by something published: the figures
#: (locations, amplitudes), the quality metrics (noise levels), phy (similarity) or the NWB.
#: Not correlograms: nothing read them (phy draws its own), and over all unit pairs they were
#: the one step that grows with units squared times the duration (bench.postsort).
_EXTENSIONS: dict[str, dict[str, Any]] = {
    "random_spikes": {"method": "uniform", "max_spikes_per_unit": MAX_SPIKES_PER_UNIT, "seed": 0},
    "waveforms": {"ms_before": WAVEFORM_MS_BEFORE, "ms_after": WAVEFORM_MS_AFTER},
    "templates": {"operators": ["average", "std"]},
    "noise_levels": {},
    "spike_amplitudes": {},
    "unit_locations": {"method": "monopolar_triangulation"},
    "template_similarity": {},
}


#: Where Linux keeps shared memory: a tmpfs whose size a container sets (Docker: 64 MiB by
#: default; the Batch job definitions: ``spikebatch.worker_image.BATCH_RUNTIME``).
SHARED_MEMORY_DIR = Path("/dev/shm")
#: The window SpikeInterface's sparsity estimate uses (``estimate_sparsity`` defaults, ms).
_SPARSITY_MS_BEFORE, _SPARSITY_MS_AFTER = 1.0, 2.5
_SHM_HEADROOM = 0.9
_SHM_WORKER_MARGIN = 1 << 20


def shared_memory_per_worker(n_units: int, n_channels: int, sampling_frequency: float) -> int:
    """/dev/shm one worker of the sparsity estimate holds: dense float32 templates (units x
    samples x channels) and a page-sized margin (measured: ``bench.postsort``, 400 units x
    384 channels, 2 workers: 129.06 MB, this formula's templates 129.02 MB)."""
    samples = int(_SPARSITY_MS_BEFORE * sampling_frequency / 1000.0) + int(
        _SPARSITY_MS_AFTER * sampling_frequency / 1000.0
    )
    return max(1, n_units * samples * n_channels * 4) + _SHM_WORKER_MARGIN


def shared_memory_workers(
    n_jobs: int, n_units: int, n_channels: int, sampling_frequency: float, free_bytes: int
) -> int:
    """How many workers the sparsity estimate may use so that it fits in /dev/shm.

    ``create_sorting_analyzer(sparse=True)``, for a sorting that names no main channels,
    accumulates templates per worker in shared memory (:func:`shared_memory_per_worker`);
    past the tmpfs's size the process dies of SIGBUS, with no error and no run.json to say
    why. Fewer workers is slower but finishes; when even one does not fit, this raises one
    line that says what to change.
    """
    per_worker = shared_memory_per_worker(n_units, n_channels, sampling_frequency)
    fits = int(free_bytes * _SHM_HEADROOM // per_worker)
    if fits < 1:
        raise WorkerError(
            f"the analyzer needs {per_worker / 2**20:.0f} MiB of shared memory "
            f"({n_units} units x {n_channels} channels) and /dev/shm has "
            f"{free_bytes / 2**20:.0f} MiB free: give the container more (docker run "
            "--shm-size; the job definitions' sharedMemorySize)"
        )
    return max(1, min(n_jobs, fits))


def _fit_shared_memory(sorting: Any, recording: Any, job_kwargs: dict[str, Any]) -> dict[str, Any]:
    if not SHARED_MEMORY_DIR.is_dir():
        return job_kwargs
    n_jobs = int(job_kwargs.get("n_jobs") or 1)
    workers = shared_memory_workers(
        n_jobs,
        sorting.get_num_units(),
        recording.get_num_channels(),
        recording.sampling_frequency,
        shutil.disk_usage(SHARED_MEMORY_DIR).free,
    )
    if workers < n_jobs:
        log.warning(
            "postprocess: /dev/shm holds the sparsity estimate of %d worker(s), not %d: "
            "running with fewer (raise the container's shared memory to go faster)",
            workers,
            n_jobs,
        )
    return {**job_kwargs, "n_jobs": workers}


#: A step's context manager: ``with step(name): ...`` (timing, memory; a no-op by default).
Step = Callable[[str], AbstractContextManager[Any]]


def no_step(name: str) -> AbstractContextManager[None]:
    """The default ``step``: nothing measured."""
    return nullcontext()


def analyze(
    sorting: Any,
    recording: Any,
    folder: Path,
    job_kwargs: dict[str, Any],
    *,
    step: Step = no_step,
) -> Any:
    """Build the analyzer and compute the extensions + quality metrics, each in its ``step``."""
    from spikeinterface.core import create_sorting_analyzer

    with step("analyzer"):
        analyzer = create_sorting_analyzer(
            sorting,
            recording,
            format="binary_folder",
            folder=folder,
            sparse=True,
            overwrite=True,
            job_kwargs=_fit_shared_memory(sorting, recording, job_kwargs),
        )
    # Job kwargs for the extensions come from SpikeInterface's globals (set by the pipeline).
    # One at a time, so a long postprocess shows progress in the job log.
    for i, (name, params) in enumerate(_EXTENSIONS.items(), start=1):
        log.info("postprocess: %s (%d/%d)", name, i, len(_EXTENSIONS) + 1)
        with step(name):
            analyzer.compute(name, **params)
    log.info("postprocess: quality_metrics (%d/%d)", len(_EXTENSIONS) + 1, len(_EXTENSIONS) + 1)
    # Presence ratio needs several bins: 60 s bins (the default) on a short recording are NaN.
    bin_s = max(1.0, min(60.0, recording.get_total_duration() / 10.0))
    with step("quality_metrics"):
        analyzer.compute(
            "quality_metrics",
            metric_names=QUALITY_METRICS,
            metric_params={"presence_ratio": {"bin_duration_s": bin_s}},
        )
    return analyzer


def quality_metrics(analyzer: Any):
    """One row per unit (index ``unit_id``) as a pandas DataFrame."""
    metrics = analyzer.get_extension("quality_metrics").get_data()
    metrics.index.name = "unit_id"
    return metrics


def write_quality_metrics(metrics: Any, path: Path) -> None:
    """Write :func:`quality_metrics`' table (one row per unit) to quality_metrics.csv."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(path)

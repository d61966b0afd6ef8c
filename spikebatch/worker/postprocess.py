"""Postprocess stage: a SortingAnalyzer (waveforms, templates, amplitudes, locations) and QC.

The analyzer lives in scratch; only its products (metrics, figures, units.nwb) are published.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from spikebatch.scratch import (
    CORRELOGRAM_BIN_MS,
    CORRELOGRAM_WINDOW_MS,
    MAX_SPIKES_PER_UNIT,
    WAVEFORM_MS_AFTER,
    WAVEFORM_MS_BEFORE,
)

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
#: budget (``spikebatch.scratch``).
_EXTENSIONS: dict[str, dict[str, Any]] = {
    "random_spikes": {"method": "uniform", "max_spikes_per_unit": MAX_SPIKES_PER_UNIT, "seed": 0},
    "waveforms": {"ms_before": WAVEFORM_MS_BEFORE, "ms_after": WAVEFORM_MS_AFTER},
    "templates": {"operators": ["average", "std"]},
    "noise_levels": {},
    "spike_amplitudes": {},
    "unit_locations": {"method": "monopolar_triangulation"},
    "correlograms": {"window_ms": CORRELOGRAM_WINDOW_MS, "bin_ms": CORRELOGRAM_BIN_MS},
    "template_similarity": {},
}


def analyze(sorting: Any, recording: Any, folder: Path, job_kwargs: dict[str, Any]) -> Any:
    """Build the analyzer and compute the extensions + quality metrics."""
    from spikeinterface.core import create_sorting_analyzer

    analyzer = create_sorting_analyzer(
        sorting,
        recording,
        format="binary_folder",
        folder=folder,
        sparse=True,
        overwrite=True,
        job_kwargs=job_kwargs,
    )
    # Job kwargs for the extensions come from SpikeInterface's globals (set by the pipeline).
    # One at a time, so a long postprocess shows progress in the job log.
    for i, (name, params) in enumerate(_EXTENSIONS.items(), start=1):
        log.info("postprocess: %s (%d/%d)", name, i, len(_EXTENSIONS) + 1)
        analyzer.compute(name, **params)
    log.info("postprocess: quality_metrics (%d/%d)", len(_EXTENSIONS) + 1, len(_EXTENSIONS) + 1)
    # Presence ratio needs several bins: 60 s bins (the default) on a short recording are NaN.
    bin_s = max(1.0, min(60.0, recording.get_total_duration() / 10.0))
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

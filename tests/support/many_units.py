"""A Neuropixels-hour-sized sorting without sorting one: the run page and figures at size.

Sorting and analyzing a recording with 400 units takes far longer than a test or a
benchmark may, and the page only reads what the analyzer already holds. So this builds
what the worker would have at that point, from a seed:

* ``quality_metrics.csv``: generated quality and template metrics, labelled by the
  worker's own rule (:func:`spikebatch.worker.labels.label_metrics`) and written the way
  the postprocess stage writes them;
* :class:`SyntheticAnalyzer`: the few things of a SortingAnalyzer that report.py reads
  (templates, main channels, unit locations, the spike vector, spike amplitudes) on a
  384-channel Neuropixels 1.0 layout, with ``spikes`` spikes spread over ``duration_s``;
* the report figures drawn from them by :func:`spikebatch.worker.report.write_report`,
  and a run page of one or several such probes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: An hour of a Neuropixels 1.0 probe: 384 channels at 30 kHz.
CHANNELS = 384
SAMPLING_HZ = 30_000.0
DURATION_S = 3600.0
#: About what a sorter finds on such an hour (a million spikes over 400 units).
SPIKES = 1_000_000
#: Template length (samples) and the peak's index: 1 ms before, 2 ms after at 30 kHz.
_SAMPLES, _NBEFORE = 90, 30


def metrics_table(n_units: int, *, seed: int = 0, duration_s: float = DURATION_S) -> Any:
    """``n_units`` rows of plausible quality + template metrics, labelled by the worker."""
    import pandas as pd

    from spikebatch.worker import labels

    rng = np.random.default_rng(seed)
    rate = rng.lognormal(mean=0.0, sigma=1.0, size=n_units)
    snr = rng.lognormal(mean=1.7, sigma=0.5, size=n_units)
    quality = pd.DataFrame(
        {
            "num_spikes": np.maximum(1, (rate * duration_s).astype(int)),
            "firing_rate": rate,
            "presence_ratio": np.clip(rng.beta(8, 1, size=n_units), 0, 1),
            "snr": snr,
            "isi_violations_ratio": rng.exponential(0.2, size=n_units),
            "isi_violations_count": rng.poisson(5, size=n_units),
            "amplitude_cutoff": np.clip(rng.exponential(0.04, size=n_units), 0, 0.5),
        },
        index=pd.Index([str(u) for u in range(n_units)], name="unit_id"),
    )
    shape = pd.DataFrame(
        {
            "peak_to_trough_duration": rng.uniform(0.0002, 0.0012, size=n_units),
            "num_positive_peaks": rng.choice([0, 1, 2], p=[0.5, 0.4, 0.1], size=n_units),
            "num_negative_peaks": rng.choice([0, 1], p=[0.9, 0.1], size=n_units),
            "peak_after_to_trough_ratio": rng.uniform(0.0, 0.9, size=n_units),
            "waveform_baseline_flatness": rng.uniform(0.0, 0.55, size=n_units),
            "exp_decay": rng.uniform(0.012, 0.11, size=n_units),
        },
        index=quality.index,
    )
    unit_labels = labels.label_metrics(pd.concat([quality, shape], axis=1))
    return labels.labelled_quality_metrics(quality, unit_labels)


@dataclass
class _Extension:
    data: dict[str, Any]
    nbefore: int = _NBEFORE

    def get_data(self, operator: str = "average") -> Any:
        return self.data[operator]


@dataclass
class _Sorting:
    unit_ids: list[Any]
    spike_vector: Any

    def to_spike_vector(self) -> Any:
        return self.spike_vector

    def id_to_index(self, unit_id: Any) -> int:
        return self.unit_ids.index(unit_id)


@dataclass
class SyntheticAnalyzer:
    """What :mod:`spikebatch.worker.report` reads of a SortingAnalyzer, generated.

    Unit ``u``'s spike count follows ``metrics``' firing rates (scaled to ``spikes`` in
    all), its amplitude its SNR; its template is a biphasic spike on its main channel and
    its neighbours.
    """

    metrics: Any
    spikes: int = SPIKES
    duration_s: float = DURATION_S
    seed: int = 0
    sampling_frequency: float = SAMPLING_HZ
    unit_ids: list[Any] = field(init=False)
    sorting: _Sorting = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.unit_ids = list(self.metrics.index)
        n = len(self.unit_ids)
        self._main = rng.integers(0, CHANNELS, size=n)
        self._templates = _templates(self._main, self.metrics["snr"].to_numpy(float), rng)
        self._locations = _locations(self._main, rng)
        vector, amplitudes = _spikes(self.metrics, self.spikes, self.duration_s, self.seed)
        self._amplitudes = amplitudes
        self.sorting = _Sorting(self.unit_ids, vector)

    def get_extension(self, name: str) -> _Extension:
        data = {
            "templates": lambda: self._templates,
            "unit_locations": lambda: {"average": self._locations},
            "spike_amplitudes": lambda: {"average": self._amplitudes},
        }[name]()
        return _Extension(data)

    def get_main_channels(self, outputs: str = "index", with_dict: bool = True) -> Any:
        return dict(zip(self.unit_ids, self._main.tolist(), strict=True))

    def get_channel_locations(self) -> Any:
        return channel_locations()

    def get_total_duration(self) -> float:
        return self.duration_s


def channel_locations() -> Any:
    """Neuropixels 1.0: four staggered columns, 20 um apart in depth (x, y in um)."""
    index = np.arange(CHANNELS)
    x = np.array([43.0, 11.0, 59.0, 27.0])[index % 4]
    y = 20.0 * (index // 2)
    return np.column_stack([x, y])


def _templates(main: Any, snr: Any, rng: Any) -> dict[str, Any]:
    """Average and sd templates (units x samples x channels): a spike around each main channel."""
    t = np.arange(_SAMPLES) - _NBEFORE
    shape = -np.exp(-0.5 * (t / 4.0) ** 2) + 0.35 * np.exp(-0.5 * ((t - 14) / 8.0) ** 2)
    average = np.zeros((len(main), _SAMPLES, CHANNELS), dtype=np.float32)
    for i, (channel, amplitude) in enumerate(zip(main, 10.0 * snr, strict=True)):
        for offset in range(-6, 7):
            ch = channel + offset
            if 0 <= ch < CHANNELS:
                average[i, :, ch] = amplitude * shape * np.exp(-abs(offset) / 3.0)
    std = np.abs(average) * 0.2 + rng.uniform(5.0, 12.0, size=(len(main), 1, 1)).astype(np.float32)
    return {"average": average, "std": std}


def _locations(main: Any, rng: Any) -> Any:
    x, y = channel_locations()[main].T
    return np.column_stack([x + rng.normal(0, 8, len(main)), y + rng.normal(0, 10, len(main))])


def _spikes(metrics: Any, total: int, duration_s: float, seed: int) -> tuple[Any, Any]:
    """SpikeInterface's spike vector (sorted by sample) and one amplitude per spike."""
    rng = np.random.default_rng(seed + 1)
    rates = metrics["firing_rate"].to_numpy(float)
    counts = np.maximum(1, np.round(total * rates / rates.sum())).astype(int)
    unit_index = np.repeat(np.arange(len(rates)), counts)
    samples = rng.integers(0, int(duration_s * SAMPLING_HZ), size=unit_index.size)
    order = np.argsort(samples, kind="stable")
    dtype = [("sample_index", "int64"), ("unit_index", "int64"), ("segment_index", "int64")]
    vector = np.zeros(unit_index.size, dtype=dtype)
    vector["sample_index"] = samples[order]
    vector["unit_index"] = unit_index[order]
    peak = -10.0 * metrics["snr"].to_numpy(float)[vector["unit_index"]]
    drift = 1.0 + 0.1 * np.sin(vector["sample_index"] / (duration_s * SAMPLING_HZ) * 2 * np.pi)
    amplitudes = (peak * drift * rng.normal(1.0, 0.15, size=vector.size)).astype(np.float32)
    return vector, amplitudes


def write_probe(folder: Path, n_units: int, *, seed: int = 0, spikes: int = SPIKES) -> dict:
    """``folder/quality_metrics.csv`` and ``folder/report/*.png`` as the worker writes them.

    Returns the seconds report.py took to draw and save each figure, by file name.
    """
    from spikebatch.worker import postprocess, report

    metrics = metrics_table(n_units, seed=seed)
    postprocess.write_quality_metrics(metrics, folder / "quality_metrics.csv")
    analyzer = SyntheticAnalyzer(metrics, spikes=spikes, seed=seed)
    seconds = {}
    for name in report.FIGURES:
        started = time.perf_counter()
        report.write_figure(name, analyzer, metrics, folder / "report", title="synthetic")
        seconds[name] = time.perf_counter() - started
    return seconds


def write_run(
    folder: Path, probes: Sequence[tuple[str | None, int]], *, spikes: int = SPIKES
) -> tuple[Path, dict[str, dict[str, float]]]:
    """A run folder as the worker leaves it, with its page: ``probes`` is (name, units) per
    probe (one unnamed probe: the results at the top, as a single-probe run writes them).

    Returns the page and, per probe, the seconds each figure took to draw and save.
    """
    from spikebatch.quality import LABELS
    from spikebatch.worker import run_page

    sources, seconds = [], {}
    counts = dict.fromkeys(LABELS, 0)
    for seed, (name, n_units) in enumerate(probes):
        where = folder / "probes" / name if name else folder
        seconds[name or "probe"] = write_probe(where, n_units, seed=seed, spikes=spikes)
        for row in run_page.read_probe_results(where).metrics:
            counts[row["label"]] += 1
        sources.append((name, where))
    page = run_page.write_run_page(folder, record(folder.name, probes, counts), sources)
    return page, seconds


def record(run_id: str, probes: Sequence[tuple[str | None, int]], counts: dict) -> dict:
    """A finished run's run.json, as much of it as the page shows."""
    units = sum(n for _, n in probes)
    return {
        "run_id": run_id,
        "status": "succeeded",
        "started_at": "2025-01-01T10:00:00+00:00",
        "finished_at": "2025-01-01T11:06:00+00:00",
        "input": {
            "source": "s3://lab-data/sub-01/sub-01_ses-np_ecephys.nwb",
            "size": 83_000_000_000,
            "n_channels": CHANNELS * len(probes),
            "sampling_frequency": SAMPLING_HZ,
            "duration_s": DURATION_S,
            "sorted_duration_s": DURATION_S,
            "digest": {"name": "sha256", "value": "ab" * 32, "verified": True},
        },
        "sorter": {"name": "kilosort4", "version": "4.0.30", "params": {"Th_universal": 9}},
        "timings_s": {"download": 600.0, "sort": 2400.0, "postprocess": 900.0, "export": 60.0},
        "cost": {"instance_type": "g5.2xlarge", "spot": True, "wall_s": 3960.0},
        "units": {"count": units, "spikes": SPIKES * len(probes)},
        "labels": {"counts": counts, "thresholds": []},
        "versions": {"spikeinterface": "0.105.3"},
    }

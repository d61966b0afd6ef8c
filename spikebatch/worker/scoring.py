"""Scoring a sorting against ground truth: the one home (the worker, ``make demo``, the tests).

SpikeInterface does the work: ``compare_sorter_to_ground_truth`` matches units (Hungarian,
at ``match_score``) and gives each true unit's accuracy, precision and recall, and the
counts of well-detected, false-positive, redundant and over-merged units; each true unit's
SNR is SpikeInterface's ``snr`` quality metric from a SortingAnalyzer of the *truth* on the
recording the sorter saw. The means count only true units with SNR >= ``snr_threshold``
(SpikeForest's convention), so units buried in noise do not count against a sorter.
The truth is taken as exhaustive (every unit in the recording is in it), which the
false-positive, redundant and over-merged counts rely on.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.contract import GROUND_TRUTH_SCORE

log = logging.getLogger(__name__)

SCHEMA = "spikebatch.ground_truth_score/1"
SCORE_FILE = GROUND_TRUTH_SCORE
_COUNTS = ("well_detected", "false_positive", "redundant", "overmerged")
_RATES = ("accuracy", "precision", "recall")


@dataclass(frozen=True, slots=True)
class ScoreParams:
    """The knobs (``GROUND_TRUTH_*``); the scores default to SpikeInterface's."""

    snr_threshold: float = 5.0
    match_score: float = 0.5
    well_detected_score: float = 0.8


@dataclass
class Score:
    """One sorting against its truth: per true unit, and the summary."""

    units: list[dict[str, Any]]
    summary: dict[str, Any]
    params: ScoreParams = field(default_factory=ScoreParams)
    num_sorted_units: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            **asdict(self.params),
            "exhaustive_gt": True,
            "num_sorted_units": self.num_sorted_units,
            "summary": self.summary,
            "units": self.units,
        }


def snr_of(truth: Any, recording: Any) -> dict[Any, float]:
    """Each true unit's SNR (SpikeInterface's ``snr``) on ``recording``."""
    from spikeinterface.core import create_sorting_analyzer
    from spikeinterface.metrics import compute_quality_metrics

    if truth.get_num_units() == 0:
        return {}
    analyzer = create_sorting_analyzer(truth, recording, sparse=False, format="memory")
    analyzer.compute(["random_spikes", "templates", "noise_levels"], verbose=False)
    snr = compute_quality_metrics(analyzer, metric_names=["snr"])["snr"]
    return {u: float(snr[u]) for u in truth.unit_ids}


def score(sorting: Any, truth: Any, recording: Any, params: ScoreParams | None = None) -> Score:
    """``sorting`` against ``truth`` (same samples as ``recording``, the sorter's input)."""
    from spikeinterface.comparison import compare_sorter_to_ground_truth

    params = params or ScoreParams()
    truth = truth.remove_empty_units()  # e.g. units silent in a MAX_DURATION_S slice
    snr = snr_of(truth, recording)
    comparison = compare_sorter_to_ground_truth(
        truth,
        sorting,
        exhaustive_gt=True,
        match_score=params.match_score,
        well_detected_score=params.well_detected_score,
    )
    performance = comparison.get_performance()
    match = comparison.hungarian_match_12
    units = []
    for unit in truth.unit_ids:
        matched = match[unit]
        units.append(
            {
                "true_unit_id": _plain(unit),
                "snr": _round(snr[unit], 3),
                **{rate: _round(float(performance.loc[unit, rate]), 4) for rate in _RATES},
                "best_match_unit_id": None if _is_unmatched(matched) else _plain(matched),
            }
        )
    counts = {
        "well_detected": comparison.count_well_detected_units(params.well_detected_score),
        "false_positive": comparison.count_false_positive_units(),
        "redundant": comparison.count_redundant_units(),
        "overmerged": comparison.count_overmerged_units(),
    }
    summary = summarize(units, counts, params.snr_threshold)
    return Score(units, summary, params, num_sorted_units=int(sorting.get_num_units()))


def summarize(
    units: list[dict[str, Any]], counts: dict[str, int], snr_threshold: float
) -> dict[str, Any]:
    """The summary: counts, and the mean rates over true units with SNR >= the threshold."""
    above = [u for u in units if u["snr"] is not None and u["snr"] >= snr_threshold]
    summary: dict[str, Any] = {
        "num_true_units": len(units),
        "num_true_units_above_snr": len(above),
        **{k: int(counts[k]) for k in _COUNTS},
    }
    for rate in _RATES:
        values = [u[rate] for u in above if u[rate] is not None]
        summary[rate] = round(float(np.mean(values)), 4) if values else None
    return summary


def combine(scores: dict[str, Score]) -> dict[str, Any]:
    """One summary over several parts: counts summed, means over every part's units."""
    units = [u for s in scores.values() for u in s.units]
    counts = {k: sum(s.summary[k] for s in scores.values()) for k in _COUNTS}
    threshold = next(iter(scores.values())).params.snr_threshold
    return summarize(units, counts, threshold)


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


class Scorer:
    """The run's scoring: each part after its sort, then the run's file and run.json's summary."""

    def __init__(self, truth: Any, params: ScoreParams) -> None:
        self.truth = truth  # ground_truth.Truth
        self.params = params
        self.scores: dict[str, Score] = {}

    def opened(self) -> dict[str, Any]:
        """run.json's ``ground_truth`` until the parts are scored: what was read."""
        return {
            "source": self.truth.source,
            "num_true_units": {
                k or "all": p.sorting.get_num_units() for k, p in self.truth.parts.items()
            },
            "summary": None,
        }

    def score_part(
        self, key: str, sorting: Any, traces: Any, applied: list[str], where: Path
    ) -> None:
        """Score one part on its sorter input (band-passed for the SNR if it was not)."""
        part_truth = self.truth.parts[key]
        truth = part_truth.sorting
        n_frames = traces.get_num_frames()
        if truth.to_spike_vector()["sample_index"].max(initial=-1) >= n_frames:
            truth = truth.frame_slice(0, n_frames)  # MAX_DURATION_S: the sorted part only
        result = score(sorting, truth, snr_recording(traces, applied), self.params)
        self.scores[key] = result
        document = result.as_dict() | {
            "ground_truth": self.truth.source,
            "part": key or None,
            "electrode_groups": part_truth.groups,
            "snr_on": _snr_on(applied),
        }
        write(where / SCORE_FILE, document)
        s = result.summary
        log.info(
            "ground truth%s: accuracy %s, precision %s, recall %s over %d/%d true units with "
            "SNR >= %g; %d well detected, %d false positive",
            f" ({key})" if key else "",
            s["accuracy"],
            s["precision"],
            s["recall"],
            s["num_true_units_above_snr"],
            s["num_true_units"],
            self.params.snr_threshold,
            s["well_detected"],
            s["false_positive"],
        )

    def finish(self, results: Path, record: dict[str, Any]) -> None:
        """With several parts, the run's own file (summary + each part's); run.json's summary."""
        several = len(self.scores) > 1 or "" not in self.scores
        summary = combine(self.scores) if several else self.scores[""].summary
        entry: dict[str, Any] = {
            "source": self.truth.source,
            "file": SCORE_FILE,
            **asdict(self.params),
            "summary": summary,
        }
        if several:
            entry["parts"] = {k: s.summary for k, s in self.scores.items()}
            write(
                results / SCORE_FILE,
                {
                    "schema": SCHEMA,
                    "ground_truth": self.truth.source,
                    **asdict(self.params),
                    "exhaustive_gt": True,
                    "summary": summary,
                    "parts": {
                        k: {"file": f"probes/{k}/{SCORE_FILE}", "summary": s.summary}
                        for k, s in self.scores.items()
                    },
                    "units": [{"part": k, **u} for k, s in self.scores.items() for u in s.units],
                },
            )
        record["ground_truth"] = entry


def snr_recording(traces: Any, applied: list[str]) -> Any:
    """The sorter's input, band-passed (300-6000 Hz) when its chain had no filter: Kilosort
    filters on the GPU, and an SNR on wide-band traces would count LFP as noise."""
    if any(step.startswith(("bandpass", "highpass")) for step in applied):
        return traces
    from spikeinterface.preprocessing import bandpass_filter

    return bandpass_filter(traces, freq_min=300.0, freq_max=6000.0)


def _snr_on(applied: list[str]) -> str:
    if any(step.startswith(("bandpass", "highpass")) for step in applied):
        return "the sorter's input (filtered)"
    return "the sorter's input, band-passed 300-6000 Hz"


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _is_unmatched(unit: Any) -> bool:
    """SpikeInterface marks a true unit without a match with -1."""
    return unit is None or (not isinstance(unit, str) and unit == -1)


def _plain(unit_id: Any) -> Any:
    if isinstance(unit_id, np.integer):
        return int(unit_id)
    if isinstance(unit_id, np.str_):
        return str(unit_id)
    return unit_id

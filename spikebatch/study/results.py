"""``study results``: what has finished, as one table (study.json), per-unit rows (units.csv)
and one page (index.html). Works mid-study: cases without a result are ``pending``.

Everything comes from each case's run.json and ground_truth_score.json (file:// or s3://),
so the same collector serves local and AWS studies.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikebatch import transfer
from spikebatch.contract import GROUND_TRUTH_SCORE, RUN_PAGE
from spikebatch.study.cases import Case
from spikebatch.study.spec import StudySpec
from spikebatch.study.state import CaseState

STUDY_JSON = "study.json"
UNITS_CSV = "units.csv"
INDEX_HTML = "index.html"
SCORE_KEYS = (
    "num_true_units",
    "num_true_units_above_snr",
    "well_detected",
    "false_positive",
    "redundant",
    "overmerged",
    "accuracy",
    "precision",
    "recall",
)
UNIT_COLUMNS = (
    "recording",
    "sorter",
    "label",
    "true_unit_id",
    "snr",
    "accuracy",
    "precision",
    "recall",
    "best_match_unit_id",
)


@dataclass(frozen=True, slots=True)
class Collected:
    """A study's results: the cases (study.json's) and every true unit (units.csv's)."""

    name: str
    cases: list[dict[str, Any]]
    units: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "cases": self.cases, "labels": label_standings(self.cases)}


def label_standings(cases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sorter label: its mean accuracy and its worst **shortfall** from the best label on
    any one recording (best accuracy there minus its own), over the recordings every label
    has scored. A label whose worst shortfall is small is never much worse than the best
    choice, on any recording: the rule a default is chosen by (README, "Studies").
    """
    labels = list(dict.fromkeys(c["label"] for c in cases))
    accuracy: dict[str, dict[str, float]] = {}
    for case in cases:
        value = (case.get("ground_truth") or {}).get("accuracy")
        if case["status"] == "succeeded" and value is not None:
            accuracy.setdefault(case["recording"], {})[case["label"]] = float(value)
    complete = {r: a for r, a in accuracy.items() if set(a) == set(labels)}
    standings = {}
    for label in labels:
        gaps = {r: max(a.values()) - a[label] for r, a in complete.items()}
        worst = max(gaps, key=lambda r: gaps[r], default=None)
        mine = [a[label] for a in accuracy.values() if label in a]
        standings[label] = {
            "recordings_scored": len(mine),
            "mean_accuracy": round(sum(mine) / len(mine), 4) if mine else None,
            "recordings_compared": len(complete),
            "worst_shortfall": round(gaps[worst], 4) if worst is not None else None,
            "worst_recording": worst,
        }
    return standings


def read_score(results_uri: str) -> dict[str, Any] | None:
    try:
        data = json.loads(transfer.read_bytes(results_uri + GROUND_TRUTH_SCORE))
    except (transfer.TransferError, FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recording_uri(case: Case) -> str:
    return case.recording.source


def _truth_uri(case: Case) -> str | None:
    truth = case.recording.ground_truth
    if truth is None:
        return None
    return case.recording.source if truth == "units" else truth


def _sort_cost(record: dict[str, Any], own: float | None, key: str) -> float | None:
    """The run's sort seconds, plus those of a failed run's sort it reused (``kept_sort``):
    a sort is compared on what it cost, not on the rerun that skipped it."""
    reused = (record.get("sort_reused") or {}).get(key)
    if reused is None:
        return own
    return round((own or 0.0) + reused, 2)


def case_row(
    case: Case, state: CaseState, output_uri: str, *, log_uri: str | None = None
) -> dict[str, Any]:
    """One entry of study.json's ``cases``; ``log_uri``: where its log is (local studies)."""
    record = state.record or {}
    results_uri = case.results_uri(output_uri)
    finished = state.status != "pending"
    timings = record.get("timings_s") or {}
    summary = ((record.get("ground_truth") or {}).get("summary")) if finished else None
    return {
        "recording": case.recording.name,
        "study": case.recording.study,
        "sorter": case.request.sorter,
        "label": case.label,
        "params": dict(case.request.sorter_params),
        "run_id": case.run_id,
        "status": state.status,
        "errored": state.status == "failed",
        "timed_out": state.status == "timed_out",
        "error": (record.get("error") or {}).get("message") if finished else None,
        "start_time": record.get("started_at") if finished else None,
        "end_time": record.get("finished_at") if finished else None,
        "run_time_s": _sort_cost(record, timings.get("sort"), "sort_s") if finished else None,
        "cpu_time_s": _sort_cost(record, (record.get("cpu_s") or {}).get("sort"), "cpu_s")
        if finished
        else None,
        "cost_usd": (record.get("cost") or {}).get("actual_usd") if finished else None,
        "num_units": (record.get("units") or {}).get("count") if finished else None,
        "recording_duration_s": (record.get("input") or {}).get("sorted_duration_s"),
        "results_uri": results_uri,
        "log_uri": log_uri if finished else None,
        "page_uri": results_uri + RUN_PAGE if finished and record.get("outputs") else None,
        "recording_uri": _recording_uri(case),
        "ground_truth_uri": _truth_uri(case),
        "ground_truth": {k: summary.get(k) for k in SCORE_KEYS} if summary else None,
    }


def unit_rows(case: Case, score: dict[str, Any]) -> list[dict[str, Any]]:
    """units.csv's rows of one scored case: one per true unit."""
    return [
        {
            "recording": case.recording.name,
            "sorter": case.request.sorter,
            "label": case.label,
            **{k: unit.get(k) for k in UNIT_COLUMNS[3:]},
        }
        for unit in score.get("units") or []
    ]


def collect(
    spec: StudySpec,
    cases: Sequence[Case],
    states: Sequence[CaseState],
    output_uri: str,
    *,
    log_uri: Callable[[Case], str | None] = lambda case: None,
) -> Collected:
    rows, units = [], []
    for case, state in zip(cases, states, strict=True):
        row = case_row(case, state, output_uri, log_uri=log_uri(case))
        rows.append(row)
        if state.status == "succeeded" and row["ground_truth"] is not None:
            score = read_score(case.results_uri(output_uri))
            if score is not None:
                units += unit_rows(case, score)
    return Collected(spec.name, rows, units)


def units_csv(units: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(UNIT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if u.get(k) is None else u[k]) for k in UNIT_COLUMNS} for u in units)
    return buffer.getvalue()


def write_results(collected: Collected, out_dir: Path, *, links_relative_to: str | None) -> Path:
    """study.json, units.csv and index.html into ``out_dir``; the page's path.

    ``links_relative_to``: the output URI the run pages sit under when it is ``out_dir``'s
    own ``runs/`` (local studies), so the page's links work wherever the folder is moved.
    """
    from spikebatch.study.page import render_study_page

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STUDY_JSON).write_text(json.dumps(collected.as_json(), indent=2) + "\n")
    (out_dir / UNITS_CSV).write_text(units_csv(collected.units))
    page = out_dir / INDEX_HTML
    page.write_text(render_study_page(collected, links_relative_to=links_relative_to))
    return page

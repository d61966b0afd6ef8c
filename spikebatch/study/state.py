"""Where each case stands, read from its run.json: the one record a run leaves behind.

A case is **done** when run.json under its run id (which carries the recording's content
identity, :mod:`spikebatch.study.cases`) says ``succeeded``, with the truth the spec asks
for, and (when known here) the installed sorter version. Stops are told apart by run.json's
``stop``: ``{"kind": "timeout"}`` is the study's own time limit (``timed_out``); any other stop
(Ctrl-C, a kill) left the case unfinished, so it runs again like one never started.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spikebatch import transfer
from spikebatch.contract import RUN_JSON
from spikebatch.study.cases import Case
from spikebatch.study.spec import StudySpec

#: What a case is, for the study's table and page.
Status = Literal["succeeded", "failed", "timed_out", "pending"]
#: Why a case without a usable result has none (it runs without --rerun flags).
Unfinished = Literal["new", "interrupted", "running", "stale"]


@dataclass(frozen=True, slots=True)
class CaseState:
    status: Status
    record: dict[str, Any] | None = None
    why: Unfinished | None = None  # set when status is "pending"
    detail: str = ""

    @property
    def timed_out(self) -> bool:
        return self.status == "timed_out"


def read_record(results_uri: str) -> dict[str, Any] | None:
    """run.json of a run (file:// or s3://); None when there is none (yet)."""
    try:
        data = json.loads(transfer.read_bytes(results_uri + RUN_JSON))
    except (transfer.TransferError, FileNotFoundError):
        return None
    except ValueError:
        return None  # half-written by a run killed hard: as good as none
    return data if isinstance(data, dict) else None


def _wanted_truth(case: Case, spec: StudySpec, record: Mapping[str, Any]) -> str:
    """'' when the record's scoring is what the spec asks for, else why not."""
    want = case.recording.ground_truth
    have = record.get("ground_truth") or None
    if want is None:
        return ""
    if not have or not have.get("summary"):
        return "not scored yet"
    if have.get("source") != want:
        return f"scored against {have.get('source')}, the spec says {want}"
    knobs = {
        "snr_threshold": spec.snr_threshold,
        "match_score": spec.match_score,
        "well_detected_score": spec.well_detected_score,
    }
    for key, value in knobs.items():
        if value is not None and have.get(key) is not None and have[key] != value:
            return f"scored with {key} {have[key]}, the spec says {value}"
    return ""


def classify(
    case: Case,
    spec: StudySpec,
    record: Mapping[str, Any] | None,
    *,
    sorter_version: str | None = None,
) -> CaseState:
    """The state of one case from its run.json (None: no run yet)."""
    if record is None:
        return CaseState("pending", None, "new")
    rec = dict(record)
    status = rec.get("status")
    if status == "running":
        return CaseState("pending", rec, "running", f"running at {rec.get('stage')}")
    if status == "failed":
        error = rec.get("error") or {}
        if error.get("type") == "Interrupted":
            if (rec.get("stop") or {}).get("kind") == "timeout":
                return CaseState("timed_out", rec, detail=str(error.get("message", "")))
            return CaseState("pending", rec, "interrupted", "stopped before it finished")
        return CaseState("failed", rec, detail=f"{error.get('stage')}: {error.get('message')}")
    if status != "succeeded":
        return CaseState("pending", rec, "running", f"status {status!r}")
    version = (rec.get("sorter") or {}).get("version")
    if sorter_version is not None and version is not None and version != sorter_version:
        return CaseState("pending", rec, "stale", f"sorted by {version}, {sorter_version} here")
    if why := _wanted_truth(case, spec, rec):
        return CaseState("pending", rec, "stale", why)
    return CaseState("succeeded", rec)


def should_run(state: CaseState, *, rerun: bool = False, rerun_failed: bool = False) -> bool:
    """Whether ``study run`` runs the case: no result yet always; results only when asked."""
    if rerun:
        return True
    if state.status == "pending":
        return True
    return rerun_failed and state.status in ("failed", "timed_out")

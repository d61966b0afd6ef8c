"""Studies on AWS Batch: each sorter entry's cases without a result as one array job.

The cases are the same as a local study's (run ids carry the recording's content identity,
:mod:`spikebatch.study.cases`); the job is the one :mod:`spikebatch.control.submission`
builds for any request, with the entry's sorter, settings and resources applied once and
each child bringing its own input, ``RUN_ID`` (the case's) and ``GROUND_TRUTH`` (with the
spec's knobs) through the array manifest. So results land at
``s3://<bucket>/results/<run-id>/``, where ``study status`` / ``study results`` read them.

Where a case stands comes first from its run.json (:func:`spikebatch.study.state.classify`);
a case without a succeeded one is looked up in its run records (``runs/<run-id>/request.json``,
``status.json``): submitted and not ended (or submitted again after the run.json was written)
is in flight, never submitted twice; a job Batch failed before the worker could say so (no
run.json, or one left ``running`` by a hard kill) is ``failed``, or ``timed_out`` after the
entry's ``timeout_minutes`` (the job's attempt timeout).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from spikebatch.contract import Env
from spikebatch.control import records
from spikebatch.control.job_status import TERMINAL
from spikebatch.control.submission import (
    Deployment,
    SubmissionPlan,
    SubmittedJob,
    plan_runs,
    planned_run,
    submit,
)
from spikebatch.study.cases import Case
from spikebatch.study.spec import StudySpec
from spikebatch.study.state import CaseState, classify, read_record, should_run

READERS = 16  # run.json / records read in parallel: a study may have hundreds of cases


def _from_records(bucket: str, case: Case, state: CaseState) -> CaseState:
    """``state`` (from run.json, or its absence) corrected by the run's records."""
    request = records.get_json(bucket, records.record_key(case.run_id, "request.json"))
    if not isinstance(request, dict):
        return state  # never submitted
    status = records.get_json(bucket, records.record_key(case.run_id, "status.json"))
    status = status if isinstance(status, dict) else {}
    job_id, batch_status = request.get("job_id"), status.get("status")
    in_flight = CaseState("pending", state.record, "running", f"submitted (job {job_id})")
    if job_id and status.get("job_id") not in (None, job_id):
        return in_flight  # submitted again; status.json is still the older job's
    if job_id and _after(request.get("submitted_at"), state.record):
        return in_flight  # submitted again after the run that wrote run.json ended
    if state.status != "pending" or state.why == "stale":
        return state  # run.json's verdict on the job that ran
    if job_id and batch_status not in TERMINAL:
        return in_flight
    if batch_status == "FAILED":
        reason = str(status.get("status_reason") or "the Batch job failed")
        kind = "timed_out" if status.get("failure_kind") == "timeout" else "failed"
        return CaseState(kind, state.record or {"error": {"message": reason}}, detail=reason)
    return state


def _when(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _after(submitted_at: Any, record: dict[str, Any] | None) -> bool:
    """Whether a submission came after the run.json ``record`` was last written."""
    if not record or not submitted_at:
        return False
    submitted = _when(submitted_at)
    ended = max(
        (w for k in ("finished_at", "updated_at") if (w := _when(record.get(k)))), default=None
    )
    return submitted is not None and ended is not None and submitted > ended


def aws_states(
    spec: StudySpec, cases: Sequence[Case], output_uri: str, *, bucket: str
) -> list[CaseState]:
    """Each case's state from run.json under ``output_uri`` and the run records in ``bucket``."""

    def one(case: Case) -> CaseState:
        state = classify(case, spec, read_record(case.results_uri(output_uri)))
        return state if state.status == "succeeded" else _from_records(bucket, case, state)

    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(one, cases))


def should_submit(state: CaseState, *, rerun: bool = False, rerun_failed: bool = False) -> bool:
    """:func:`~spikebatch.study.state.should_run`, except that a case in flight (submitted,
    or its run.json says running) is left alone unless ``--rerun``."""
    if not rerun and state.status == "pending" and state.why == "running":
        return False
    return should_run(state, rerun=rerun, rerun_failed=rerun_failed)


def _array_run_id(spec: StudySpec, label: str, cases: Sequence[Case]) -> str:
    digest = hashlib.sha256("\n".join(c.run_id for c in cases).encode()).hexdigest()[:10]
    return f"study-{spec.name}-{label}-{len(cases)}-cases-{digest}"


def plan_study(
    spec: StudySpec, cases: Sequence[Case], todo: Sequence[bool], deployment: Deployment
) -> list[SubmissionPlan]:
    """One plan per sorter entry with cases to run (array job, or a plain job for one)."""
    by_label: dict[str, list[Case]] = {}
    for case, run in zip(cases, todo, strict=True):
        if run:
            by_label.setdefault(case.label, []).append(case)
    plans = []
    for label, chosen in by_label.items():
        entry = chosen[0].sorter
        runs = [
            planned_run(case.request, run_id=case.run_id, extra_env=case.truth_env(spec))
            for case in chosen
        ]
        sizes: dict[str, int] = {}
        for case, run in zip(chosen, runs, strict=True):
            key = run.input_env.get(Env.DANDI_ASSET_PATH.value) or run.input_env.get(
                Env.INPUT_URI.value
            )
            if key and case.recording.size:
                sizes[key] = case.recording.size
        timeout = entry.timeout_minutes * 60 if entry.timeout_minutes is not None else None
        plans.append(
            plan_runs(
                chosen[0].request,
                deployment,
                runs,
                run_id=_array_run_id(spec, label, chosen),
                attempt_timeout_s=timeout,
                input_sizes=sizes,
            )
        )
    return plans


def submit_study(
    plans: Sequence[SubmissionPlan], deployment: Deployment, *, region: str | None = None
) -> list[SubmittedJob]:
    """Submit each plan (records, manifest, SubmitJob: :func:`submission.submit`)."""
    return [submit(plan, deployment, submitted_by="study", region=region) for plan in plans]


def describe_plan(plan: SubmissionPlan) -> dict[str, Any]:
    """What a dry run shows of one job."""
    job = plan.submit_job
    return {
        "run_id": plan.run_id,
        "children": len(plan.runs),
        "job_queue": job["jobQueue"],
        "job_definition": job["jobDefinition"],
        "timeout_s": job["timeout"]["attemptDurationSeconds"],
        "resources": job["containerOverrides"].get("resourceRequirements", []),
    }


__all__ = ["aws_states", "describe_plan", "plan_study", "should_submit", "submit_study"]

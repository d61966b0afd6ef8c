"""Run records: what was submitted and what AWS Batch says happened, under ``runs/<run-id>/``.

``request.json`` is written at submission (CLI or S3 trigger); ``status.json`` is kept up
to date by the run-record Lambda from EventBridge "Batch Job State Change" events, so
failures that happen before the container starts (image pull, out of memory, timeout, a
job cancelled while stuck in RUNNABLE, a spot reclaim) still reach ``spikebatch status``.
A Batch state-change event's ``detail`` has the shape of a DescribeJobs entry, so one
function (:func:`summarize_job`) reads both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.idempotency import claim_once

if TYPE_CHECKING:
    from spikebatch.submission import SubmissionPlan, SubmittedJob

log = logging.getLogger(__name__)

RUNS_PREFIX = "runs"
RUN_ID_TAG = "spikebatch:run-id"
"""Batch job tag carrying the run id; state changes are mapped back to runs with it."""

TERMINAL = frozenset({"SUCCEEDED", "FAILED"})
_RANK = {s: i for i, s in enumerate(("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"))}
_RANK |= {"SUCCEEDED": 10, "FAILED": 10}
_HISTORY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class FailureKind:
    """A declared way for a Batch job to fail: how to spot it and what to do about it."""

    name: str
    markers: tuple[str, ...]
    hint: str


FAILURE_KINDS: tuple[FailureKind, ...] = (
    FailureKind(
        "image-pull",
        ("CannotPullContainerError", "CannotInspectContainerError"),
        "the worker image could not be pulled: check the image in ECR and the instances' network",
    ),
    FailureKind(
        "out-of-memory",
        ("OutOfMemoryError", "Container killed due to memory usage"),
        "raise resources.memory_gib (or sort less: max_duration_s)",
    ),
    FailureKind(
        "timeout",
        ("Job attempt duration exceeded timeout",),
        "raise resources.timeout_hours or sort less with max_duration_s",
    ),
    FailureKind(
        "spot-reclaim",
        ("Host EC2",),
        "the spot instance was reclaimed and retries ran out; resubmit, or use --on-demand",
    ),
    FailureKind(
        "stuck-runnable",
        ("MISCONFIGURATION:", "CAPACITY:", "RUNNABLE"),
        "no instance could take the job: lower resources, or check the compute environment",
    ),
    FailureKind(
        "cancelled",
        ("cancel", "Terminated by", "terminated by"),
        "the job was cancelled or terminated on request",
    ),
    FailureKind(
        "worker-error",
        ("Essential container in task exited", "NonZeroExitCode"),
        "the worker exited with an error: see `spikebatch logs` and run.json",
    ),
)


def classify_failure(reasons: list[str]) -> FailureKind | None:
    """The first declared failure kind whose marker appears in any of ``reasons``."""
    for kind in FAILURE_KINDS:
        if any(marker in reason for reason in reasons for marker in kind.markers):
            return kind
    return None


def log_console_url(region: str, log_group: str, log_stream: str | None) -> str:
    """A CloudWatch console link to the job's log stream (or its log group)."""

    def enc(text: str) -> str:  # the console's double-escaping, with '%' written as '$'
        return quote(quote(text, safe=""), safe="").replace("%", "$")

    url = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{enc(log_group)}"
    )
    return f"{url}/log-events/{enc(log_stream)}" if log_stream else url


def _reasons(job: Mapping[str, Any]) -> list[str]:
    """Every human-readable reason Batch gives, most specific first."""
    out: list[str] = []
    attempts = job.get("attempts") or []
    for source in [job.get("container") or {}, *[a.get("container") or {} for a in attempts]]:
        if source.get("reason"):
            out.append(str(source["reason"]))
    for attempt in reversed(attempts):
        if attempt.get("statusReason"):
            out.append(str(attempt["statusReason"]))
    if job.get("statusReason"):
        out.append(str(job["statusReason"]))
    return list(dict.fromkeys(out))


def summarize_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Status, reason and log stream from a DescribeJobs entry or a state-change ``detail``."""
    attempts = job.get("attempts") or []
    container = dict(job.get("container") or {})
    last_container = (attempts[-1].get("container") or {}) if attempts else {}
    stream = container.get("logStreamName") or last_container.get("logStreamName")
    reasons = _reasons(job)
    status = str(job.get("status", "UNKNOWN"))
    kind = classify_failure(reasons) if status == "FAILED" else None
    exit_code = container.get("exitCode", last_container.get("exitCode"))
    return {
        "status": status,
        "status_reason": " | ".join(reasons) or None,
        "failure_kind": kind.name if kind else None,
        "hint": kind.hint if kind else None,
        "exit_code": exit_code,
        "attempts": len(attempts),
        "log_stream": stream,
    }


# -- S3 I/O -----------------------------------------------------------------------------


def _key(run_id: str, name: str) -> str:
    return f"{RUNS_PREFIX}/{run_id}/{name}"


def _put_json(bucket: str, key: str, data: Any) -> None:
    aws.client("s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(data, indent=1, sort_keys=True, default=str).encode(),
        ContentType="application/json",
    )


def _get_json(bucket: str, key: str) -> Any | None:
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise
    return json.loads(body)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_submitted(
    plan: SubmissionPlan, job: SubmittedJob | None, *, bucket: str, submitted_by: str
) -> None:
    """``runs/<run-id>/request.json`` for the job and, for arrays, for each child.

    Written once before SubmitJob (``job`` None: the run exists but has no Batch job yet)
    and again with the job id, so a failure in between never loses the request.
    """
    request = plan.request.model_dump(mode="json", exclude_none=True)
    base = {
        "request": request,
        "job_queue": plan.submit_job["jobQueue"],
        "job_name": plan.submit_job["jobName"],
        "output_uri": plan.output_uri,
        "submitted_by": submitted_by,
        "submitted_at": _now(),
    }
    records: list[dict[str, Any]] = []
    if plan.is_array:
        children = [
            {"run_id": r.run_id, "array_index": r.array_index, "source": r.source}
            for r in plan.runs
        ]
        records.append(
            {
                **base,
                "run_id": plan.run_id,
                "job_id": job.job_id if job else None,
                "children": children,
            }
        )
    for run in plan.runs:
        record = {
            **base,
            "run_id": run.run_id,
            "source": run.source,
            "job_id": job.child_job_id(run) if job else None,
            "results_uri": f"{plan.output_uri}/{run.run_id}/",
        }
        if run.array_index is not None:
            record |= {"parent_run_id": plan.run_id, "array_index": run.array_index}
        records.append(record)
    # An array of thousands must fit the submit Lambda's time limit: PUTs in parallel.
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda r: _put_json(bucket, _key(r["run_id"], "request.json"), r), records))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What ``runs/<run-id>/`` holds: the submission and the latest Batch status."""

    run_id: str
    submitted: dict[str, Any]
    status: dict[str, Any] | None

    @property
    def job_id(self) -> str | None:
        """None while (or if) SubmitJob has not succeeded."""
        job_id = self.submitted.get("job_id")
        return str(job_id) if job_id else None

    @property
    def children(self) -> list[dict[str, Any]]:
        return list(self.submitted.get("children") or [])

    @property
    def state(self) -> str:
        if self.status and self.status.get("status"):
            return str(self.status["status"])
        return "SUBMITTED" if self.job_id else "NOT SUBMITTED"


class RunNotFoundError(LookupError):
    pass


def load_run(bucket: str, run_id: str) -> RunRecord:
    submitted = _get_json(bucket, _key(run_id, "request.json"))
    if submitted is None:
        raise RunNotFoundError(
            f"no run {run_id!r} in s3://{bucket}/{RUNS_PREFIX}/ (see `spikebatch status`)"
        )
    return RunRecord(run_id, submitted, _get_json(bucket, _key(run_id, "status.json")))


def load_runs(bucket: str, run_ids: list[str]) -> list[RunRecord]:
    """Several records at once (S3 GETs in parallel; boto3 clients are thread-safe)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda run_id: load_run(bucket, run_id), run_ids))


def list_run_ids(bucket: str) -> list[str]:
    """Every run id with a record under ``runs/``, sorted."""
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    ids: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{RUNS_PREFIX}/", Delimiter="/"):
        ids += [p["Prefix"].split("/")[1] for p in page.get("CommonPrefixes", [])]
    return sorted(ids)


def live_statuses(job_ids: list[str | None]) -> dict[str, dict[str, Any]]:
    """Batch's own view of ``job_ids`` (DescribeJobs, 100 at a time), summarized."""
    job_ids = [j for j in job_ids if j]
    batch = aws.client("batch")
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 100):
        for job in batch.describe_jobs(jobs=job_ids[start : start + 100])["jobs"]:
            out[job["jobId"]] = summarize_job(job) | {
                "array": job.get("arrayProperties", {}).get("statusSummary")
            }
    return out


# -- state-change events → status.json --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """Where the run-record Lambda writes: its environment, typed."""

    bucket: str
    log_group: str
    region: str
    topic_arn: str | None = None
    idempotency_table: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RecordSettings:
        missing = [v for v in ("DATA_BUCKET", "LOG_GROUP_NAME") if not env.get(v)]
        if missing:
            raise RuntimeError(f"missing environment variables: {', '.join(missing)}")
        return cls(
            bucket=env["DATA_BUCKET"],
            log_group=env["LOG_GROUP_NAME"],
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            topic_arn=env.get("FAILURE_TOPIC_ARN") or None,
            idempotency_table=env.get("IDEMPOTENCY_TABLE") or None,
        )


def _run_id_of(detail: Mapping[str, Any]) -> str | None:
    tags = detail.get("tags") or {}
    if RUN_ID_TAG in tags:
        return str(tags[RUN_ID_TAG])
    # Array children may arrive without the parent's tags: ask Batch about the parent.
    parent_id = str(detail.get("jobId", "")).split(":")[0]
    if not parent_id:
        return None
    jobs = aws.client("batch").describe_jobs(jobs=[parent_id])["jobs"]
    return (jobs[0].get("tags") or {}).get(RUN_ID_TAG) if jobs else None


def _is_newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Events arrive out of order; a retry restarts the sequence with one more attempt."""
    if old is None:
        return True

    def order(s: Mapping[str, Any]) -> tuple[int, int]:
        return (int(s.get("attempts") or 0), _RANK.get(str(s.get("status")), -1))

    if old.get("status") in TERMINAL and new.get("status") not in TERMINAL:
        return False
    return order(new) >= order(old)


def record_state_change(
    detail: Mapping[str, Any], settings: RecordSettings, *, event_time: str | None = None
) -> dict[str, Any] | None:
    """Update ``runs/<run-id>/status.json`` from one Batch state change; notify on FAILED.

    Returns the status written, or None for jobs spikebatch did not submit.
    """
    tagged = _run_id_of(detail)
    if tagged is None:
        return None
    index = (detail.get("arrayProperties") or {}).get("index")
    run_id, parent = tagged, None
    if index is not None:
        parent_record = _get_json(settings.bucket, _key(tagged, "request.json")) or {}
        children = {c["array_index"]: c["run_id"] for c in parent_record.get("children", [])}
        if index not in children:
            log.warning("array child %s of %s has no run record", index, tagged)
            return None
        run_id, parent = children[index], tagged
    summary = summarize_job(detail)
    status = {
        "run_id": run_id,
        "job_id": detail.get("jobId"),
        "job_queue": detail.get("jobQueue"),
        "parent_run_id": parent,
        "array_index": index,
        "array_summary": (detail.get("arrayProperties") or {}).get("statusSummary"),
        **summary,
        "log_group": settings.log_group,
        "log_url": log_console_url(settings.region, settings.log_group, summary["log_stream"]),
        "updated_at": event_time or _now(),
    }
    key = _key(run_id, "status.json")
    old = _get_json(settings.bucket, key)
    if not _is_newer(status, old):
        return old
    history = list((old or {}).get("history") or [])
    history.append({k: status[k] for k in ("status", "status_reason", "updated_at")})
    status["history"] = history[-_HISTORY_LIMIT:]
    _put_json(settings.bucket, key, status)
    is_parent = "size" in (detail.get("arrayProperties") or {})
    if status["status"] == "FAILED" and not is_parent and settings.topic_arn:
        _notify_failure(status, settings)
    return status


def _notify_failure(status: Mapping[str, Any], settings: RecordSettings) -> None:
    if settings.idempotency_table and not claim_once(
        settings.idempotency_table, f"notify#{status['job_id']}#FAILED"
    ):
        return  # EventBridge delivered this FAILED event twice; one message is enough
    lines = [
        f"spikebatch run {status['run_id']} FAILED",
        f"reason: {status.get('status_reason') or 'not given by AWS Batch'}",
        f"kind: {status.get('failure_kind') or 'unknown'}",
    ]
    if status.get("hint"):
        lines.append(f"what to do: {status['hint']}")
    lines += [
        f"job: {status.get('job_id')} ({status.get('job_queue')})",
        f"logs: {status['log_url']}",
        f"record: s3://{settings.bucket}/{_key(str(status['run_id']), 'status.json')}",
    ]
    aws.client("sns", region=settings.region).publish(
        TopicArn=settings.topic_arn,
        Subject=f"spikebatch run FAILED: {status['run_id']}"[:100],
        Message="\n".join(lines),
        MessageAttributes={
            "failure_kind": {
                "DataType": "String",
                "StringValue": str(status.get("failure_kind") or "unknown"),
            }
        },
    )

"""Run records under ``runs/<run-id>/``: what was submitted and what Batch says happened.

``request.json`` is written at submission (CLI or S3 trigger, :mod:`.submission`);
``status.json`` is kept up to date by the run-record Lambda (:mod:`.state_changes`), so
failures that happen before the container starts (image pull, out of memory, timeout, a
job cancelled while stuck in RUNNABLE, a spot reclaim) still reach ``spikebatch status``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.contract import RUN_JSON, RUNS_PREFIX, run_results_uri
from spikebatch.control.job_status import summarize_job

log = logging.getLogger(__name__)


def record_key(run_id: str, name: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/{name}"


_MISSING = {"NoSuchKey", "404", "NotFound"}
# S3 conditional writes: 412 when the ETag moved on, 409 when another conditional write
# to the same key was in flight.
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
UPDATE_ATTEMPTS = 8


class UpdateConflict(RuntimeError):
    """Other writers kept changing the object; raised so that the event is retried."""


def put_json(bucket: str, key: str, data: Any, **conditions: str) -> None:
    """PutObject of ``data`` as JSON; ``conditions`` are S3's ``IfMatch``/``IfNoneMatch``."""
    aws.client("s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(data, indent=1, sort_keys=True, default=str).encode(),
        ContentType="application/json",
        **conditions,
    )


def _get_with_etag(bucket: str, key: str) -> tuple[Any | None, str | None]:
    try:
        answer = aws.client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if aws.error_code(exc) in _MISSING:
            return None, None
        raise
    return json.loads(answer["Body"].read()), answer["ETag"]


def get_json(bucket: str, key: str) -> Any | None:
    return _get_with_etag(bucket, key)[0]


#: What S3 answers for a missing key where ListBucket is not granted.
_DENIED = {"AccessDenied", "403"}


def read_run_json(results_uri: str | None) -> dict[str, Any] | None:
    """The worker's run.json under an ``s3://`` results URI; None where there is none yet,
    it cannot be read (denied, torn, not JSON) or the results are not in S3."""
    if not results_uri or not results_uri.startswith("s3://"):
        return None
    bucket, _, prefix = results_uri.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{RUN_JSON}" if prefix.strip("/") else RUN_JSON
    try:
        return get_json(bucket, key)
    except (ValueError, json.JSONDecodeError):  # a torn or foreign object
        log.warning("unreadable run.json at %s", results_uri)
        return None
    except ClientError as exc:
        if aws.error_code(exc) not in _DENIED:
            raise
        log.warning("run.json at %s not readable (%s)", results_uri, exc)
        return None


def update_json(
    bucket: str, key: str, change: Callable[[Any | None], Any | None]
) -> tuple[Any | None, bool]:
    """Read-modify-write of one JSON object that concurrent writers cannot corrupt.

    ``change(old)`` returns the new document, or None to leave the object as it is. The
    write is conditional on what was read (S3's If-Match on the ETag, If-None-Match for a
    new object); when another writer got there first, the object is read and changed
    again. Returns (the document now stored, whether this call wrote it).
    """
    for _ in range(UPDATE_ATTEMPTS):
        old, etag = _get_with_etag(bucket, key)
        new = change(old)
        if new is None:
            return old, False
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            put_json(bucket, key, new, **condition)
        except ClientError as exc:
            if aws.error_code(exc) in _CONFLICT:
                continue
            raise
        return new, True
    raise UpdateConflict(f"s3://{bucket}/{key} kept changing under {UPDATE_ATTEMPTS} updates")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def put_records(bucket: str, records: list[dict[str, Any]], name: str) -> None:
    """Write ``runs/<record['run_id']>/<name>`` for every record, 16 PUTs at a time."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda r: put_json(bucket, record_key(r["run_id"], name), r), records))


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


def child_submission(parent: RunRecord, child: dict[str, Any]) -> dict[str, Any]:
    """An array child's submission record, from its array's: campaigns write no record per
    child (one PUT per array instead of one per child), older arrays wrote the same fields."""
    base = {k: v for k, v in parent.submitted.items() if k not in ("children", "run_id")}
    index = child.get("array_index")
    run_id = str(child["run_id"])
    output_uri = str(parent.submitted.get("output_uri") or "")
    return {
        **base,
        "run_id": run_id,
        "source": child.get("source"),
        "job_id": f"{parent.job_id}:{index}" if parent.job_id and index is not None else None,
        "results_uri": run_results_uri(output_uri, run_id) if output_uri else None,
        "parent_run_id": parent.run_id,
        "array_index": index,
        **({"attempt": child["attempt"]} if "attempt" in child else {}),
    }


def load_run(bucket: str, run_id: str) -> RunRecord:
    """A run's record; an array child without its own ``request.json`` (a campaign's) is read
    through its array's, which its ``status.json`` (the run-record Lambda's) names."""
    submitted = get_json(bucket, record_key(run_id, "request.json"))
    status = get_json(bucket, record_key(run_id, "status.json"))
    if submitted is None and status and status.get("parent_run_id"):
        parent_id = str(status["parent_run_id"])
        parent_submitted = get_json(bucket, record_key(parent_id, "request.json"))
        if parent_submitted is not None:
            parent = RunRecord(parent_id, parent_submitted, None)
            child = next((c for c in parent.children if c.get("run_id") == run_id), None)
            submitted = child_submission(parent, child) if child else None
    if submitted is None:
        raise RunNotFoundError(
            f"no run {run_id!r} in s3://{bucket}/{RUNS_PREFIX} (see `spikebatch status`)"
        )
    return RunRecord(run_id, submitted, status)


def load_runs(bucket: str, run_ids: list[str]) -> list[RunRecord]:
    """Several records at once (S3 GETs in parallel; boto3 clients are thread-safe)."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda run_id: load_run(bucket, run_id), run_ids))


def load_children(bucket: str, parent: RunRecord) -> list[RunRecord]:
    """An array's children, from its record and each child's ``status.json`` (in parallel)."""

    def one(child: dict[str, Any]) -> RunRecord:
        run_id = str(child["run_id"])
        status = get_json(bucket, record_key(run_id, "status.json"))
        return RunRecord(run_id, child_submission(parent, child), status)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, parent.children))


def list_run_ids(bucket: str) -> list[str]:
    """Every run id with a record under ``runs/``, sorted."""
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    ids: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=RUNS_PREFIX, Delimiter="/"):
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

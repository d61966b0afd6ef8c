"""Batch job state changes -> ``runs/<run-id>/status.json``, and one SNS message per failure.

The run-record Lambda's logic (:mod:`.batch_events` parses the event). Events arrive out
of order, more than once and concurrently, and the Lambda may die at any instant:

- a late or repeated event never overwrites an outcome, and a repeated one adds nothing
  (not even a history line);
- ``status.json`` is read-modified-written with S3 conditional writes
  (:func:`~spikebatch.control.records.update_json`), so two events for one run processed
  at once cannot undo each other;
- the failure e-mail is sent under a leased claim (:mod:`.idempotency`) that is settled
  only after SNS accepted the message: a crash before that lets the retry send it (never
  zero e-mails), a redelivery after it sends nothing (one e-mail). Only a death in the
  instant between SNS's answer and the settle can send a second one.

An array child of a campaign (its array's request.json names the ``campaign_id``) that
ends adds its entry to the campaign's progress shards (:mod:`.campaign_progress`: state,
actual cost, finish time, failure kind and reason). That entry is keyed by the child and
written conditionally, so it is idempotent like the record, and a failure to write it
fails the event: Lambda's retry writes it, so a campaign's totals never silently miss a
child.

When a run ends, the month's spend ledger (:mod:`.budget`) gets what it cost (run.json's
``cost.actual_usd``) in place of its estimate, once per job, before the failure e-mail; a
failure to write it fails the event after the e-mail went out (and its claim was settled,
so the retry that counts it sends no second one).

After that, three extras that never fail the event (a problem is logged): a SUCCEEDED run's
publication to DANDI (run.json's ``publish``) is copied into status.json, so ``spikebatch
status`` says when it failed; and an array's summary page is written when the array ends
(and, for small arrays, whenever a child ends); and when an array of a campaign ends, the
campaign's pages (:mod:`.campaign_page`). All are idempotent, so Lambda's retry of
an invocation that died in them simply does them again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spikebatch import aws
from spikebatch.contract import RUN_ID_TAG, run_results_uri
from spikebatch.control import budget
from spikebatch.control.array_summary import write_array_summary
from spikebatch.control.campaign_page import write_campaign_pages
from spikebatch.control.campaign_progress import epoch_s, finished_entry, record_finished
from spikebatch.control.idempotency import (
    DONE,
    Claim,
    acquire,
    release_quietly,
    settle_quietly,
)
from spikebatch.control.job_status import TERMINAL, log_console_url, summarize_job
from spikebatch.control.records import get_json, now, read_run_json, record_key, update_json

log = logging.getLogger(__name__)

_RANK = {s: i for i, s in enumerate(("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"))}
_RANK |= {"SUCCEEDED": 10, "FAILED": 10}
_HISTORY_LIMIT = 50
#: The summary page of an array is rendered in this Lambda, inside its timeout
#: (``idempotency.HANDLER_TIMEOUT_S``), from one or two S3 reads per child: when the array
#: ends for arrays of up to SUMMARY_MAX_CHILDREN children, and also whenever a child ends
#: for arrays of up to SUMMARY_EACH_CHILD_MAX (so a small array's page fills in as it
#: runs). Larger arrays: ``spikebatch results RUN --open`` renders it on your machine.
SUMMARY_MAX_CHILDREN = 2000
SUMMARY_EACH_CHILD_MAX = 50


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
    """Events arrive out of order; a retry restarts the sequence with one more attempt, and
    a resubmitted run (same run id, a new job) replaces the older job's record."""
    if old is None:
        return True
    if new.get("job_id") != old.get("job_id"):
        return int(new.get("created_at") or 0) > int(old.get("created_at") or 0)

    def order(s: Mapping[str, Any]) -> tuple[int, int]:
        return (int(s.get("attempts") or 0), _RANK.get(str(s.get("status")), -1))

    if old.get("status") in TERMINAL and new.get("status") not in TERMINAL:
        return False
    return order(new) >= order(old)


_SAME = ("job_id", "status", "attempts", "status_reason")


def _changed(status: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The record to store after ``status``, or None when it adds nothing to ``old``."""
    if not _is_newer(status, old):
        return None
    if old is not None and all(old.get(k) == status.get(k) for k in _SAME):
        return None  # the same state again (a redelivery): not even a history line
    history = list((old or {}).get("history") or [])
    history.append({k: status[k] for k in ("status", "status_reason", "updated_at")})
    return {**status, "history": history[-_HISTORY_LIMIT:]}


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
    parent_record: dict[str, Any] = {}
    children: dict[int, str] = {}
    if index is not None:
        parent_record = get_json(settings.bucket, record_key(tagged, "request.json")) or {}
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
        "created_at": detail.get("createdAt"),
        **summary,
        "log_group": settings.log_group,
        "log_url": log_console_url(settings.region, settings.log_group, summary["log_stream"]),
        "updated_at": event_time or now(),
    }
    stored, _ = update_json(
        settings.bucket, record_key(run_id, "status.json"), lambda old: _changed(status, old)
    )
    is_parent = "size" in (detail.get("arrayProperties") or {})
    current = (stored or {}).get("job_id") == status["job_id"]
    failed_now = current and stored["status"] == "FAILED"
    ledger_error: Exception | None = None
    if current and stored["status"] in TERMINAL and not is_parent:
        try:
            _record_spend(detail, run_id, settings, parent_record if parent else None)
        except Exception as exc:  # raised once the e-mail is out, so that the retry counts it
            ledger_error = exc
    if status["status"] == "FAILED" and failed_now and not is_parent and settings.topic_arn:
        # Also when the record was already FAILED: the invocation that wrote it may have
        # died before the e-mail went out. The claim makes it one e-mail either way.
        _notify_failure(stored, settings)
    if ledger_error is not None:
        raise ledger_error
    if current and stored["status"] == "SUCCEEDED" and not is_parent:
        stored = _record_publication(stored, settings, parent_record if parent else None)
    campaign_id = parent_record.get("campaign_id")
    if current and stored["status"] in TERMINAL and parent is not None and campaign_id:
        finished_at = epoch_s(detail.get("stoppedAt")) or epoch_s(event_time) or epoch_s(now())
        _record_campaign_child(
            settings, str(campaign_id), parent, int(index), stored, parent_record, finished_at
        )
    if status["status"] in TERMINAL:
        if is_parent:
            _summary_quietly(settings, tagged, int(detail["arrayProperties"]["size"]))
            _campaign_pages_quietly(settings, tagged)
        elif parent is not None and len(children) <= SUMMARY_EACH_CHILD_MAX:
            _summary_quietly(settings, parent, len(children))
    return stored


def _results_uri(bucket: str, run_id: str, parent_record: Mapping[str, Any] | None) -> str | None:
    """Where the run's run.json is: an array child's from its parent's record (already
    read), a single run's from its own."""
    if parent_record is not None and parent_record.get("output_uri"):
        return run_results_uri(str(parent_record["output_uri"]), run_id)
    submitted = get_json(bucket, record_key(run_id, "request.json")) or {}
    return submitted.get("results_uri")


def _record_spend(
    detail: Mapping[str, Any],
    run_id: str,
    settings: RecordSettings,
    parent_record: Mapping[str, Any] | None,
) -> None:
    """The month's ledger (:mod:`.budget`): the run's estimate becomes what it cost, from
    run.json. Raises when the ledger cannot be written, so that Lambda's retry counts it."""
    results_uri = _results_uri(settings.bucket, run_id, parent_record)
    run = read_run_json(results_uri) if results_uri else None
    actual = ((run or {}).get("cost") or {}).get("actual_usd")
    counted = budget.record_finished(
        settings.bucket,
        run_id=run_id,
        job_id=str(detail.get("jobId")),
        created_at_ms=detail.get("createdAt"),
        actual_usd=float(actual) if actual is not None else None,
        started=bool(detail.get("startedAt")),
    )
    if counted:
        log.info("spend of %s: $%s", run_id, actual if actual is not None else "(estimate)")


def _record_publication(
    stored: dict[str, Any], settings: RecordSettings, parent_record: Mapping[str, Any] | None
) -> dict[str, Any]:
    """status.json with run.json's ``publish`` (status, dandiset, path, reason) copied in,
    so ``spikebatch status`` shows a failed publication; as it was if there is none."""
    try:
        results_uri = _results_uri(settings.bucket, str(stored["run_id"]), parent_record)
        if not results_uri or not results_uri.startswith(f"s3://{settings.bucket}/"):
            return stored
        publication = (read_run_json(results_uri) or {}).get("publish")
        if not publication:
            return stored
        summary = {
            k: publication[k]
            for k in ("status", "dandiset_id", "path", "asset_id", "url", "reason")
            if publication.get(k) is not None
        }

        def add(old: Any) -> Any:
            if (
                not old
                or old.get("job_id") != stored.get("job_id")
                or old.get("publish") == summary
            ):
                return None
            return {**old, "publish": summary}

        written, _ = update_json(
            settings.bucket, record_key(str(stored["run_id"]), "status.json"), add
        )
        return written or stored
    except Exception:
        log.warning(
            "could not copy the publication of %s into its record",
            stored.get("run_id"),
            exc_info=True,
        )
        return stored


def _summary_quietly(settings: RecordSettings, parent_run_id: str, n_children: int) -> None:
    """The array's summary page beside its children's results; a problem is only logged."""
    if n_children > SUMMARY_MAX_CHILDREN:
        log.info(
            "array %s has %d children (> %d): its summary is rendered by "
            "`spikebatch results %s --open`",
            parent_run_id,
            n_children,
            SUMMARY_MAX_CHILDREN,
            parent_run_id,
        )
        return
    try:
        uri = write_array_summary(settings.bucket, parent_run_id)
    except Exception:
        log.warning("could not write the summary of array %s", parent_run_id, exc_info=True)
        return
    log.info("array %s: summary page %s", parent_run_id, uri)


def _record_campaign_child(
    settings: RecordSettings,
    campaign_id: str,
    array_run_id: str,
    index: int,
    stored: Mapping[str, Any],
    parent_record: Mapping[str, Any],
    finished_at: float,
) -> None:
    """The ended child's entry in its campaign's progress shard, with its run.json's cost
    and error (the worker's words) where the worker wrote one."""
    results_uri = _results_uri(settings.bucket, str(stored["run_id"]), parent_record)
    run_json = None
    if results_uri and results_uri.startswith(f"s3://{settings.bucket}/"):
        run_json = read_run_json(results_uri)
    child = {"run_id": stored["run_id"], "array_index": index}
    entry = finished_entry(child, stored, run_json, finished_at=finished_at)
    record_finished(settings.bucket, campaign_id, array_run_id, index, entry)


def _campaign_pages_quietly(settings: RecordSettings, array_run_id: str) -> None:
    """When an array of a campaign ends, the campaign's pages; a problem is only logged."""
    try:
        submitted = get_json(settings.bucket, record_key(array_run_id, "request.json")) or {}
        campaign_id = submitted.get("campaign_id")
        if not campaign_id:
            return
        uri = write_campaign_pages(settings.bucket, str(campaign_id))
    except Exception:
        log.warning("could not write the pages of %s's campaign", array_run_id, exc_info=True)
        return
    log.info("campaign %s: page %s", campaign_id, uri)


def _notify_failure(status: Mapping[str, Any], settings: RecordSettings) -> None:
    claim: Claim | str | None = None
    if settings.idempotency_table:
        claim = acquire(settings.idempotency_table, f"notify#{status['job_id']}#FAILED")
        if not isinstance(claim, Claim):
            return  # already sent (EventBridge delivered this FAILED event twice)
    try:
        _publish_failure(status, settings)
    except BaseException:
        if claim is not None:
            release_quietly(claim)
        raise
    if claim is not None:
        settle_quietly(claim, DONE)


def _publish_failure(status: Mapping[str, Any], settings: RecordSettings) -> None:
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
        f"record: s3://{settings.bucket}/{record_key(str(status['run_id']), 'status.json')}",
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

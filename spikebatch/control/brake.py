"""The budget brake: AWS Budgets says the month's actual cost passed the budget, so the
job queues stop taking work until a person has looked (README, "Budgets").

The brake Lambda's logic. AWS Budgets publishes its 100 % ACTUAL alert to the stack's brake
topic (one of its own: Budgets messages are plain text with no attributes to filter on,
so the shared failure topic could not route them); the Lambda sets both job queues to
DISABLED (Batch takes no new jobs) and both compute environments to DISABLED (Batch places
no queued job: a disabled queue alone still dispatches the jobs already in it; running jobs
finish either way), writes ``brake.json`` in the data bucket saying when and why, and tells
the failure topic. ``spikebatch queues enable`` takes the
brake off (:func:`release_brake`); ``spikebatch status`` shows it (:func:`brake_state`).
Every step is idempotent, so Lambda's retry of a failed invocation simply does it again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.contract import BRAKE_KEY
from spikebatch.control.records import get_json, now, put_json

log = logging.getLogger(__name__)

ENABLED, DISABLED = "ENABLED", "DISABLED"
# "Budget Name: SpikeBatch-monthly", "Alert Type: ACTUAL", "ACTUAL Amount: $103.47" ...
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z ]{2,40}?)\s*:\s*(\S.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class BrakeSettings:
    """The brake Lambda's environment, typed."""

    bucket: str
    queue_arns: tuple[str, ...]
    compute_environment_arns: tuple[str, ...] = ()
    topic_arn: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BrakeSettings:
        needed = ("DATA_BUCKET", "JOB_QUEUE_ARNS", "COMPUTE_ENVIRONMENT_ARNS")
        missing = [v for v in needed if not env.get(v)]
        if missing:
            raise RuntimeError(f"missing environment variables: {', '.join(missing)}")
        return cls(
            bucket=env["DATA_BUCKET"],
            queue_arns=_arns(env["JOB_QUEUE_ARNS"]),
            compute_environment_arns=_arns(env["COMPUTE_ENVIRONMENT_ARNS"]),
            topic_arn=env.get("FAILURE_TOPIC_ARN") or None,
        )


def _arns(joined: str) -> tuple[str, ...]:
    return tuple(a for a in joined.split(",") if a)


def budget_alert(message: str) -> dict[str, str] | None:
    """The labelled lines of an AWS Budgets alert ("Budget Name", "Alert Type",
    "Budgeted Amount", "ACTUAL Amount"...); None unless it is an ACTUAL alert, so a
    forecast or any other message on the topic never stops the queues."""
    fields = {k.strip(): v for k, v in _FIELD.findall(message)}
    if fields.get("Alert Type", "").upper() != "ACTUAL":
        return None
    return fields


def set_state(queue_arns: Sequence[str], environment_arns: Sequence[str], state: str) -> None:
    """DISABLED: the queues take no new jobs, then the compute environments place none of
    the queued ones (running jobs finish; idle instances scale in). ENABLED: the other way
    round, so nothing is accepted before it can be placed."""
    batch = aws.client("batch")

    def queues() -> None:
        for arn in queue_arns:
            batch.update_job_queue(jobQueue=arn, state=state)

    def environments() -> None:
        for arn in environment_arns:
            batch.update_compute_environment(computeEnvironment=arn, state=state)

    for step in (queues, environments) if state == DISABLED else (environments, queues):
        step()


def apply_brake(
    settings: BrakeSettings, alert: Mapping[str, str], message: str, subject: str | None
) -> dict[str, Any]:
    """Disable the queues first (what matters), then record why, then tell people."""
    set_state(settings.queue_arns, settings.compute_environment_arns, DISABLED)
    actual = alert.get("ACTUAL Amount") or "?"
    reason = (
        f"AWS Budgets: actual cost {actual} passed the budget"
        f" {alert.get('Budgeted Amount') or '?'} ({alert.get('Budget Name') or 'budget'})"
    )
    record = {
        "braked_at": now(),
        "reason": reason,
        "queues": list(settings.queue_arns),
        "compute_environments": list(settings.compute_environment_arns),
        "alert": dict(alert),
        "subject": subject,
        "message": message,
    }
    put_json(settings.bucket, BRAKE_KEY, record)
    if settings.topic_arn:
        aws.client("sns").publish(
            TopicArn=settings.topic_arn,
            Subject="spikebatch: job queues DISABLED by the budget brake",
            Message=(
                f"{reason}.\nThe job queues and compute environments are DISABLED: running"
                " jobs finish, queued jobs wait, new submissions are refused.\nAfter a look:"
                " `spikebatch queues enable`.\n"
                f"Record: s3://{settings.bucket}/{BRAKE_KEY}\n\n{message}"
            ),
        )
    return record


def handle_event(event: Any, settings: BrakeSettings) -> dict[str, Any]:
    """Every SNS record of ``event``: an ACTUAL budget alert brakes; anything else is
    logged and ignored."""
    from aws_lambda_powertools.utilities.data_classes import SNSEvent

    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        log.warning("not an SNS event: queues left as they are")
        return {"results": [{"status": "ignored", "error": "not an SNS event"}]}
    results = []
    for record in SNSEvent(dict(event)).records:
        message, subject = record.sns.message, record.sns.subject
        alert = budget_alert(message)
        if alert is None:
            log.warning("not an ACTUAL budget alert: queues left", extra={"subject": subject})
            results.append({"status": "ignored", "subject": subject})
            continue
        braked = apply_brake(settings, alert, message, subject)
        log.warning("job queues DISABLED", extra={"reason": braked["reason"]})
        results.append({"status": "braked", "reason": braked["reason"]})
    return {"results": results}


def handle(event: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """The brake Lambda's whole job: settings from its environment, then the event."""
    return handle_event(event, BrakeSettings.from_env(env))


@dataclass(frozen=True, slots=True)
class BrakeState:
    """What ``spikebatch status`` says: the brake's record (None when off) and the state
    of each queue and compute environment as Batch reports it."""

    record: dict[str, Any] | None
    states: dict[str, str]

    @property
    def disabled(self) -> list[str]:
        return [arn for arn, state in self.states.items() if state != ENABLED]


def brake_state(
    bucket: str, queue_arns: Sequence[str], environment_arns: Sequence[str]
) -> BrakeState:
    """The record, and the states where Batch tells them (a user who may not describe
    queues still sees the brake: ``status`` must not fail over it)."""
    batch = aws.client("batch")
    states: dict[str, str] = {}
    try:
        queues = batch.describe_job_queues(jobQueues=list(queue_arns))["jobQueues"]
        states = {q["jobQueueArn"]: q["state"] for q in queues}
        if environment_arns:
            found = batch.describe_compute_environments(computeEnvironments=list(environment_arns))
            states |= {e["computeEnvironmentArn"]: e["state"] for e in found["computeEnvironments"]}
    except ClientError as exc:
        log.warning("cannot read the queues' states (%s)", aws.error_code(exc))
    return BrakeState(get_json(bucket, BRAKE_KEY), states)


def release_brake(
    bucket: str, queue_arns: Sequence[str], environment_arns: Sequence[str]
) -> dict[str, Any] | None:
    """Enable everything, then clear the record; returns the record that was cleared."""
    set_state(queue_arns, environment_arns, ENABLED)
    record = get_json(bucket, BRAKE_KEY)
    aws.client("s3").delete_object(Bucket=bucket, Key=BRAKE_KEY)
    return record

"""The failed-events queue: events the Lambdas gave up on, and resubmitting them.

Two kinds of messages land in the queue (the stack's ``FailedEventsQueueUrl``):

- Lambda's on-failure destination: an invocation record whose ``requestPayload`` is the
  event, after Lambda's two retries failed or the event waited longer than its maximum
  age (``requestContext.condition``: ``RetriesExhausted`` or ``EventAgeExceeded``);
- EventBridge's dead-letter queue: the Batch event itself, with ``TARGET_ARN`` and
  ``ERROR_MESSAGE`` attributes, when EventBridge could not hand it to the Lambda.

:func:`redrive` invokes the same function synchronously with the same event, so it goes
through the same idempotent path (claims, the lookup of an earlier job) with the
function's own role and settings, and deletes the message only after the function
succeeded. Only this stack's two functions are ever invoked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spikebatch import aws

# Longer than one synchronous invocation (HANDLER_TIMEOUT_S): nobody else sees the message
# while it is being redriven.
VISIBILITY_S = 120


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """One message of the queue, read."""

    message_id: str
    receipt_handle: str
    function: str
    """The function's name (from the ARN in the message)."""
    payload: Any
    what: str
    """The object(s) or job the event is about, in words."""
    why: str
    failed_at: str | None


def _function_name(arn: str) -> str:
    """``arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`` -> name."""
    parts = arn.split(":")
    return parts[6] if len(parts) > 6 and parts[5] == "function" else arn


def describe(payload: Any) -> str:
    """What an event is about: the S3 objects it announces, or the Batch job."""
    if not isinstance(payload, Mapping):
        return "an event that is not a JSON object"
    if isinstance(payload.get("Records"), list):
        found = []
        for record in payload["Records"]:
            s3 = (record or {}).get("s3") or {}
            key = (s3.get("object") or {}).get("key")
            found.append(f"s3://{(s3.get('bucket') or {}).get('name')}/{key}")
        return ", ".join(found) or "an S3 event without records"
    detail = payload.get("detail") if isinstance(payload.get("detail"), Mapping) else {}
    if payload.get("detail-type") == "Object Created":
        return f"s3://{detail.get('bucket', {}).get('name')}/{detail.get('object', {}).get('key')}"
    if "jobId" in detail:
        return f"job {detail.get('jobName') or ''} {detail['jobId']} {detail.get('status')}"
    return f"a {payload.get('detail-type') or 'foreign'} event"


def read(message: Mapping[str, Any]) -> FailedEvent:
    """A queue message as a :class:`FailedEvent`; ValueError if it is neither format."""
    try:
        body = json.loads(message["Body"])
    except (KeyError, ValueError):
        raise ValueError(f"message {message.get('MessageId')}: not JSON") from None
    attributes = message.get("MessageAttributes") or {}
    if isinstance(body, dict) and "requestContext" in body and "requestPayload" in body:
        context = body["requestContext"] or {}
        response = body.get("responsePayload")
        error = response.get("errorMessage") if isinstance(response, dict) else None
        return FailedEvent(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            function=_function_name(str(context.get("functionArn", ""))),
            payload=body["requestPayload"],
            what=describe(body["requestPayload"]),
            why=f"{context.get('condition', 'failed')}: {error or 'no error message'}",
            failed_at=body.get("timestamp"),
        )
    if "TARGET_ARN" in attributes:
        error = attributes.get("ERROR_MESSAGE", attributes.get("ERROR_CODE", {}))
        return FailedEvent(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            function=_function_name(attributes["TARGET_ARN"]["StringValue"]),
            payload=body,
            what=describe(body),
            why=f"EventBridge could not deliver it: {error.get('StringValue', 'unknown')}",
            failed_at=body.get("time") if isinstance(body, dict) else None,
        )
    raise ValueError(
        f"message {message['MessageId']}: neither a Lambda failure record nor an EventBridge dead letter"
    )


def receive(queue_url: str) -> list[dict[str, Any]]:
    """Every message in the queue, once; each stays hidden from others for
    :data:`VISIBILITY_S` (until deleted or shown again)."""
    sqs = aws.client("sqs")
    found: dict[str, dict[str, Any]] = {}
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=VISIBILITY_S,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        ).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in found]
        if not fresh:
            return list(found.values())
        found |= {m["MessageId"]: m for m in fresh}


def show_again(queue_url: str, event: FailedEvent) -> None:
    """Make a message visible again at once (it was only looked at, or its redrive failed)."""
    aws.client("sqs").change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=event.receipt_handle, VisibilityTimeout=0
    )


@dataclass(frozen=True, slots=True)
class Redriven:
    event: FailedEvent
    ok: bool
    answer: str


def _answer(result: Any) -> str:
    """The function's verdict in words: each object's outcome, or the run record's."""
    if isinstance(result, Mapping) and isinstance(result.get("results"), list):
        return "; ".join(
            f"{r.get('status')} {r.get('object') or ''}".strip() for r in result["results"]
        )
    if isinstance(result, Mapping) and "status" in result:
        return " ".join(str(result[k]) for k in ("status", "run_id", "batch_status") if k in result)
    return json.dumps(result)[:200]


def redrive_one(event: FailedEvent, queue_url: str, allowed: set[str]) -> Redriven:
    """Invoke ``event.function`` with the event and wait; delete the message if it worked."""
    if event.function not in allowed:
        show_again(queue_url, event)
        return Redriven(event, False, f"not this stack's function ({event.function}); left")
    try:
        response = aws.client("lambda").invoke(
            FunctionName=event.function,
            InvocationType="RequestResponse",
            Payload=json.dumps(event.payload).encode(),
        )
        result = json.loads(response["Payload"].read() or b"null")
    except (ClientError, BotoCoreError, ValueError) as exc:
        show_again(queue_url, event)
        return Redriven(event, False, f"could not invoke {event.function}: {exc}; left")
    if response.get("FunctionError"):
        show_again(queue_url, event)
        error = result.get("errorMessage") if isinstance(result, Mapping) else result
        return Redriven(event, False, f"failed again ({error}); left in the queue")
    aws.client("sqs").delete_message(QueueUrl=queue_url, ReceiptHandle=event.receipt_handle)
    return Redriven(event, True, _answer(result))


def redrive(
    queue_url: str,
    functions: set[str],
    *,
    dry_run: bool = False,
    limit: int | None = None,
    on_each: Callable[[FailedEvent | Redriven], None] = lambda _: None,
) -> list[Redriven | FailedEvent]:
    """Read the queue; unless ``dry_run``, redrive each event (at most ``limit``)."""
    done: list[Redriven | FailedEvent] = []
    for message in receive(queue_url):
        if limit is not None and len(done) >= limit:
            aws.client("sqs").change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            continue
        try:
            event = read(message)
        except ValueError as exc:
            failed = FailedEvent(
                message["MessageId"], message["ReceiptHandle"], "?", None, "?", str(exc), None
            )
            show_again(queue_url, failed)
            done.append(Redriven(failed, False, "unreadable; left in the queue"))
            on_each(done[-1])
            continue
        if dry_run:
            show_again(queue_url, event)
            done.append(event)
        else:
            done.append(redrive_one(event, queue_url, functions))
        on_each(done[-1])
    return done

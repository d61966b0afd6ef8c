"""``spikebatch redrive``: what Lambda gave up on is listed, resubmitted through the same
idempotent path, and deleted from the failed-events queue only once that worked.

moto cannot run Lambda functions (it would need Docker), so the Lambda client's Invoke is
answered by the real handlers, in this process, with their Lambda environment.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch import aws
from spikebatch.cli import app
from tests.submission.conftest import REGION, FakeStack, Invoke, client, load_event
from tests.submission.faults import FakeClock, Faults, Throttle, deliver
from tests.submission.lambda_support import event_for, nwb_bytes, submit_one, upload_event

ACCOUNT = "123456789012"


def lambda_failure_record(function: str, event: Any, error: str) -> str:
    """What Lambda's on-failure destination sends after the last retry failed
    (tests/events/lambda_failure_record.json)."""
    record = load_event(
        "lambda_failure_record",
        function=function,
        payload=json.dumps(event),
        error=json.dumps(error)[1:-1],
    )
    return json.dumps(record)


def eventbridge_dead_letter(queue_url: str, function: str, event: Any) -> None:
    """What EventBridge sends to its dead-letter queue: the event, and why, as attributes."""

    def text(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    client("sqs").send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(event),
        MessageAttributes={
            "RULE_ARN": text(f"arn:aws:events:{REGION}:{ACCOUNT}:rule/jobs"),
            "TARGET_ARN": text(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"),
            "ERROR_CODE": text("Throttling"),
            "ERROR_MESSAGE": text("Rate exceeded"),
        },
    )


@pytest.fixture
def handlers(
    stack: FakeStack,
    invoke: Invoke,
    record_invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
) -> list[dict[str, Any]]:
    """Lambda Invoke answered by the handlers in this process; returns what was invoked."""
    for name, value in {**stack.lambda_env, **stack.record_env}.items():
        monkeypatch.setenv(name, value)
    by_name: dict[str, Callable[[Any], Any]] = {
        "spikebatch-submit": invoke,
        "spikebatch-run-record": record_invoke,
    }
    sent: list[dict[str, Any]] = []

    def fake_invoke(**kwargs: Any) -> dict[str, Any]:
        sent.append(kwargs)
        try:
            result, error = by_name[kwargs["FunctionName"]](json.loads(kwargs["Payload"])), None
        except Exception as exc:  # what Lambda reports as a function error
            result, error = {"errorMessage": str(exc), "errorType": type(exc).__name__}, "Unhandled"
        answer = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode())}
        return answer | ({"FunctionError": error} if error else {})

    for region in (None, REGION):  # --region comes from AWS_REGION when it is set
        monkeypatch.setattr(aws.client("lambda", region=region), "invoke", fake_invoke)
    return sent


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "150"})


def test_an_upload_lambda_gave_up_on_is_listed_then_resubmitted_once(
    stack: FakeStack,
    handlers: list[dict[str, Any]],
    invoke: Invoke,
    faults: Faults,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an upload whose three attempts were all throttled (18 x 429 in a row) ...
    Throttle(throttled=18).install(monkeypatch)
    event = upload_event("uploads/unlucky.nwb", nwb_bytes())
    attempts = deliver(invoke, event, clock=clock, faults=faults)
    assert [a.outcome for a in attempts] == ["error"] * 3 and stack.jobs() == []
    # ... so Lambda sent it to the on-failure destination
    queue = stack.outputs["FailedEventsQueueUrl"]
    record = lambda_failure_record("spikebatch-submit", event, str(attempts[-1].error))
    client("sqs").send_message(QueueUrl=queue, MessageBody=record)

    listed = cli("redrive", "--dry-run")
    assert listed.exit_code == 0, listed.output
    assert "s3://spikebatch-data-test/uploads/unlucky.nwb  [spikebatch-submit at 2026-11-20" in (
        listed.output
    )
    assert "RetriesExhausted: ClientError: An error occurred (TooManyRequestsException)" in (
        listed.output
    )
    assert "1 failed event(s)" in listed.output and handlers == [] and stack.jobs() == []

    redriven = cli("redrive")
    assert redriven.exit_code == 0, redriven.output
    [call] = handlers
    assert call["FunctionName"] == "spikebatch-submit"
    assert call["InvocationType"] == "RequestResponse"
    assert json.loads(call["Payload"]) == event
    assert "resubmitted: s3://spikebatch-data-test/uploads/unlucky.nwb  ->  submitted" in (
        redriven.output
    )
    assert len(stack.jobs()) == 1
    assert "No failed events." in cli("redrive").output  # deleted once it worked
    # The same event again (a second copy in the queue) is a duplicate, not a second job.
    client("sqs").send_message(QueueUrl=queue, MessageBody=record)
    assert "->  duplicate" in cli("redrive").output
    assert len(stack.jobs()) == 1


def test_batch_events_eventbridge_could_not_deliver_are_recorded(
    stack: FakeStack, handlers: list[dict[str, Any]]
) -> None:
    job = submit_one(stack)
    queue = stack.outputs["FailedEventsQueueUrl"]
    eventbridge_dead_letter(queue, "spikebatch-run-record", event_for("batch_job_failed_oom", job))
    result = cli("redrive")
    assert result.exit_code == 0, result.output
    assert f"job {job.job_name} {job.job_id} FAILED  ->  recorded {job.run_id} FAILED" in (
        result.output
    )
    assert stack.get_json(f"runs/{job.run_id}/status.json")["failure_kind"] == "out-of-memory"
    assert len(stack.notifications()) == 1


def test_what_fails_again_or_is_not_ours_stays_queued(
    stack: FakeStack, handlers: list[dict[str, Any]], invoke: Invoke
) -> None:
    queue = stack.outputs["FailedEventsQueueUrl"]
    foreign = lambda_failure_record("someone-elses-function", {"Records": []}, "boom")
    client("sqs").send_message(QueueUrl=queue, MessageBody=foreign)
    client("sqs").send_message(QueueUrl=queue, MessageBody="not json")
    result = cli("redrive")
    assert result.exit_code == 1
    assert "NOT resubmitted: an S3 event without records  ->  not this stack's function" in (
        result.output
    )
    assert "unreadable; left in the queue" in result.output
    assert result.stderr.strip() == "error: 2 event(s) failed again; they stay queued"
    assert handlers == []
    left = client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert left == "2"

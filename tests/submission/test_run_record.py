"""Batch state changes → runs/<run-id>/status.json and an SNS message when a run FAILED."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from spikebatch.control import submission
from spikebatch.control.job_status import log_console_url
from spikebatch.control.request import parse_request
from spikebatch.control.submission import Deployment, plan_submission
from tests.submission.conftest import LOG_GROUP, REGION, FakeStack, Invoke, load_event
from tests.submission.lambda_support import capture_logs, event_for, log_lines, submit_one

STREAM = "spikebatch-gpu/default/5f8e4d0c6e0a4b7e9c1d2e3f4a5b6c7d"


def deployment(stack: FakeStack) -> Deployment:
    return Deployment.from_env(stack.lambda_env)


@pytest.fixture
def invoke(record_invoke: Invoke) -> Invoke:
    return record_invoke


FAILURES = [
    ("batch_job_failed_cannot_pull", "image-pull", "CannotPullContainerError", False),
    ("batch_job_failed_oom", "out-of-memory", "OutOfMemoryError: Container killed", True),
    ("batch_job_failed_timeout", "timeout", "Job attempt duration exceeded timeout", True),
    (
        "batch_job_failed_stuck_runnable",
        "stuck-runnable",
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
        False,
    ),
    (
        "batch_job_failed_spot_reclaim",
        "spot-reclaim",
        "Host EC2 (instance i-0a1b2c3d4e5f67890) terminated.",
        True,
    ),
]


@pytest.mark.parametrize(("event_name", "kind", "reason", "has_stream"), FAILURES)
def test_each_failure_kind_reaches_the_record_and_sns(
    record_env: FakeStack,
    event_name: str,
    kind: str,
    reason: str,
    has_stream: bool,
    invoke: Invoke,
    record_handler: Any,
) -> None:
    # GIVEN a submitted run
    job = submit_one(record_env)
    logs = capture_logs(record_handler)
    # WHEN Batch reports that it FAILED
    result = invoke(event_for(event_name, job))
    # THEN the record holds the real reason, and one SNS message says it with a log link
    assert result == {"status": "recorded", "run_id": job.run_id, "batch_status": "FAILED"}
    status = record_env.get_json(f"runs/{job.run_id}/status.json")
    assert status["status"] == "FAILED" and status["failure_kind"] == kind
    assert reason in status["status_reason"]
    assert status["log_url"] == log_console_url(REGION, LOG_GROUP, STREAM if has_stream else None)
    assert status["updated_at"] == "2026-11-20T13:00:00Z"
    [message] = record_env.notifications()
    assert message["Subject"] == f"spikebatch run FAILED: {job.run_id}"
    assert reason in message["Message"] and status["log_url"] in message["Message"]
    assert message["MessageAttributes"]["failure_kind"]["Value"] == kind
    [line] = [e for e in log_lines(logs) if e["message"] == f"{job.run_id} FAILED"]
    assert line["failure_kind"] == kind and line["job_id"] == job.job_id
    assert line["function_name"] == "spikebatch-run-record"


def test_log_link_escapes_like_the_console() -> None:
    url = log_console_url("eu-west-1", "/aws/batch/job", "gpu/default/abc")
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#logsV2:log-groups/log-group/$252Faws$252Fbatch$252Fjob/log-events/gpu$252Fdefault$252Fabc"
    )


def test_a_redelivered_failure_notifies_once(record_env: FakeStack, invoke: Invoke) -> None:
    job = submit_one(record_env)
    event = event_for("batch_job_failed_oom", job)
    invoke(event)
    invoke(event)
    assert len(record_env.notifications()) == 1


def test_the_same_state_change_delivered_twice_is_recorded_once(
    record_env: FakeStack, invoke: Invoke
) -> None:
    """EventBridge delivers at least once, and retries a throttled hand-over (the run-record
    Lambda's concurrency is capped): a repeat leaves one history entry per state."""
    job = submit_one(record_env)
    running = event_for("batch_job_running", job)
    invoke(running)
    first = record_env.get_json(f"runs/{job.run_id}/status.json")
    invoke(running)
    again = record_env.get_json(f"runs/{job.run_id}/status.json")
    assert [h["status"] for h in again["history"]] == ["RUNNING"]
    assert again == first


def test_late_events_do_not_overwrite_the_outcome(record_env: FakeStack, invoke: Invoke) -> None:
    job = submit_one(record_env)
    invoke(event_for("batch_job_succeeded", job))
    invoke(event_for("batch_job_running", job))  # EventBridge does not promise order
    status = record_env.get_json(f"runs/{job.run_id}/status.json")
    assert status["status"] == "SUCCEEDED"
    assert [h["status"] for h in status["history"]] == ["SUCCEEDED"]
    assert record_env.notifications() == []


def test_a_retry_after_a_spot_reclaim_moves_the_record_on(
    record_env: FakeStack, invoke: Invoke
) -> None:
    job = submit_one(record_env)
    running = event_for("batch_job_running", job)
    invoke(running)
    retried = copy.deepcopy(running)
    retried["detail"]["status"] = "RUNNABLE"
    retried["detail"]["attempts"] = [{"statusReason": "Host EC2 (instance i-1) terminated."}]
    invoke(retried)
    status = record_env.get_json(f"runs/{job.run_id}/status.json")
    assert (status["status"], status["attempts"]) == ("RUNNABLE", 1)
    assert [h["status"] for h in status["history"]] == ["RUNNING", "RUNNABLE"]


def test_array_children_map_to_their_own_runs(record_env: FakeStack, invoke: Invoke) -> None:
    request = parse_request({"dandiset_id": "000409", "asset_glob": "*.nwb"})
    plan = plan_submission(request, deployment(record_env), assets=["a.nwb", "b.nwb"])
    job = submission.submit(plan, deployment(record_env), submitted_by="test")
    child = event_for("batch_job_failed_oom", job)
    child["detail"]["jobId"] = f"{job.job_id}:1"
    child["detail"]["arrayProperties"] = {"index": 1}
    del child["detail"]["tags"]  # children may arrive untagged: Batch is asked about the parent
    assert invoke(child)["run_id"] == plan.runs[1].run_id
    status = record_env.get_json(f"runs/{plan.runs[1].run_id}/status.json")
    assert (status["parent_run_id"], status["array_index"]) == (plan.run_id, 1)
    assert status["failure_kind"] == "out-of-memory"
    [message] = record_env.notifications()
    assert plan.runs[1].run_id in message["Subject"]


def test_jobs_spikebatch_did_not_submit_are_ignored(record_env: FakeStack, invoke: Invoke) -> None:
    event = load_event("batch_job_failed_oom", job_id="not-ours", job_name="x", run_id="x")
    del event["detail"]["tags"]
    assert invoke(event)["status"] == "ignored"
    assert record_env.keys("runs/") == []


@pytest.mark.parametrize(
    "event",
    [
        [],
        {"detail-type": "Batch Job State Change", "source": "aws.batch"},
        {"detail-type": "Object Created", "source": "aws.s3", "detail": {}},
        {"detail-type": "Batch Job State Change", "source": "aws.batch", "detail": {"x": 1}},
    ],
)
def test_malformed_events_are_answered_not_raised(
    record_env: FakeStack, event: Any, invoke: Invoke
) -> None:
    assert invoke(event)["status"] == "ignored"
    assert record_env.keys("runs/") == []


def test_bucket_layout(record_env: FakeStack, invoke: Invoke) -> None:
    job = submit_one(record_env)
    invoke(event_for("batch_job_running", job))
    assert record_env.keys("runs/") == [
        f"runs/{job.run_id}/request.json",
        f"runs/{job.run_id}/status.json",
    ]

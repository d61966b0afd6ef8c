"""The run-record Lambda under faults: status.json is never corrupted, a FAILED run sends its
e-mail once (never zero), whatever call the Lambda dies at or how often the event comes.

Run with ``-s`` to print the table of outcomes.
"""

from __future__ import annotations

import copy
from typing import Any

from spikebatch.control import idempotency
from tests.submission.conftest import FakeStack, Invoke
from tests.submission.faults import FakeClock, Faults, deliver
from tests.submission.lambda_support import drain, event_for, submit_one

KILLED = {
    "crash": ("die", 0.0),
    "timeout": ("die", float(idempotency.HANDLER_TIMEOUT_S)),
    "503s": ("fail", 0.0),
}
mode_of = {kind: mode for kind, (mode, _) in KILLED.items()}


def mails_about(mails: list[dict[str, Any]], run_id: str) -> int:
    return sum(1 for m in mails if m["Subject"] == f"spikebatch run FAILED: {run_id}")


def test_a_failed_run_is_recorded_once_and_mailed_once_whatever_call_the_lambda_dies_at(
    record_env: FakeStack, record_invoke: Invoke, faults: Faults, clock: FakeClock
) -> None:
    reference = submit_one(record_env, "s3://lab-bucket/raw/reference.nwb")
    faults.arm(None)
    record_invoke(event_for("batch_job_failed_oom", reference))
    calls = list(faults.calls)
    assert calls == [
        "s3.GetObject",
        "s3.PutObject",
        # the month's spend ledger: where run.json is, run.json's cost, the ledger's shard
        "s3.GetObject",
        "s3.GetObject",
        "s3.GetObject",
        "s3.PutObject",
        "dynamodb.UpdateItem",
        "sns.Publish",
        "dynamodb.UpdateItem",
    ]
    rows = [f"run record: a clean run makes {len(calls)} calls: {', '.join(calls)}"]
    cases = []
    for at, call in enumerate(calls, start=1):
        for kind, (mode, died_after_s) in KILLED.items():
            job = submit_one(record_env, f"s3://lab-bucket/raw/b{at}-{kind}.nwb")
            attempts = deliver(
                record_invoke,
                event_for("batch_job_failed_oom", job),
                clock=clock,
                faults=faults,
                first=(at, mode),
                died_after_s=died_after_s,
            )
            assert attempts[-1].outcome == "ok", [a.error for a in attempts]
            status = record_env.get_json(f"runs/{job.run_id}/status.json")
            assert status["status"] == "FAILED" and status["failure_kind"] == "out-of-memory"
            assert [h["status"] for h in status["history"]] == ["FAILED"]
            cases.append((at, call, kind, len(attempts), job.run_id))
    mails = drain(record_env.queue_url)
    for at, call, kind, attempts, run_id in cases:
        sent = mails_about(mails, run_id)
        rows.append(
            f"  call {at} {call:<20} {kind:<8} -> {attempts} attempt(s), status.json FAILED"
            f" (1 history line), {sent} e-mail(s)"
        )
        # Killed after SNS accepted the message and before the claim was settled: the
        # retry cannot know it went out, and sends it again rather than risk none.
        settle = len(calls)
        expected = (
            2 if call == "dynamodb.UpdateItem" and at == settle and mode_of[kind] == "die" else 1
        )
        assert sent == expected, rows[-1]
    print("\n".join(rows))


def test_a_duplicate_failed_event_during_any_call_sends_one_e_mail(
    record_env: FakeStack, record_invoke: Invoke, faults: Faults, clock: FakeClock
) -> None:
    """EventBridge delivers the FAILED event twice at once: while the first invocation is at
    each of its calls, the second runs (and, if it found the e-mail claimed, is retried)."""
    run_ids = []
    for at in range(1, 6):
        job = submit_one(record_env, f"s3://lab-bucket/raw/dup{at}.nwb")
        event = event_for("batch_job_failed_oom", job)
        second: list[str] = []

        def run_second(event: dict[str, Any] = event, second: list[str] = second) -> None:
            try:
                second.append(record_invoke(copy.deepcopy(event))["status"])
            except idempotency.ClaimBusy:
                second.append("busy")

        faults.arm(at)
        faults.interleave = run_second
        assert record_invoke(event)["status"] == "recorded"
        faults.interleave = None
        if second == ["busy"]:
            clock.now += 60  # Lambda retries the busy one
            assert record_invoke(event)["status"] == "recorded"
        status = record_env.get_json(f"runs/{job.run_id}/status.json")
        assert [h["status"] for h in status["history"]] == ["FAILED"], at
        run_ids.append(job.run_id)
    mails = drain(record_env.queue_url)
    assert [mails_about(mails, run_id) for run_id in run_ids] == [1] * 5


def test_two_events_written_at_the_same_time_never_undo_each_other(
    record_env: FakeStack, record_invoke: Invoke, faults: Faults
) -> None:
    """Between one invocation's read of status.json and its write, another writes: the
    conditional write notices, and the first reads again before deciding."""
    for first, second, history in (
        ("batch_job_running", "batch_job_succeeded", ["SUCCEEDED"]),
        ("batch_job_succeeded", "batch_job_running", ["RUNNING", "SUCCEEDED"]),
    ):
        job = submit_one(record_env, f"s3://lab-bucket/raw/{first}.nwb")
        faults.arm(2)  # the write of status.json
        faults.interleave = lambda job=job, second=second: record_invoke(event_for(second, job))
        record_invoke(event_for(first, job))
        status = record_env.get_json(f"runs/{job.run_id}/status.json")
        assert status["status"] == "SUCCEEDED"
        assert [h["status"] for h in status["history"]] == history
        # status.json (a write that lost the race, then the winning one) and, once the run
        # ended in this invocation, the month's spend ledger
        assert faults.calls.count("s3.PutObject") == (1 if history == ["SUCCEEDED"] else 3)


def test_a_resubmitted_run_follows_its_new_job(
    record_env: FakeStack, record_invoke: Invoke
) -> None:
    old = submit_one(record_env, "s3://lab-bucket/raw/again.nwb")
    record_invoke(event_for("batch_job_succeeded", old))
    new = submit_one(record_env, "s3://lab-bucket/raw/again.nwb")  # same run id, a new job
    assert new.run_id == old.run_id and new.job_id != old.job_id
    runnable = event_for("batch_job_running", new)
    runnable["detail"]["status"] = "RUNNABLE"
    runnable["detail"]["createdAt"] += 60_000
    record_invoke(runnable)
    late = event_for("batch_job_running", old)  # the old job's event, arriving late
    record_invoke(late)
    status = record_env.get_json(f"runs/{new.run_id}/status.json")
    assert (status["job_id"], status["status"]) == (new.job_id, "RUNNABLE")
    assert [h["status"] for h in status["history"]] == ["SUCCEEDED", "RUNNABLE"]

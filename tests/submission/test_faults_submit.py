"""The submit Lambda under faults: exactly one job per upload, whatever instant it dies at.

For every AWS call a clean run makes, the first attempt is made to fail from that call on
(killed there, or every call answered 503), then Lambda's retries run on a fake clock
(1 min, then 2 min later). Each case must end with exactly one job for the upload, the
run record naming that job, the claim settled ``done``, and no event left for the
on-failure destination. Run with ``-s`` to print the table of outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from spikebatch import aws
from spikebatch.contract import RUN_ID_TAG
from spikebatch.control import campaign, idempotency, records
from spikebatch.control.submission import CLAIM_TAG
from tests.submission.conftest import BUCKET, FakeStack, Invoke, client
from tests.submission.faults import Attempt, Died, FakeClock, Faults, Throttle, deliver
from tests.submission.lambda_support import nwb_bytes, upload_event
from tests.support.dandi_server import FakeDandiArchive

KILLED = {
    "crash": ("die", 0.0),  # e.g. out of memory: the attempt ends at once
    "timeout": ("die", float(idempotency.HANDLER_TIMEOUT_S)),  # hung until Lambda killed it
    "503s": ("fail", 0.0),  # alive, but AWS answers nothing but errors
}


def jobs_of(stack: FakeStack, run_id: str) -> list[dict[str, Any]]:
    return [j for j in stack.jobs() if j["tags"].get(RUN_ID_TAG) == run_id]


def claim_item(stack: FakeStack, event: dict[str, Any]) -> dict[str, str]:
    obj = event["Records"][0]["s3"]["object"]
    pk = f"s3://{BUCKET}/{obj['key']}#{obj['eTag']}#{obj['sequencer']}"
    raw = client("dynamodb").get_item(
        TableName=stack.outputs["IdempotencyTableName"], Key={"pk": {"S": pk}}
    )["Item"]
    return {k: next(iter(v.values())) for k, v in raw.items()}


def final(attempts: list[Attempt]) -> dict[str, Any]:
    assert attempts[-1].outcome == "ok", [a.error for a in attempts]
    [outcome] = attempts[-1].result["results"]
    return outcome


def check_one_job(
    stack: FakeStack, event: dict[str, Any], attempts: list[Attempt], *, settled: bool = True
) -> str:
    """Exactly one job, the records and the claim name it; returns the final status.

    ``settled=False``: the last attempt could not record the claim as done (every call
    after SubmitJob failed, the settle included); it stays claimed, naming the job, so
    any later delivery adopts that job.
    """
    outcome = final(attempts)
    assert outcome["status"] in {"submitted", "recovered"}, outcome
    runs = outcome.get("run_ids", [])  # a recovered campaign names its jobs, not runs
    claim = claim_item(stack, event)
    if "campaign_id" in outcome:  # a request: a campaign, whose arrays carry its own tag
        record = stack.get_json(f"campaigns/{outcome['campaign_id']}/campaign.json")
        [array] = [a for a in record["arrays"] if a.get("job_id")]
        run_id = array["run_id"]
        tag = campaign.array_tag(outcome["campaign_id"], run_id)
    else:
        run_id = runs[0]
        tag = idempotency.Claim("", claim["pk"], "").tag
    [job] = jobs_of(stack, run_id)
    assert [j["jobId"] for j in stack.jobs() if j["tags"].get(CLAIM_TAG) == tag] == [job["jobId"]]
    assert job["jobId"] == outcome["job_id"]
    submitted = stack.get_json(f"runs/{run_id}/request.json")
    assert submitted["job_id"] == job["jobId"]
    if len(runs) > 1:
        assert [c["run_id"] for c in submitted["children"]] == runs
        for index, child in enumerate(
            records.load_children(BUCKET, records.load_run(BUCKET, run_id))
        ):
            assert child.job_id == f"{job['jobId']}:{index}"
    if settled:
        assert (claim["state"], claim["job_id"]) == ("done", job["jobId"])
    elif "campaign_id" in outcome:  # a later delivery re-plans: the campaign's records hold
        assert claim["state"] == "claimed"
    else:
        assert (claim["state"], claim["job_name"]) == ("claimed", job["jobName"])
    assert stack.keys("errors/") == []
    return str(outcome["status"])


def after_submit_job(calls: list[str]) -> int:
    """The (1-based) call right after SubmitJob in a clean run: the records write with the
    job id. Counted, not fixed: the calls before it (the budget ledger's reads) may change."""
    return calls.index("batch.SubmitJob") + 2


def clean_calls(invoke: Invoke, faults: Faults, event: dict[str, Any]) -> list[str]:
    """The calls a clean run of ``event`` makes (it is submitted)."""
    faults.arm(None)
    invoke(event)
    return list(faults.calls)


def run_every_boundary(
    name: str,
    stack: FakeStack,
    invoke: Invoke,
    faults: Faults,
    clock: FakeClock,
    upload: Callable[[str], dict[str, Any]],
) -> list[str]:
    """The table: one row per (boundary, kind of death), each checked for one job."""
    faults.arm(None)
    reference = upload(f"{name}-reference")
    invoke(reference)
    calls = list(faults.calls)
    assert calls[0] == "dynamodb.UpdateItem" and "batch.SubmitJob" in calls
    rows = [f"{name}: a clean run makes {len(calls)} calls: {', '.join(calls)}"]
    for at, call in enumerate(calls, start=1):
        for kind, (mode, died_after_s) in KILLED.items():
            event = upload(f"{name}-{at}-{kind}")
            attempts = deliver(
                invoke,
                event,
                clock=clock,
                faults=faults,
                first=(at, mode),
                died_after_s=died_after_s,
            )
            # An attempt that ended well although every call from `at` on failed made only
            # quiet calls from there (a campaign's claim release, then the settle, which is
            # its last call): unsettled. Unless it made fewer than `at` calls (how many
            # varies: the budget ledger's shards depend on the run ids): nothing failed.
            settled = not (mode == "fail" and len(attempts) == 1 and at <= len(attempts[0].calls))
            status = check_one_job(stack, event, attempts, settled=settled)
            rows.append(
                f"  call {at:2d} {call:<22} {kind:<8} -> {len(attempts)} attempt(s),"
                f" 1 job ({status})"
            )
    print("\n".join(rows))
    return rows


def test_an_upload_makes_one_job_whatever_call_the_lambda_dies_at(
    lambda_env: FakeStack, invoke: Invoke, faults: Faults, clock: FakeClock
) -> None:
    rows = run_every_boundary(
        "upload",
        lambda_env,
        invoke,
        faults,
        clock,
        lambda name: upload_event(f"uploads/{name}.nwb", nwb_bytes()),
    )
    assert all(" 1 job " in r for r in rows[1:])
    # Killed after SubmitJob returned (at the next call) and before the settle: the retry
    # takes the claim over once its lease has run out and adopts the job.
    at = after_submit_job(rows[0].split(" calls: ")[1].split(", "))
    after_submit = [r for r in rows[1:] if r.startswith(f"  call {at:2d}")]
    assert len(after_submit) == 3 and all("(recovered)" in r for r in after_submit)


def test_an_array_request_makes_one_array_job_whatever_call_the_lambda_dies_at(
    lambda_env: FakeStack,
    invoke: Invoke,
    faults: Faults,
    clock: FakeClock,
    archive: FakeDandiArchive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)

    cases = iter(range(1, 1000))

    def upload(name: str) -> dict[str, Any]:
        request = {
            "dandiset_id": "000409",
            "asset_glob": "sub-*/*.nwb",
            "max_duration_s": next(cases),  # a run id of its own
        }
        return upload_event(f"requests/{name}.json", json.dumps(request).encode())

    rows = run_every_boundary("array", lambda_env, invoke, faults, clock, upload)
    assert "s3.PutObject" in rows[0]  # records and manifest
    assert all(" 1 job " in r for r in rows[1:])


def test_a_retry_that_comes_early_waits_for_the_lease_instead_of_giving_up(
    lambda_env: FakeStack, invoke: Invoke, faults: Faults, clock: FakeClock
) -> None:
    """Lambda retries "about" a minute later: one at 45 s still takes over (it waits)."""
    at = after_submit_job(clean_calls(invoke, faults, upload_event("uploads/ref.nwb", nwb_bytes())))
    event = upload_event("uploads/early.nwb", nwb_bytes())
    attempts = deliver(
        invoke, event, clock=clock, faults=faults, first=(at, "die"), retry_delays_s=(45, 60)
    )
    assert [a.outcome for a in attempts] == ["died", "ok"]
    assert check_one_job(lambda_env, event, attempts) == "recovered"


def test_a_concurrent_duplicate_delivery_never_makes_a_second_job(
    lambda_env: FakeStack, invoke: Invoke, faults: Faults, clock: FakeClock
) -> None:
    """S3 delivers the same event twice at once: while the first invocation is live at
    each of its calls, the second runs. It waits, then fails so that Lambda retries it;
    the retry finds the work done."""
    faults.arm(None)
    invoke(upload_event("uploads/dup-reference.nwb", nwb_bytes()))
    calls = len(faults.calls)
    for at in range(1, calls + 1):
        event = upload_event(f"uploads/dup-{at}.nwb", nwb_bytes())
        second: list[str] = []

        def run_second(event: dict[str, Any] = event, second: list[str] = second) -> None:
            try:
                second.append(invoke(event)["results"][0]["status"])
            except idempotency.ClaimBusy:
                second.append("busy")

        faults.arm(at)
        faults.interleave = run_second
        [first] = invoke(event)["results"]
        faults.interleave = None
        if at == 1:  # the second ran before the first claimed: it won, the first is late
            assert (second, first["status"]) == (["submitted"], "duplicate")
            continue
        assert first["status"] == "submitted" and second == ["busy"], (at, first, second)
        clock.now += 60  # the busy one's retry
        assert invoke(event)["results"][0]["status"] == "duplicate"
        assert len(jobs_of(lambda_env, first["run_ids"][0])) == 1


@pytest.mark.parametrize("versioned", [False, True])
def test_uploading_the_same_bytes_again_is_a_new_upload(
    lambda_env: FakeStack, invoke: Invoke, versioned: bool
) -> None:
    if versioned:
        client("s3").put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
    first = upload_event("uploads/again.nwb", nwb_bytes())
    second = upload_event("uploads/again.nwb", nwb_bytes())
    statuses = [invoke(e)["results"][0]["status"] for e in (first, second, first, second)]
    assert statuses == ["submitted", "submitted", "duplicate", "duplicate"]
    assert len(lambda_env.jobs()) == 2


def test_submit_job_throttled_twelve_times_in_a_row_ends_in_one_job(
    lambda_env: FakeStack,
    invoke: Invoke,
    faults: Faults,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch answers 429 (TooManyRequestsException) twelve times: botocore's standard mode
    retries each invocation's SubmitJob 5 times with jittered backoff, the claim is released
    after each refused invocation, and Lambda's second retry gets the job through."""
    throttle = Throttle(throttled=12)
    throttle.install(monkeypatch)
    event = upload_event("uploads/throttled.nwb", nwb_bytes())
    attempts = deliver(invoke, event, clock=clock, faults=faults)
    assert [a.outcome for a in attempts] == ["error", "error", "ok"]
    assert all("TooManyRequestsException" in str(a.error) for a in attempts[:2])
    assert check_one_job(lambda_env, event, attempts) == "submitted"
    assert throttle.attempts == 13  # 6 + 6 + 1 HTTP requests
    assert len(throttle.sleeps) == 10 and all(0 <= s <= 20 for s in throttle.sleeps)
    assert claim_item(lambda_env, event)["claims"] == "3"


@pytest.mark.parametrize("lost", ["timeout", 500])
def test_a_submit_job_whose_answer_was_lost_is_never_sent_again_blindly(
    lambda_env: FakeStack,
    invoke: Invoke,
    faults: Faults,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    lost: Any,
) -> None:
    """Batch created the job but the answer never arrived (read timeout, 500): botocore
    must not resend (no idempotency token); the retry finds the job and adopts it."""
    throttle = Throttle(lose_answer=lost)
    throttle.install(monkeypatch)
    event = upload_event(f"uploads/lost-{lost}.nwb", nwb_bytes())
    attempts = deliver(invoke, event, clock=clock, faults=faults)
    assert [a.outcome for a in attempts] == ["error", "ok"]
    assert "SubmitOutcomeUnknown" in str(attempts[0].error)
    assert throttle.attempts == 1
    assert check_one_job(lambda_env, event, attempts) == "recovered"


def test_standard_retry_mode_is_configured_on_purpose() -> None:
    assert aws._CONFIG.retries == {"mode": "standard", "total_max_attempts": 6}


def test_a_job_submitted_before_the_request_vanished_stands(
    lambda_env: FakeStack, invoke: Invoke, faults: Faults, clock: FakeClock
) -> None:
    """Killed after SubmitJob; before the retry, the request's version is deleted for good.
    The retry cannot plan it any more, but finds the job: no rejection, still one job."""
    client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    faults.arm(None)  # where SubmitJob comes in a clean run of such a request
    invoke(upload_event("requests/other.json", b'{"input_uri": "s3://lab-bucket/raw/x.nwb"}'))
    at = after_submit_job(list(faults.calls))
    request = {"input_uri": "s3://lab-bucket/raw/vanishing.nwb"}
    event = upload_event("requests/vanishing.json", json.dumps(request).encode())
    faults.arm(at, "die")  # the records write after SubmitJob
    with pytest.raises(Died):
        invoke(event)
    faults.arm(None)
    obj = event["Records"][0]["s3"]["object"]
    client("s3").delete_object(Bucket=BUCKET, Key=obj["key"], VersionId=obj["versionId"])
    clock.now += 60
    [outcome] = invoke(event)["results"]
    [job] = [j for j in lambda_env.jobs() if "vanishing" in j["tags"][RUN_ID_TAG]]
    assert (outcome["status"], outcome["job_id"]) == ("recovered", job["jobId"])
    assert outcome["errors"][0]["message"].startswith("the object is gone or unreadable")
    assert lambda_env.keys("errors/") == []
    assert invoke(event)["results"][0]["status"] == "duplicate"

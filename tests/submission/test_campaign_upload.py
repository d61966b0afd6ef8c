"""Campaigns through ``requests/*.json``: the same model as the CLI, inside the submit
Lambda's time limit (the stack's ``HANDLER_TIMEOUT_S``, which tests/infra checks is the
function's Timeout in the synthesized template), or carried on by a follow-up invocation."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from spikebatch.control import campaign
from spikebatch.control.idempotency import HANDLER_TIMEOUT_S
from tests.submission.campaign_support import (
    ASSETS,
    DANDISET,
    PATHS,
    arrays,
    campaign_record,
    children,
)
from tests.submission.conftest import BUCKET, FakeStack, Invoke, client, load_event
from tests.submission.lambda_support import upload_event
from tests.support.dandi_server import FakeDandiArchive

REQUEST = {"dandiset_id": DANDISET, "asset_glob": "sub-*/*_ecephys.nwb"}


def event_of(key: str) -> dict[str, Any]:
    """The S3 event for an object already in the bucket (a continuation request)."""
    head = client("s3").head_object(Bucket=BUCKET, Key=key)
    event = load_event(
        "s3_object_created", bucket=BUCKET, key=key, etag=head["ETag"].strip('"'), version_id=""
    )
    obj = event["Records"][0]["s3"]["object"]
    obj["size"], obj["sequencer"] = head["ContentLength"], f"{time.monotonic_ns():018X}"
    del obj["versionId"]
    return event


def run_to_the_end(
    invoke: Invoke, event: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[float]]:
    """Invoke, then every follow-up the invocations leave, as S3 would; their wall times."""
    outcomes, seconds, pending = [], [], [event]
    while pending:
        started = time.monotonic()
        [outcome] = invoke(pending.pop())["results"]
        seconds.append(time.monotonic() - started)
        outcomes.append(outcome)
        if outcome.get("continuation"):
            pending.append(event_of(outcome["continuation"].removeprefix(f"s3://{BUCKET}/")))
    return outcomes, seconds


@pytest.fixture
def env(
    lambda_env: FakeStack, big_archive: FakeDandiArchive, monkeypatch: pytest.MonkeyPatch
) -> FakeStack:
    monkeypatch.setenv("DANDI_API_URL", big_archive.api_url)
    return lambda_env


def test_a_request_for_12000_assets_is_two_arrays_inside_the_time_limit(
    env: FakeStack, invoke: Invoke
) -> None:
    event = upload_event("requests/all-of-000800.json", json.dumps(REQUEST).encode())
    outcomes, seconds = run_to_the_end(invoke, event)
    assert all(s < HANDLER_TIMEOUT_S for s in seconds), seconds
    assert outcomes[0]["status"] == "submitted"
    assert [a["arrayProperties"]["size"] for a in arrays(env)] == [10_000, 2_000]
    counted = children(env)
    assert sorted(counted) == sorted(PATHS) and set(counted.values()) == {1}
    record = campaign_record(env)
    assert record["campaign_id"] == outcomes[0]["campaign_id"]
    assert record["request"]["asset_glob"] == REQUEST["asset_glob"]
    assert [a["job_id"] for a in record["arrays"]] == [a["jobId"] for a in arrays(env)]
    assert env.keys("errors/") == []

    # The same request again (a new upload of it): nothing new, all in flight.
    again = upload_event("requests/all-of-000800-again.json", json.dumps(REQUEST).encode())
    [outcome] = invoke(again)["results"]
    assert outcome["status"] == "skipped" and outcome["counts"]["in flight"] == ASSETS
    assert len(arrays(env)) == 2


def test_a_campaign_the_time_limit_cuts_short_goes_on_in_a_follow_up(
    env: FakeStack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only one array fits an invocation: the rest follows from requests/continue/.

    The margin is over the whole time limit, so no second array ever fits, however fast the
    machine (at ``HANDLER_TIMEOUT_S - 1`` a machine that planned and submitted in under a
    second fitted two).
    """
    monkeypatch.setattr(campaign, "TIME_MARGIN_S", HANDLER_TIMEOUT_S + 1)
    event = upload_event(
        "requests/paced.json", json.dumps({**REQUEST, "max_concurrent_jobs": 5000}).encode()
    )
    outcomes, seconds = run_to_the_end(invoke, event)
    assert all(s < HANDLER_TIMEOUT_S for s in seconds), seconds
    assert [len(o["job_ids"]) for o in outcomes] == [1, 1, 1]
    assert [bool(o.get("continuation")) for o in outcomes] == [True, True, False]
    assert outcomes[1]["counts"]["in flight"] == 5000
    jobs = arrays(env)
    assert [a["arrayProperties"]["size"] for a in jobs] == [5000, 5000, 2000]
    counted = children(env)
    assert sorted(counted) == sorted(PATHS) and set(counted.values()) == {1}
    assert env.keys("requests/continue/")  # the follow-ups' requests


def test_a_request_over_its_cost_cap_is_rejected_with_the_figures(
    env: FakeStack, invoke: Invoke
) -> None:
    event = upload_event(
        "requests/capped.json", json.dumps({**REQUEST, "max_cost_usd": 2}).encode()
    )
    [outcome] = invoke(event)["results"]
    assert outcome["status"] == "rejected"
    [error] = env.get_json("errors/capped.json")["errors"]
    assert error["field"] == "max_cost_usd"
    assert error["message"].startswith("the estimate for 12,000 runs is $")
    assert error["message"].endswith("over the cap of $2.00: nothing submitted")
    assert arrays(env) == [] and env.keys("runs/") == []

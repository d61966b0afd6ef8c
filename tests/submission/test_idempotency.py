"""Leased claims: one holder at a time, settled work is never redone, released or abandoned
work is taken over, and a delivery never mistakes a live claim for finished work."""

from __future__ import annotations

import pytest

from spikebatch.control import idempotency
from spikebatch.control.idempotency import Claim, ClaimBusy, ClaimLost, acquire
from tests.submission.conftest import FakeStack, client
from tests.submission.faults import FakeClock

KEY = "s3://bucket/requests/a.json#v1"


@pytest.fixture
def table(stack: FakeStack) -> str:
    return stack.outputs["IdempotencyTableName"]


def item(table: str) -> dict[str, str]:
    raw = client("dynamodb").get_item(TableName=table, Key={"pk": {"S": KEY}})["Item"]
    return {k: next(iter(v.values())) for k, v in raw.items()}


def test_the_timing_the_protocol_rests_on() -> None:
    # A holder is dead once its lease has run out, and the retry of a dead one comes later.
    assert idempotency.HANDLER_TIMEOUT_S < idempotency.LEASE_S < idempotency.FIRST_RETRY_S
    assert idempotency.LEASE_S - idempotency.HANDLER_TIMEOUT_S >= 10  # ListJobs settles


def test_first_claim_wins_and_a_live_one_is_waited_for_then_busy(
    table: str, clock: FakeClock
) -> None:
    first = acquire(table, KEY, object="s3://bucket/requests/a.json")
    assert isinstance(first, Claim) and first.replaced == {}
    stored = item(table)
    assert (stored["state"], stored["token"], stored["claims"]) == ("claimed", first.token, "1")
    assert int(stored["lease_until"]) == int(clock.now) + idempotency.LEASE_S
    assert int(stored["expires_at"]) > int(stored["lease_until"])
    start = clock.now
    with pytest.raises(ClaimBusy, match="being worked on by another invocation"):
        acquire(table, KEY)
    assert idempotency.WAIT_S <= clock.now - start < idempotency.WAIT_S + 3
    assert item(table)["token"] == first.token  # the live holder keeps it


@pytest.mark.parametrize("state", ["done", "rejected"])
def test_settled_work_is_a_duplicate_at_once(table: str, clock: FakeClock, state: str) -> None:
    claim = acquire(table, KEY)
    assert isinstance(claim, Claim)
    claim.settle(state, job_id="j-1")
    start = clock.now
    assert acquire(table, KEY) == state
    assert clock.now == start  # no waiting
    assert item(table)["job_id"] == "j-1"


def test_a_waiting_delivery_sees_the_holder_finish(table: str, clock: FakeClock) -> None:
    holder = acquire(table, KEY)
    assert isinstance(holder, Claim)
    clock.on_sleep = lambda: holder.settle("done")
    assert acquire(table, KEY) == "done"


def test_released_work_is_claimed_again_at_once_with_the_holders_notes(
    table: str, clock: FakeClock
) -> None:
    holder = acquire(table, KEY)
    assert isinstance(holder, Claim)
    holder.note(job_name="run-1", job_queue="q")
    holder.release()
    again = acquire(table, KEY)
    assert isinstance(again, Claim) and again.token != holder.token
    assert again.replaced["state"] == "failed"
    assert (again.replaced["job_name"], again.replaced["job_queue"]) == ("run-1", "q")
    assert item(table)["claims"] == "2"


def test_a_dead_holders_claim_is_taken_over_once_its_lease_runs_out(
    table: str, clock: FakeClock
) -> None:
    dead = acquire(table, KEY)
    assert isinstance(dead, Claim)
    dead.note(job_name="run-1", job_queue="q")  # renews the lease
    noted_at = clock.now
    clock.now = noted_at + idempotency.LEASE_S - idempotency.WAIT_S - 1
    with pytest.raises(ClaimBusy):
        acquire(table, KEY)  # still within the lease after waiting
    clock.now = noted_at + idempotency.LEASE_S - 5  # a retry arriving a little early waits
    taker = acquire(table, KEY)
    assert isinstance(taker, Claim)
    assert clock.now > noted_at + idempotency.LEASE_S
    assert taker.replaced["token"] == dead.token and taker.replaced["job_name"] == "run-1"
    # The dead holder, were it somehow alive, can neither note progress nor release.
    with pytest.raises(ClaimLost):
        dead.note(job_name="run-2", job_queue="q")
    dead.release()
    assert item(table)["token"] == taker.token and item(table)["state"] == "claimed"


def test_claims_have_a_stable_short_tag(table: str, clock: FakeClock) -> None:
    claim = acquire(table, KEY)
    assert isinstance(claim, Claim)
    assert len(claim.tag) == 32 and claim.tag == Claim(table, KEY, "other").tag
    assert Claim(table, KEY + "x", "t").tag != claim.tag

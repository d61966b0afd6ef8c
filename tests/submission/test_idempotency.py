"""At-most-once claims: duplicates lose, failed work is released, abandoned claims expire."""

from __future__ import annotations

import pytest

from spikebatch.control import idempotency
from tests.submission.conftest import FakeStack, client

KEY = "s3://bucket/requests/a.json#etag"


@pytest.fixture
def table(stack: FakeStack) -> str:
    return stack.outputs["IdempotencyTableName"]


def test_first_claim_wins_and_the_item_expires(table: str) -> None:
    assert idempotency.claim_once(table, KEY, object="s3://bucket/requests/a.json")
    assert not idempotency.claim_once(table, KEY)
    item = client("dynamodb").get_item(TableName=table, Key={"pk": {"S": KEY}})["Item"]
    assert item["state"] == {"S": "claimed"} and int(item["expires_at"]["N"]) > 0


def test_released_work_can_be_claimed_again_but_done_work_cannot(table: str) -> None:
    assert idempotency.claim_once(table, KEY)
    idempotency.settle(table, KEY, "failed")
    assert idempotency.claim_once(table, KEY)
    idempotency.settle(table, KEY, "done", job_id="j-1")
    assert not idempotency.claim_once(table, KEY)
    item = client("dynamodb").get_item(TableName=table, Key={"pk": {"S": KEY}})["Item"]
    assert (item["state"], item["job_id"]) == ({"S": "done"}, {"S": "j-1"})


def test_a_claim_abandoned_by_a_timed_out_lambda_is_taken_over(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_800_000_000.0
    monkeypatch.setattr(idempotency.time, "time", lambda: now)
    assert idempotency.claim_once(table, KEY)
    monkeypatch.setattr(idempotency.time, "time", lambda: now + idempotency.LEASE_S - 1)
    assert not idempotency.claim_once(table, KEY)
    monkeypatch.setattr(idempotency.time, "time", lambda: now + idempotency.LEASE_S + 1)
    assert idempotency.claim_once(table, KEY)

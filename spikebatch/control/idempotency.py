"""Leased claims in DynamoDB, so that each event's work is done once although Lambda delivers
events at least once, retries failed invocations, and can kill an invocation at any instant.

A claim is a conditional write on the table's ``pk``; DynamoDB makes it atomic, so of
several concurrent deliveries exactly one holds it. The holder's **lease** runs out
:data:`LEASE_S` after it was taken or last renewed, and that is longer than a Lambda may
live (:data:`HANDLER_TIMEOUT_S`, which the stack sets as both functions' timeout): a claim
whose lease has run out belongs to an invocation that is certainly dead, and may be taken
over. It is also shorter than the wait before Lambda's first retry (:data:`FIRST_RETRY_S`),
so the retry of a dead invocation takes the work over instead of mistaking its own
abandoned claim for a duplicate.

A delivery that finds a live claim held by another waits up to :data:`WAIT_S` for it to
settle (``done``/``rejected``: a duplicate) or to run out; if neither happens it raises
:class:`ClaimBusy`, and Lambda retries it a minute later. It never reports success for
work it has not seen finished, because that delivery may be the retry of a dead one.

Takeovers return the item they replaced, so the new holder sees what the dead one noted
(e.g. the Batch job it was about to submit) and can check before doing it again.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spikebatch import aws

log = logging.getLogger(__name__)

HANDLER_TIMEOUT_S = 40
"""The longest a Lambda that takes claims may run (both functions' timeout)."""
LEASE_S = HANDLER_TIMEOUT_S + 10
"""A claim this old belongs to a dead invocation (10 s margin for clock skew)."""
FIRST_RETRY_S = 60
"""Lambda's documented wait before the first retry of a failed asynchronous invocation."""
WAIT_S = 10.0
"""How long a delivery waits for another's live claim before raising :class:`ClaimBusy`."""
CLAIM_TTL_S = 30 * 24 * 3600
"""Claims expire (DynamoDB TTL on ``expires_at``) long after any redelivery or redrive."""

CLAIMED, DONE, REJECTED, FAILED = "claimed", "done", "rejected", "failed"
SETTLED = frozenset({DONE, REJECTED})

assert HANDLER_TIMEOUT_S < LEASE_S < FIRST_RETRY_S, "see the module docstring"


class ClaimBusy(RuntimeError):
    """Another live invocation holds the claim; raise so that Lambda retries later."""


class ClaimLost(RuntimeError):
    """The claim was taken over while held: the holder outlived its lease (clock skew)."""


@dataclass
class Claim:
    """A held claim: note progress on it, then settle or release it."""

    table: str
    key: str
    token: str
    replaced: dict[str, str] = field(default_factory=dict)
    """The item this claim took over (a dead or failed holder's notes), else empty."""

    @property
    def tag(self) -> str:
        """A short, stable name of the claimed work (e.g. a Batch tag value)."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    def note(self, **attributes: str) -> None:
        """Record progress (and renew the lease) while still the holder; else ClaimLost."""
        try:
            _update(self, CLAIMED, attributes, lease=True, mine_only=True)
        except ClientError as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise ClaimLost(f"{self.key}: claim taken over while held") from None
            raise

    def settle(self, state: str, **attributes: str) -> None:
        """The work ended: ``done`` or ``rejected`` (no delivery will do it again)."""
        _update(self, state, attributes, lease=False, mine_only=False)

    def release(self) -> None:
        """The work failed before any side effect: let the next delivery claim it now."""
        try:
            _update(self, FAILED, {}, lease=False, mine_only=True)
        except ClientError as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise


def _now() -> float:
    return time.time()


def _attrs(item: dict[str, Any]) -> dict[str, str]:
    return {name: next(iter(value.values())) for name, value in item.items()}


def _update(
    claim: Claim, state: str, attributes: dict[str, str], *, lease: bool, mine_only: bool
) -> None:
    names = {"#state": "state", **{f"#{n}": n for n in attributes}}
    values: dict[str, Any] = {":state": {"S": state}}
    values |= {f":{n}": {"S": v} for n, v in attributes.items()}
    sets = ["#state = :state", *[f"#{n} = :{n}" for n in attributes]]
    if lease:
        names["#lease"] = "lease_until"
        values[":lease"] = {"N": str(int(_now()) + LEASE_S)}
        sets.append("#lease = :lease")
    kwargs: dict[str, Any] = {}
    if mine_only:
        names["#token"] = "token"
        values[":token"] = {"S": claim.token}
        kwargs["ConditionExpression"] = "#token = :token"
    aws.client("dynamodb").update_item(
        TableName=claim.table,
        Key={"pk": {"S": claim.key}},
        UpdateExpression="SET " + ", ".join(sets),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
        **kwargs,
    )


def _try_claim(table: str, key: str, attributes: dict[str, str]) -> Claim | dict[str, str]:
    """One conditional write: the new Claim, or the item that blocked it."""
    now = int(_now())
    token = uuid.uuid4().hex
    names = {"#state": "state", "#token": "token", "#lease": "lease_until"}
    names |= {"#expires": "expires_at", "#claims": "claims"}
    names |= {f"#{n}": n for n in attributes}
    values: dict[str, Any] = {
        ":claimed": {"S": CLAIMED},
        ":failed": {"S": FAILED},
        ":token": {"S": token},
        ":lease": {"N": str(now + LEASE_S)},
        ":expires": {"N": str(now + CLAIM_TTL_S)},
        ":now": {"N": str(now)},
        ":one": {"N": "1"},
    }
    values |= {f":{n}": {"S": v} for n, v in attributes.items()}
    sets = ["#state = :claimed", "#token = :token", "#lease = :lease", "#expires = :expires"]
    sets += [f"#{n} = :{n}" for n in attributes]
    try:
        answer = aws.client("dynamodb").update_item(
            TableName=table,
            Key={"pk": {"S": key}},
            UpdateExpression="SET " + ", ".join(sets) + " ADD #claims :one",
            ConditionExpression=(
                "attribute_not_exists(pk) OR #state = :failed"
                " OR (#state = :claimed AND #lease < :now)"
            ),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if aws.error_code(exc) != "ConditionalCheckFailedException":
            raise
        return _attrs(exc.response.get("Item") or {}) or {"state": CLAIMED, "lease_until": "0"}
    return Claim(table, key, token, _attrs(answer.get("Attributes") or {}))


def acquire(table: str, key: str, *, wait_s: float = WAIT_S, **attributes: str) -> Claim | str:
    """Claim ``key``: a :class:`Claim` to work under, or the settled state (``done`` or
    ``rejected``) if the work was already done. Raises :class:`ClaimBusy` when another
    live holder keeps it longer than ``wait_s``."""
    deadline = _now() + wait_s
    pause = 0.2
    while True:
        got = _try_claim(table, key, attributes)
        if isinstance(got, Claim):
            return got
        if got.get("state") in SETTLED:
            return got["state"]
        left = deadline - _now()
        if left <= 0:
            raise ClaimBusy(
                f"{key} is being worked on by another invocation"
                f" (lease until {got.get('lease_until')}); retry later"
            )
        until_expiry = float(got.get("lease_until", "0")) + 1 - _now()
        time.sleep(max(0.05, min(pause, left, until_expiry)))
        pause = min(pause * 2, 2.0)


def settle_quietly(claim: Claim, state: str, **attributes: str) -> None:
    """Settle after the work's side effect happened. A failure to record that is logged,
    never raised: raising would make Lambda retry, and the retry redo the side effect."""
    try:
        claim.settle(state, **attributes)
    except (ClientError, BotoCoreError):
        log.exception("%s: done, but could not record it (%s)", claim.key, state)


def release_quietly(claim: Claim) -> None:
    """Release while another error is on its way up: that error matters more, and an
    unreleased claim frees itself when its lease runs out."""
    try:
        claim.release()
    except Exception:
        log.exception("could not release the claim %s", claim.key)

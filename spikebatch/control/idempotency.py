"""At-most-once claims in DynamoDB: S3 and EventBridge deliver events at least once.

A claim is a conditional PutItem on the table's ``pk``; DynamoDB makes it atomic, so of
several concurrent deliveries exactly one wins. A claim whose work failed is released
(marked ``failed``) so that the platform's retry can claim it again: nothing is lost.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from spikebatch import aws

CLAIM_TTL_S = 30 * 24 * 3600
"""Claims expire (DynamoDB TTL on ``expires_at``) long after any redelivery."""

LEASE_S = 15 * 60
"""A claim whose holder vanished (Lambda timeout) may be taken over after the longest run."""


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def claim_once(table: str, key: str, **attributes: str) -> bool:
    """True for the first caller with ``key`` (or after a release); False for duplicates."""
    now = int(time.time())
    item: dict[str, Any] = {
        "pk": {"S": key},
        "state": {"S": "claimed"},
        "lease_until": {"N": str(now + LEASE_S)},
        "expires_at": {"N": str(now + CLAIM_TTL_S)},
    }
    item |= {name: {"S": value} for name, value in attributes.items()}
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item=item,
            ConditionExpression=(
                "attribute_not_exists(pk) OR #state = :failed"
                " OR (#state = :claimed AND lease_until < :now)"
            ),
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":failed": {"S": "failed"},
                ":claimed": {"S": "claimed"},
                ":now": {"N": str(now)},
            },
        )
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def settle(table: str, key: str, state: str, **attributes: str) -> None:
    """Record how a claimed piece of work ended (``done``, ``rejected`` or ``failed``)."""
    names = {"#state": "state", **{f"#{n}": n for n in attributes}}
    values = {":state": {"S": state}, **{f":{n}": {"S": v} for n, v in attributes.items()}}
    sets = ", ".join(["#state = :state", *[f"#{n} = :{n}" for n in attributes]])
    aws.client("dynamodb").update_item(
        TableName=table,
        Key={"pk": {"S": key}},
        UpdateExpression=f"SET {sets}",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )

"""The one seam where spikebatch creates boto3 clients, and reads what their errors mean.

boto3 already honours ``AWS_ENDPOINT_URL`` (tests point it at a loopback moto server) and
the usual credential chain, so this module only adds caching (a Lambda invocation or a
polling CLI must not rebuild clients every call), a deliberate retry mode, and the few
questions callers ask of a failed call (its error code; whether it may still have taken
effect; what to configure when there is no region or no credentials).

Retries: botocore's **standard** mode, 6 attempts per call (exponential backoff with full
jitter: waits of at most 1, 2, 4, 8 and 16 s, 31 s in all, inside the Lambdas' 40 s; throttling
such as Batch's ``TooManyRequestsException`` is retried).
Not *adaptive*: its client-side rate limiter sleeps before sending, learned per client, so
in a Lambda it would spend the invocation's fixed time budget unpredictably, and the
submit Lambda's request rate is already capped by its reserved concurrency (README,
"Uploads under faults"). boto3 also documents adaptive mode as experimental.

``SubmitJob`` takes no idempotency token, so a SubmitJob whose answer was lost (a read
timeout, a dropped connection, a 5xx) is never retried blindly: a second attempt could
create a second job. Those errors surface at once, and the caller treats the job as
"maybe submitted" (:func:`outcome_unknown`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

# 32 pooled connections: the transfer manager runs up to 16 parallel parts per transfer,
# and botocore's default pool of 10 would serialise them.
_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 6},
    user_agent_extra="spikebatch",
    max_pool_connections=32,
)

# Operations that create something on every call and take no client token.
_NOT_IDEMPOTENT = {"batch": ("SubmitJob",)}

_REGION_HINT = (
    "no AWS region configured: pass --region, set AWS_REGION, or set a region in your"
    " AWS profile (`aws configure`)"
)
_CREDENTIALS_HINT = (
    "no usable AWS credentials: run `aws configure` or `aws sso login`, or set AWS_PROFILE"
    " (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
)


def _no_blind_retry(
    attempts: int,
    response: Any = None,
    caught_exception: BaseException | None = None,
    **_: Any,
) -> bool | None:
    """``needs-retry`` handler, called before botocore's own: False vetoes a retry.

    Retrying is safe only when the request cannot have been acted on: a throttling or
    other 4xx answer, or a connection that was never opened.
    """
    if caught_exception is not None:
        return False if outcome_unknown(caught_exception) else None
    if response is not None and response[0].status_code >= 500:
        return False
    return None


@functools.lru_cache(maxsize=64)
def _cached_client(service: str, region: str | None, endpoint: str | None) -> Any:
    session = boto3.session.Session(region_name=region)
    if service == "s3-sigv4":  # presigning only (presigned_get_url)
        return session.client("s3", config=_CONFIG.merge(Config(signature_version="s3v4")))
    made = session.client(service, config=_CONFIG)
    for operation in _NOT_IDEMPOTENT.get(service, ()):
        event = f"needs-retry.{made.meta.service_model.service_id.hyphenize()}.{operation}"
        made.meta.events.register_first(event, _no_blind_retry)
    return made


_default_region: str | None = None


def use_region(region: str | None) -> None:
    """Make ``region`` the default for every client (the CLI's ``--region``)."""
    global _default_region
    _default_region = region


def client(service: str, *, region: str | None = None) -> Any:
    """A boto3 client for ``service``; cached per region and endpoint override."""
    return _cached_client(service, region or _default_region, os.environ.get("AWS_ENDPOINT_URL"))


def region_of(any_client: Any) -> str:
    """The region a client talks to (for console links)."""
    return str(any_client.meta.region_name)


def presigned_get_url(bucket: str, key: str, *, expires_s: int, **params: Any) -> str:
    """A presigned GET URL, signed with SigV4: botocore still presigns S3 with SigV2 by
    default in us-east-1, which regions opened since 2014 reject. No AWS call is made."""
    signer = _cached_client("s3-sigv4", _default_region, os.environ.get("AWS_ENDPOINT_URL"))
    return signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key, **params}, ExpiresIn=expires_s
    )


def clear_cache() -> None:
    """Forget cached clients (tests that switch credentials or regions)."""
    _cached_client.cache_clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a failed call (``NoSuchKey``, ``ConditionalCheckFailedException``,
    ``404``...); empty for errors that are not AWS answers."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    """AWS's own message for a failed call, else the exception's text."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message") or exc)
    return str(exc)


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed call may still have taken effect on AWS's side.

    A 4xx answer means the request was refused; a connection that never opened means it
    was never seen. Anything else (a 5xx, a read timeout, a connection dropped after the
    request went out) leaves the outcome unknown.
    """
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return not (isinstance(status, int) and 400 <= status < 500)
    return not isinstance(exc, EndpointConnectionError | ConnectTimeoutError)


def configuration_problem(exc: BaseException) -> str | None:
    """One line saying what to set, when ``exc`` comes from a missing region or credentials."""
    if isinstance(exc, NoRegionError):
        return _REGION_HINT
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return f"{_CREDENTIALS_HINT} ({exc})"
    return None

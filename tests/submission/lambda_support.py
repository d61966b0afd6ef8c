"""Helpers for invoking the Lambda handlers the way AWS does: an event file and a context."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from tests.submission.conftest import BUCKET, client, load_event


@dataclass
class FakeLambdaContext:
    """The attributes Powertools' ``inject_lambda_context`` reads."""

    function_name: str = "spikebatch-submit"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:spikebatch-submit"
    aws_request_id: str = "6f1c1f3e-0000-4000-8000-000000000001"


def upload_event(key: str, body: bytes, *, bucket: str = BUCKET) -> dict[str, Any]:
    """Put ``body`` at ``key`` and return the S3 notification for it (key URL-encoded, as S3 does)."""
    s3 = client("s3")
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    event = load_event(
        "s3_object_created",
        bucket=bucket,
        key=quote_plus(key, safe="/"),
        etag=put["ETag"].strip('"'),
        version_id=put.get("VersionId", ""),
    )
    event["Records"][0]["s3"]["object"]["size"] = len(body)
    if not put.get("VersionId"):
        del event["Records"][0]["s3"]["object"]["versionId"]
    return event


def capture_logs(handler_module: Any) -> io.StringIO:
    """Point the handler's Powertools log handler at a buffer; returns the buffer."""
    buffer = io.StringIO()
    handler_module.logger.registered_handler.setStream(buffer)
    return buffer


def log_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

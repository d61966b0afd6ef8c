"""Helpers for invoking the Lambda handlers the way AWS does: an event file and a context."""

from __future__ import annotations

import functools
import io
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from spikebatch.control.idempotency import HANDLER_TIMEOUT_S
from tests.submission.conftest import BUCKET, FakeStack, client, load_event


@dataclass
class FakeLambdaContext:
    """The attributes Powertools' ``inject_lambda_context`` reads."""

    function_name: str = "spikebatch-submit"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:spikebatch-submit"
    aws_request_id: str = "6f1c1f3e-0000-4000-8000-000000000001"
    #: The function's timeout (the stack's: idempotency.HANDLER_TIMEOUT_S), counted from
    #: when the context was made, as Lambda counts it from the invocation's start.
    timeout_s: float = float(HANDLER_TIMEOUT_S)
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_s - time.monotonic()) * 1000))


_SEQUENCER = itertools.count(0x0055AED6DCD90281E5)


def upload_event(key: str, body: bytes, *, bucket: str = BUCKET) -> dict[str, Any]:
    """Put ``body`` at ``key`` and return the S3 notification for it (key URL-encoded, as S3
    does; each PUT gets a new, increasing ``sequencer``, as S3 gives it)."""
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
    event["Records"][0]["s3"]["object"]["sequencer"] = f"{next(_SEQUENCER):018X}"
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


@functools.cache
def nwb_bytes() -> bytes:
    """A small but complete HDF5 file (what the submit Lambda checks an upload against)."""
    import h5py
    import numpy as np

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["nwb_version"] = "2.8.0"
        f["acquisition/ElectricalSeries/data"] = np.zeros((100, 4), dtype="int16")
    return buffer.getvalue()


def submit_one(stack: FakeStack, uri: str = "s3://lab-bucket/raw/a.nwb") -> Any:
    """Submit one run the CLI's way (no claim); returns the SubmittedJob."""
    from spikebatch.control import submission
    from spikebatch.control.request import parse_request

    deployment = submission.Deployment.from_env(stack.lambda_env)
    plan = submission.plan_submission(parse_request({"input_uri": uri}), deployment)
    return submission.submit(plan, deployment, submitted_by="test")


def event_for(name: str, job: Any) -> dict[str, Any]:
    """tests/events/<name>.json about ``job`` (a SubmittedJob)."""
    return load_event(name, job_id=job.job_id, job_name=job.job_name, run_id=job.run_id)


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Every message now in an SQS queue (received and deleted)."""
    sqs = client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return found
        for message in got:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

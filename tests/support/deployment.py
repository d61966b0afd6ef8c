"""A deployed stack's names, as the submission code sees them, for tests that plan or write
runs without the CloudFormation stack (``tests/submission/conftest.py`` has the whole one)."""

from __future__ import annotations

from typing import Any

from spikebatch.control.submission import Deployment

ACCOUNT_ARN = "arn:aws:batch:us-east-1:123456789012"


def fake_deployment(bucket: str, **overrides: Any) -> Deployment:
    """Queues and job definitions with well-formed ARNs in ``bucket``'s account."""
    names: dict[str, Any] = {
        "bucket": bucket,
        "job_queue_arn": f"{ACCOUNT_ARN}:job-queue/spot",
        "priority_queue_arn": f"{ACCOUNT_ARN}:job-queue/on-demand",
        "gpu_job_definition_arn": f"{ACCOUNT_ARN}:job-definition/gpu:1",
        "cpu_job_definition_arn": f"{ACCOUNT_ARN}:job-definition/cpu:1",
    }
    return Deployment(**(names | overrides))

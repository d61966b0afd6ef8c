"""Stopping Batch jobs on a user's request: the one home of ``spikebatch cancel`` and
``spikebatch campaign cancel``.

TerminateJob, not CancelJob: it also stops a job that is already STARTING or RUNNING
(CancelJob leaves those running), and on an array parent it stops every child. The reason
starts with :data:`CANCEL_REASON`, so the run record classifies the failure as
``cancelled`` (:mod:`.job_status`).
"""

from __future__ import annotations

from spikebatch import aws

CANCEL_REASON = "cancelled with spikebatch cancel"


def cancel_reason(reason: str | None = None) -> str:
    """The status reason Batch records: the prefix, then the user's ``reason`` if given."""
    return CANCEL_REASON + (f": {reason}" if reason else "")


def cancel_job(job_id: str, status_reason: str) -> None:
    """Cancel ``job_id`` (terminate it if running; an array parent: every child)."""
    aws.client("batch").terminate_job(jobId=job_id, reason=status_reason)

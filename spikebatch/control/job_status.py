"""What AWS Batch says about a job, in words a user can act on.

A Batch state-change event's ``detail`` has the shape of a DescribeJobs entry, so one
function (:func:`summarize_job`) reads both. Pure: no AWS calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

TERMINAL = frozenset({"SUCCEEDED", "FAILED"})


@dataclass(frozen=True, slots=True)
class FailureKind:
    """A declared way for a Batch job to fail: how to spot it and what to do about it."""

    name: str
    markers: tuple[str, ...]
    hint: str


FAILURE_KINDS: tuple[FailureKind, ...] = (
    FailureKind(
        "image-pull",
        ("CannotPullContainerError", "CannotInspectContainerError"),
        "the worker image could not be pulled: check the image in ECR and the instances' network",
    ),
    FailureKind(
        "out-of-memory",
        ("OutOfMemoryError", "Container killed due to memory usage"),
        "raise resources.memory_gib (or sort less: max_duration_s)",
    ),
    FailureKind(
        "timeout",
        ("Job attempt duration exceeded timeout",),
        "raise resources.timeout_hours or sort less with max_duration_s",
    ),
    FailureKind(
        "spot-reclaim",
        ("Host EC2",),
        "the spot instance was reclaimed and retries ran out; resubmit, or use --on-demand",
    ),
    FailureKind(
        "stuck-runnable",
        ("MISCONFIGURATION:", "CAPACITY:", "RUNNABLE"),
        "no instance could take the job: lower resources, or check the compute environment",
    ),
    FailureKind(
        "cancelled",
        ("cancel", "Terminated by", "terminated by"),
        "the job was cancelled or terminated on request",
    ),
    FailureKind(
        "worker-error",
        ("Essential container in task exited", "NonZeroExitCode"),
        "the worker exited with an error: see `spikebatch logs` and run.json",
    ),
)


def classify_failure(reasons: list[str]) -> FailureKind | None:
    """The first declared failure kind whose marker appears in any of ``reasons``."""
    for kind in FAILURE_KINDS:
        if any(marker in reason for reason in reasons for marker in kind.markers):
            return kind
    return None


def log_console_url(region: str, log_group: str, log_stream: str | None) -> str:
    """A CloudWatch console link to the job's log stream (or its log group)."""

    def enc(text: str) -> str:  # the console's double-escaping, with '%' written as '$'
        return quote(quote(text, safe=""), safe="").replace("%", "$")

    url = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{enc(log_group)}"
    )
    return f"{url}/log-events/{enc(log_stream)}" if log_stream else url


def _reasons(job: Mapping[str, Any]) -> list[str]:
    """Every human-readable reason Batch gives, most specific first."""
    out: list[str] = []
    attempts = job.get("attempts") or []
    for source in [job.get("container") or {}, *[a.get("container") or {} for a in attempts]]:
        if source.get("reason"):
            out.append(str(source["reason"]))
    for attempt in reversed(attempts):
        if attempt.get("statusReason"):
            out.append(str(attempt["statusReason"]))
    if job.get("statusReason"):
        out.append(str(job["statusReason"]))
    return list(dict.fromkeys(out))


def summarize_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Status, reason and log stream from a DescribeJobs entry or a state-change ``detail``."""
    attempts = job.get("attempts") or []
    container = dict(job.get("container") or {})
    last_container = (attempts[-1].get("container") or {}) if attempts else {}
    stream = container.get("logStreamName") or last_container.get("logStreamName")
    reasons = _reasons(job)
    status = str(job.get("status", "UNKNOWN"))
    kind = classify_failure(reasons) if status == "FAILED" else None
    exit_code = container.get("exitCode", last_container.get("exitCode"))
    return {
        "status": status,
        "status_reason": " | ".join(reasons) or None,
        "failure_kind": kind.name if kind else None,
        "hint": kind.hint if kind else None,
        "exit_code": exit_code,
        "attempts": len(attempts),
        "log_stream": stream,
    }

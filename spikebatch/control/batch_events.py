"""EventBridge "Batch Job State Change" → run record: the run-record Lambda's logic.

Parsing uses Powertools' ``EventBridgeEvent`` (so this module is Lambda-side only; the CLI
reads records through :mod:`spikebatch.control.records`). Malformed or foreign events are answered
with an outcome, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from spikebatch.control.state_changes import RecordSettings, record_state_change

log = logging.getLogger(__name__)

DETAIL_TYPE = "Batch Job State Change"


def handle(event: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """Update the run record for one state change; notify SNS when a run FAILED."""
    settings = RecordSettings.from_env(env)
    try:
        if not isinstance(event, Mapping):
            raise TypeError(f"an event is a JSON object, got {type(event).__name__}")
        bridge = EventBridgeEvent(dict(event))
        if bridge.detail_type != DETAIL_TYPE or bridge.source != "aws.batch":
            raise ValueError(f"not a {DETAIL_TYPE!r} event: {bridge.get('detail-type')!r}")
        detail = bridge.detail
        if not isinstance(detail, Mapping) or "jobId" not in detail or "status" not in detail:
            raise ValueError("detail lacks jobId/status")
        event_time = bridge.time
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignored event", extra={"error": str(exc)})
        return {"status": "ignored", "error": str(exc)}
    record = record_state_change(detail, settings, event_time=event_time)
    if record is None:
        log.info("not a spikebatch job", extra={"job_id": detail["jobId"]})
        return {"status": "ignored", "job_id": detail["jobId"], "error": "no spikebatch run tag"}
    log.info(
        f"{record['run_id']} {record['status']}",
        extra={
            "run_id": record["run_id"],
            "job_id": record["job_id"],
            "batch_status": record["status"],
            "status_reason": record.get("status_reason"),
            "failure_kind": record.get("failure_kind"),
        },
    )
    return {"status": "recorded", "run_id": record["run_id"], "batch_status": record["status"]}

"""An array run as the control plane records it, with children that ended in different ways.

The records come from the real submission code (``plan_submission`` + ``write_submitted``);
the children's results are the completed run's files under each child's ``results_uri``:

* child 0 succeeded (run.json, page);
* child 1 failed in the worker (run.json with the error, no page);
* child 2 was killed by Batch (out of memory) while run.json still said running;
* child 3 has not started (RUNNABLE, nothing in results).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from spikebatch import aws
from spikebatch.contract import RUN_PAGE
from spikebatch.control.records import put_json, record_key
from spikebatch.control.request import parse_request
from spikebatch.control.submission import (
    SubmissionPlan,
    plan_submission,
    write_submitted,
)
from spikebatch.worker import run_page
from tests.results.conftest import FinishedRun
from tests.support.deployment import fake_deployment

DANDISET = "000999"
ASSETS = [f"sub-sim0{i}/sub-sim0{i}_ses-gt_ecephys.nwb" for i in range(1, 5)]
OOM = "OutOfMemoryError: Container killed due to memory usage"


@dataclass(frozen=True)
class ArrayRun:
    plan: SubmissionPlan
    bucket: str

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    @property
    def children(self) -> list[str]:
        return [r.run_id for r in self.plan.runs]


def _put(bucket: str, key: str, body: bytes, content_type: str) -> None:
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def child_results(completed: FinishedRun, run_id: str, source: str) -> tuple[dict[str, Any], str]:
    """The completed run's run.json and page as child ``run_id`` would have written them."""
    record = json.loads(json.dumps(completed.record))
    record.update(run_id=run_id)
    record["input"]["source"] = source
    probe = run_page.read_probe_results(completed.folder)
    return record, run_page.render_run_page(record, [probe])


def make_array(bucket: str, completed: FinishedRun) -> ArrayRun:
    request = parse_request({"dandiset_id": DANDISET, "assets": ASSETS, "sorter": "kilosort4"})
    plan = plan_submission(request, fake_deployment(bucket))
    write_submitted(plan, None, bucket=bucket, submitted_by="test")
    results = {
        r.run_id: f"{plan.output_uri}/{r.run_id}/".removeprefix(f"s3://{bucket}/")
        for r in plan.runs
    }
    ok, failed, killed, waiting = plan.runs

    record, page = child_results(completed, ok.run_id, ok.source)
    _put(bucket, results[ok.run_id] + "run.json", json.dumps(record).encode(), "application/json")
    _put(bucket, results[ok.run_id] + RUN_PAGE, page.encode(), "text/html")

    record, _ = child_results(completed, failed.run_id, failed.source)
    record.update(
        status="failed", error={"stage": "fetch", "message": "input not found: 404"}, outputs=[]
    )
    _put(
        bucket, results[failed.run_id] + "run.json", json.dumps(record).encode(), "application/json"
    )
    put_json(
        bucket,
        record_key(failed.run_id, "status.json"),
        {
            "status": "FAILED",
            "status_reason": "Essential container in task exited",
            "failure_kind": "worker-error",
        },
    )

    record, _ = child_results(completed, killed.run_id, killed.source)
    record.update(status="running", stage="sort", outputs=[], units=None, labels=None)
    _put(
        bucket, results[killed.run_id] + "run.json", json.dumps(record).encode(), "application/json"
    )
    put_json(
        bucket,
        record_key(killed.run_id, "status.json"),
        {"status": "FAILED", "status_reason": OOM, "failure_kind": "out-of-memory"},
    )

    put_json(bucket, record_key(waiting.run_id, "status.json"), {"status": "RUNNABLE"})
    return ArrayRun(plan, bucket)

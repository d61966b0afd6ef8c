"""A dandiset of 12,000 assets on the fake archive, and what the tests ask of a campaign:
every child of every array job, the records a run-record Lambda would have written."""

from __future__ import annotations

from collections import Counter
from typing import Any

from spikebatch.control import records
from tests.submission.conftest import ASSETS, BUCKET, DANDISET, PATHS, FakeStack, client

__all__ = ["ASSETS", "DANDISET", "PATHS"]  # defined beside the big_archive fixture


def arrays(stack: FakeStack) -> list[dict[str, Any]]:
    """Every array job submitted, oldest first (``stack.jobs()`` would describe each of the
    12,000 children, which moto lists beside their parents)."""
    batch = client("batch")
    ids = set()
    for queue in (stack.outputs["JobQueueArn"], stack.outputs["PriorityQueueArn"]):
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "RUNNING", "SUCCEEDED", "FAILED"):
            pages = batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=status)
            ids |= {s["jobId"] for p in pages for s in p["jobSummaryList"] if ":" not in s["jobId"]}
    jobs = [j for start in range(0, len(ids), 100)
            for j in batch.describe_jobs(jobs=sorted(ids)[start : start + 100])["jobs"]]  # fmt: skip
    jobs = [j for j in jobs if "size" in (j.get("arrayProperties") or {})]
    # createdAt has milliseconds (two arrays may share one): the campaign record's order first
    noted = [stack.get_json(key).get("arrays") or [] for key in stack.keys("campaigns/")]
    order = {a["job_id"]: i for entries in noted for i, a in enumerate(entries) if a.get("job_id")}
    return sorted(jobs, key=lambda j: (order.get(j["jobId"], len(order)), j["createdAt"]))


def children(stack: FakeStack) -> Counter[str]:
    """How often each asset path was submitted, over every array's manifest."""
    counted: Counter[str] = Counter()
    for job in arrays(stack):
        env = {e["name"]: e["value"] for e in job["container"]["environment"]}
        key = env["ARRAY_MANIFEST_URI"].removeprefix(f"s3://{BUCKET}/")
        manifest = stack.get_json(key)
        assert len(manifest) == job["arrayProperties"]["size"]
        counted.update(entry["DANDI_ASSET_PATH"] for entry in manifest)
    return counted


def mark(stack: FakeStack, job: dict[str, Any], indexes: range, status: str) -> list[str]:
    """``status.json`` for children of ``job``, as the run-record Lambda writes it from
    Batch's events; returns their run ids."""
    run_id = job["tags"]["spikebatch:run-id"]
    record = stack.get_json(f"runs/{run_id}/request.json")
    written = []
    for index in indexes:
        child = record["children"][index]
        written.append(
            {
                "run_id": child["run_id"],
                "job_id": f"{job['jobId']}:{index}",
                "parent_run_id": run_id,
                "array_index": index,
                "status": status,
                "status_reason": "Essential container in task exited" if status == "FAILED" else "",
            }
        )
    records.put_records(BUCKET, written, "status.json")
    return [w["run_id"] for w in written]


def campaign_record(stack: FakeStack) -> dict[str, Any]:
    [key] = stack.keys("campaigns/")
    return stack.get_json(key)

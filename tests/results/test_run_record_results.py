"""The run-record Lambda and issue 11's results: an array's summary page written when the
array (or, for a small array, a child) ends, and a failed publication to DANDI copied into
the run's record, where ``spikebatch status`` shows it. Neither may break the record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch.cli.app import app
from spikebatch.control import state_changes
from tests.results.arrays import OOM, ArrayRun, make_array
from tests.submission.conftest import BUCKET, FakeStack, Invoke, client, load_event
from tests.submission.lambda_support import event_for, submit_one

REASON = "DANDI rejected the API key (HTTP 401) at https://api.dandiarchive.org/api"


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _put_run_json(run_id: str, record: dict[str, Any]) -> None:
    client("s3").put_object(
        Bucket=BUCKET, Key=f"results/{run_id}/run.json", Body=json.dumps(record).encode()
    )


def test_a_failed_publication_reaches_the_record_and_spikebatch_status(
    record_env: FakeStack, record_invoke: Invoke
) -> None:
    job = submit_one(record_env)
    publication = {"status": "failed", "dandiset_id": "000500", "reason": REASON}
    _put_run_json(job.run_id, {"status": "succeeded", "publish": publication})

    assert record_invoke(event_for("batch_job_succeeded", job))["batch_status"] == "SUCCEEDED"
    record_invoke(event_for("batch_job_succeeded", job))  # EventBridge delivers it again

    status = record_env.get_json(f"runs/{job.run_id}/status.json")
    assert status["status"] == "SUCCEEDED" and status["publish"] == publication
    assert [h["status"] for h in status["history"]] == ["SUCCEEDED"]
    table = cli("status")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if job.run_id in line)
    assert "SUCCEEDED" in row and "publish failed: DANDI rejected the API key" in row
    detail = cli("status", job.run_id)
    assert detail.exit_code == 0, detail.output
    assert f"DANDI: publish failed: {REASON}" in " ".join(detail.output.split())


def test_a_publication_that_worked_is_shown_too_and_no_run_json_is_no_harm(
    record_env: FakeStack, record_invoke: Invoke
) -> None:
    published = submit_one(record_env, "s3://lab-bucket/raw/published.nwb")
    path = "sub-sim01/sub-sim01_ses-gt_desc-kilosort4_ecephys.nwb"
    publication = {"status": "published", "dandiset_id": "000500", "path": path, "asset_id": "a1"}
    _put_run_json(published.run_id, {"status": "succeeded", "publish": publication})
    silent = submit_one(record_env, "s3://lab-bucket/raw/no-run-json.nwb")

    record_invoke(event_for("batch_job_succeeded", published))
    record_invoke(event_for("batch_job_succeeded", silent))

    detail = cli("status", published.run_id)
    assert f"DANDI: published on dandiset 000500: {path}" in " ".join(detail.output.split())
    assert "publish" not in record_env.get_json(f"runs/{silent.run_id}/status.json")


def _array_event(array: ArrayRun, status: str, **array_properties: Any) -> dict[str, Any]:
    event = load_event(
        "batch_job_succeeded", job_id="array-job", job_name="array", run_id=array.run_id
    )
    event["detail"]["status"] = status
    event["detail"]["arrayProperties"] = array_properties
    if "index" in array_properties:
        event["detail"]["jobId"] = f"array-job:{array_properties['index']}"
    return event


def _summary(array: ArrayRun) -> str:
    key = f"results/{array.run_id}/report/index.html"
    obj = client("s3").get_object(Bucket=BUCKET, Key=key)
    assert obj["ContentType"].startswith("text/html")
    return obj["Body"].read().decode()


def test_the_array_summary_is_written_when_a_child_and_when_the_array_ends(
    record_env: FakeStack, record_invoke: Invoke, finished_run
) -> None:
    array = make_array(BUCKET, finished_run)
    ok = array.children[0]

    # a child ends: a small array's page fills in as it runs
    child = _array_event(array, "SUCCEEDED", index=0)
    assert record_invoke(child)["run_id"] == ok
    html = _summary(array)
    assert f'href="../../{ok}/report/index.html"' in html and f"out-of-memory: {OOM}" in html

    # the array ends
    client("s3").delete_object(Bucket=BUCKET, Key=f"results/{array.run_id}/report/index.html")
    parent = _array_event(array, "FAILED", size=4, statusSummary={"SUCCEEDED": 1, "FAILED": 2})
    assert record_invoke(parent)["run_id"] == array.run_id
    rows = _summary(array).split("<tbody>")[1]
    assert rows.count('class="badge failed"') == 2 and rows.count('class="badge succeeded"') == 1
    assert rows.count('class="badge runnable"') == 1
    assert record_env.notifications() == []  # an array's own FAILED sends no e-mail


def test_a_summary_that_cannot_be_written_never_breaks_the_record(
    record_env: FakeStack,
    record_invoke: Invoke,
    finished_run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    array = make_array(BUCKET, finished_run)

    def broken(bucket: str, parent_run_id: str) -> str:
        raise RuntimeError("AccessDenied: s3:PutObject")

    monkeypatch.setattr(state_changes, "write_array_summary", broken)
    failed = array.children[1]
    event = load_event(
        "batch_job_failed_oom", job_id="array-job:1", job_name="array", run_id=array.run_id
    )
    event["detail"]["arrayProperties"] = {"index": 1}
    assert record_invoke(event)["batch_status"] == "FAILED"
    status = record_env.get_json(f"runs/{failed}/status.json")
    assert status["status"] == "FAILED" and status["failure_kind"] == "out-of-memory"
    [mail] = record_env.notifications()
    assert failed in mail["Subject"]


def test_arrays_too_large_for_the_lambda_leave_their_summary_to_the_cli(
    record_env: FakeStack, record_invoke: Invoke, finished_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = make_array(BUCKET, finished_run)
    monkeypatch.setattr(state_changes, "SUMMARY_MAX_CHILDREN", 3)
    monkeypatch.setattr(state_changes, "SUMMARY_EACH_CHILD_MAX", 3)

    record_invoke(_array_event(array, "SUCCEEDED", index=0))
    record_invoke(_array_event(array, "FAILED", size=4))

    assert record_env.keys(f"results/{array.run_id}/") == []
    monkeypatch.setattr("webbrowser.open", lambda url: True)
    opened = cli("results", array.run_id, "--open", "--presign")  # rendered here instead
    assert opened.exit_code == 0, opened.output

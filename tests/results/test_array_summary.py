"""The array summary: one row per child from its records, links to the children's pages."""

from __future__ import annotations

import urllib.parse
import uuid
from pathlib import Path

import pytest

from spikebatch import aws
from spikebatch.control import array_summary
from spikebatch.control.array_summary import ChildRow, child_row, render_array_summary
from tests.results.arrays import ASSETS, OOM, make_array
from tests.support import browser

CHILD = {"run_id": "c0", "array_index": 0, "source": "dandi:000999/draft/a.nwb"}


def test_the_worker_decides_success_and_batch_the_failures_it_never_saw():
    succeeded = {
        "status": "succeeded",
        "units": {"count": 12},
        "labels": {"counts": {"good": 7, "mua": 4, "noise": 1}},
        "input": {"sorted_duration_s": 3600.0},
        "cost": {"wall_s": 4000.0, "actual_usd": 0.42},
        "outputs": ["run.json", "report/index.html"],
        "publish": {"status": "published"},
    }
    row = child_row(CHILD, {"status": "SUCCEEDED"}, succeeded)
    assert row == ChildRow(
        run_id="c0",
        index=0,
        source="dandi:000999/draft/a.nwb",
        status="SUCCEEDED",
        units=12,
        good_units=7,
        recording_s=3600.0,
        wall_s=4000.0,
        cost_usd=0.42,
        reason="",
        has_page=True,
        publish="published",
    )
    killed = child_row(
        CHILD,
        {"status": "FAILED", "status_reason": OOM, "failure_kind": "out-of-memory"},
        {"status": "running", "stage": "sort"},
    )
    assert killed.status == "FAILED" and killed.reason == f"out-of-memory: {OOM}"
    worker_failed = child_row(
        CHILD,
        {"status": "FAILED", "status_reason": "Essential container in task exited"},
        {"status": "failed", "error": {"stage": "fetch", "message": "input not found"}},
    )
    assert worker_failed.reason == "fetch: input not found"  # the worker's words are better
    assert child_row(CHILD, {"status": "RUNNABLE"}, None).status == "RUNNABLE"
    assert child_row(CHILD, None, None).status == "SUBMITTED"
    # a late Batch event cannot turn a finished worker run back into RUNNING
    assert child_row(CHILD, {"status": "RUNNING"}, succeeded).status == "SUCCEEDED"


def _downloaded(tmp_path: Path, rows: list[ChildRow], pages: dict[str, str]) -> Path:
    """The layout `spikebatch results --download DIR` leaves: DIR/<run-id>/report/index.html."""
    for run_id, html in pages.items():
        page = tmp_path / run_id / "report" / "index.html"
        page.parent.mkdir(parents=True)
        page.write_text(html)
    summary = tmp_path / "parent" / "report" / "index.html"
    summary.parent.mkdir(parents=True)
    summary.write_text(render_array_summary("parent", rows, source="dandiset 000999"))
    return summary


def test_every_link_resolves_to_a_child_page_after_a_download(finished_run, tmp_path):
    rows = [
        child_row({**CHILD, "run_id": "a", "array_index": 0}, None, finished_run.record),
        child_row(
            {**CHILD, "run_id": "b", "array_index": 1},
            {"status": "FAILED", "status_reason": OOM, "failure_kind": "out-of-memory"},
            None,
        ),
    ]
    summary = _downloaded(tmp_path, rows, {"a": finished_run.page.read_text()})
    hrefs, sources = browser.links(summary.read_text())
    assert hrefs == ["../../a/report/index.html"] and sources == []
    for href in hrefs:
        assert (summary.parent / href).resolve().is_file()
    html = summary.read_text()
    assert f"out-of-memory: {OOM}" in html
    good = finished_run.labels.counts()["good"]
    assert f'<td class="num">{good}</td>' in html


@pytest.mark.skipif(not browser.available(), reason="no chromium")
def test_chromium_renders_the_summary_and_follows_a_link(finished_run, tmp_path):
    rows = [child_row({**CHILD, "run_id": "a"}, None, finished_run.record)]
    summary = _downloaded(tmp_path, rows, {"a": finished_run.page.read_text()})
    dom = browser.dom_text(summary)
    assert "spikebatch array" in dom and 'href="../../a/report/index.html"' in dom
    target = urllib.parse.urljoin(summary.resolve().as_uri(), "../../a/report/index.html")
    assert finished_run.record["units"] and "Quality labels" in browser.dom_text(target)
    assert browser.screenshot(summary, tmp_path / "summary.png", height=600).stat().st_size > 20_000


def test_the_summary_is_written_beside_the_children_in_s3(aws_endpoint, finished_run):
    bucket = f"data-{uuid.uuid4().hex[:10]}"
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=bucket)
    array = make_array(bucket, finished_run)

    uri = array_summary.write_array_summary(bucket, array.run_id)

    assert uri == f"{array.plan.output_uri}/{array.run_id}/report/index.html"
    key = uri.removeprefix(f"s3://{bucket}/")
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["ContentType"].startswith("text/html")
    html = obj["Body"].read().decode()
    ok = array.children[0]
    hrefs, _ = browser.links(html)
    assert hrefs == [f"../../{ok}/report/index.html"]  # only the child that has a page
    resolved = urllib.parse.urljoin(f"https://x/{key}", hrefs[0]).removeprefix("https://x/")
    s3.head_object(Bucket=bucket, Key=resolved)  # the link names an object that exists
    assert "fetch: input not found: 404" in html and f"out-of-memory: {OOM}" in html
    rows = html.split("<tbody>")[1]
    assert rows.count('class="badge runnable"') == 1 and rows.count('class="badge failed"') == 2
    assert rows.count('class="badge succeeded"') == 1
    for asset in ASSETS:
        assert asset in html


def test_a_run_without_children_has_no_summary(aws_endpoint):
    from spikebatch.control.records import put_json, record_key

    bucket = f"data-{uuid.uuid4().hex[:10]}"
    aws.client("s3").create_bucket(Bucket=bucket)
    put_json(bucket, record_key("single", "request.json"), {"run_id": "single"})
    with pytest.raises(ValueError, match="single is not an array run"):
        array_summary.write_array_summary(bucket, "single")

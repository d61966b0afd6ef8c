"""A campaign of 12,000 children (arrays of 10,000 and 2,000): its totals and its pages.

GIVEN the campaign's records as its submission and the run-record Lambda leave them
(campaign.json; each array's request.json listing its children; each array's status.json
with Batch's last statusSummary, since Batch no longer knows these made-up job ids; and the
progress shards, each entry made by the Lambda's own ``finished_entry``/``with_entry``) on
the loopback moto server;
WHEN the campaign is followed and its pages are written;
THEN the totals are right, the pages render in well under a few seconds, the front page
stays small and groups the failures by kind with what to do, and the runs are on pages of
500 whose links resolve.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from spikebatch import aws
from spikebatch.control.campaign_page import (
    RUNS_PER_PAGE,
    campaign_runs,
    render_pages,
    write_campaign_pages,
)
from spikebatch.control.campaign_progress import (
    SHARDS,
    campaign_key,
    finished_entry,
    follow,
    shard_key,
    with_entry,
)
from spikebatch.control.job_status import classify_failure
from spikebatch.control.records import put_json, record_key
from tests.support import browser

CAMPAIGN = "cmp-000026-kilosort3-0a1b2c"
SIZES = (10_000, 2_000)
NOW = float(int(time.time()))  # whole seconds: entries keep whole seconds
OOM = "OutOfMemoryError: Container killed due to memory usage"


def _fate(g: int) -> tuple[str, str | None, dict[str, Any] | None]:
    """Child ``g`` (0..11,999): its state, Batch's reason and its run.json."""
    if g % 10 == 9:
        return "RUNNING", None, None
    if g % 20 == 3:  # a different instance each time: one reason once ids are set aside
        return "FAILED", f"Host EC2 (instance i-{g:017x}) terminated.", None
    if g % 20 == 13:
        return "FAILED", OOM, {"status": "running", "stage": "sort"}
    if g % 50 == 7:
        message = "kilosort: no spikes found" if g % 100 == 7 else "fetch: checksum mismatch"
        run = {"status": "failed", "error": {"stage": "sort", "message": message}}
        return "FAILED", "Essential container in task exited", run | {"cost": {"actual_usd": 0.1}}
    run = {"status": "succeeded", "outputs": ["report/index.html"]}
    return "SUCCEEDED", None, run | {"cost": {"actual_usd": 0.30 + (g % 7) * 0.01}}


def build_campaign(bucket: str) -> dict[str, Any]:
    """The records of a 12,000-child campaign; returns what the test expects of them."""
    output_uri = f"s3://{bucket}/results/big"
    expected: dict[str, Any] = {"states": Counter(), "kinds": Counter(), "usd": 0.0, "hour": 0}
    arrays = []
    g = 0
    for a, size in enumerate(SIZES):
        array_run_id = f"dandiset-000026-{size}-assets-{a}"
        children, shards = [], {}
        for index in range(size):
            subject = g // 40  # 40 sessions per subject: 300 subjects
            source = f"dandi:000026/draft/sub-{subject:04d}/sub-{subject:04d}_ses-{g}_ecephys.nwb"
            child = {"run_id": f"sub-{subject:04d}-ses-{g}-ks3", "array_index": index,
                     "source": source}  # fmt: skip
            children.append(child)
            state, reason, run = _fate(g)
            expected["states"][state] += 1
            if state != "RUNNING":
                kind = classify_failure([reason]) if reason else None
                status = {"status": state, "status_reason": reason, "job_id": f"j{a}:{index}",
                          "failure_kind": kind.name if kind else None, "created_at": 1}  # fmt: skip
                minutes_ago = g % 180
                entry = finished_entry(child, status, run, finished_at=NOW - minutes_ago * 60)
                shard = index % SHARDS
                shards[shard] = with_entry(shards.get(shard), index, entry)
                expected["kinds"][entry["kind"]] += state == "FAILED"
                expected["usd"] += (run or {}).get("cost", {}).get("actual_usd") or 0.0
                expected["hour"] += minutes_ago * 60 <= 3600
            g += 1
        put_json(
            bucket,
            record_key(array_run_id, "request.json"),
            {
                "run_id": array_run_id,
                "job_id": f"j{a}",
                "children": children,
                "output_uri": output_uri,
                "campaign_id": CAMPAIGN,
            },
        )
        counts = Counter(_fate(i)[0] for i in range(g - size, g))
        put_json(
            bucket,
            record_key(array_run_id, "status.json"),
            {"run_id": array_run_id, "status": "RUNNING", "array_summary": dict(counts)},
        )
        for shard, doc in shards.items():
            put_json(bucket, shard_key(CAMPAIGN, array_run_id, shard), doc)
        arrays.append({"run_id": array_run_id, "job_id": f"j{a}", "size": size,
                       "manifest_key": f"manifests/{array_run_id}.json", "depends_on": []})  # fmt: skip
    put_json(
        bucket,
        campaign_key(CAMPAIGN, "campaign.json"),
        {"campaign_id": CAMPAIGN, "created_at": "2026-12-01T08:00:00+00:00",
         "request": {"dandiset_id": "000026", "asset_glob": "sub-*/*.nwb", "sorter": "kilosort3"},
         "max_cost_usd": 9000.0, "max_concurrent_jobs": 500, "estimate_usd": 6000.0,
         "counts": {"to_run": 12_000, "done": 0, "in_flight": 0, "failed": 0,
                    "over_attempt_cap": 0},
         "arrays": arrays},
    )  # fmt: skip
    return expected


@pytest.fixture(scope="module")
def campaign(moto_server: str) -> dict[str, Any]:
    """The campaign in a bucket of its own (built once: 12,000 children take seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", moto_server)
        bucket = f"campaign-{int(NOW)}"
        aws.client("s3").create_bucket(Bucket=bucket)
        expected = build_campaign(bucket)
        return {"bucket": bucket, "expected": expected}


def test_the_totals_of_12000_children(campaign: dict[str, Any], aws_endpoint: str) -> None:
    expected = campaign["expected"]
    progress = follow(campaign["bucket"], CAMPAIGN, at=NOW)
    assert progress.total == 12_000 and [a.source for a in progress.arrays] == ["record"] * 2
    assert progress.counts == dict(expected["states"])
    assert progress.recorded == progress.finished == 12_000 - expected["states"]["RUNNING"]
    assert progress.spent_usd == pytest.approx(expected["usd"])
    assert progress.without_cost == expected["states"]["FAILED"] - expected["kinds"]["worker-error"]
    assert progress.finished_in_window == expected["hour"]
    assert progress.eta_s == pytest.approx(1200 / expected["hour"] * 3600)
    assert progress.still_estimated_usd == pytest.approx(6000.0 * 1200 / 12_000)


def test_12000_children_render_fast_on_bounded_pages(
    campaign: dict[str, Any], aws_endpoint: str
) -> None:
    progress = follow(campaign["bucket"], CAMPAIGN, at=NOW)
    runs, output_uri = campaign_runs(campaign["bucket"], progress)
    assert len(runs) == 12_000 and output_uri == f"s3://{campaign['bucket']}/results/big"

    # CPU time, not wall time: this machine is shared with sorts (about 0.8 s here).
    started = time.process_time()
    pages = render_pages(progress, runs)
    elapsed = time.process_time() - started

    assert elapsed < 2.0, f"12,000 children took {elapsed:.2f} s of CPU to render"
    assert len(pages) == 1 + 12_000 // RUNS_PER_PAGE
    assert len(pages[0]) < 60_000  # the front page: bounded by kinds and pages, not runs
    assert max(len(html) for n, html in pages.items() if n) < 300_000
    assert sum(pages[n].count("<tr>") - 1 for n in pages if n) == 12_000


def _front(campaign: dict[str, Any]) -> tuple[str, str]:
    uri = write_campaign_pages(campaign["bucket"], CAMPAIGN)
    key = uri.removeprefix(f"s3://{campaign['bucket']}/")
    html = aws.client("s3").get_object(Bucket=campaign["bucket"], Key=key)["Body"].read()
    return key, html.decode()


def test_the_front_page_groups_failures_and_every_link_resolves(
    campaign: dict[str, Any], aws_endpoint: str
) -> None:
    key, html = _front(campaign)
    bucket = campaign["bucket"]
    assert key == f"results/big/campaigns/{CAMPAIGN}/report/index.html"
    failures = html.split('id="failures"')[1].split("<h2")[0]
    rows = {r.split("</span>")[0].rsplit(">", 1)[1]: r for r in failures.split("<tr>")[2:]}
    kinds = campaign["expected"]["kinds"]
    assert set(rows) == {"spot-reclaim", "out-of-memory", "worker-error"}
    for kind, row in rows.items():
        assert f'<td class="num">{kinds[kind]}</td>' in row
    assert "resubmit, or use --on-demand" in rows["spot-reclaim"]
    # 600 reclaims on 600 instances: one reason, the instance id set aside
    assert (
        f"{kinds['spot-reclaim']} x</span> spot-reclaim: Host EC2 (instance …) terminated."
        in (rows["spot-reclaim"])
    )
    assert "raise resources.memory_gib" in rows["out-of-memory"]
    assert "sort: kilosort: no spikes found" in rows["worker-error"]
    assert "sort: fetch: checksum mismatch" in rows["worker-error"]

    hrefs, sources = browser.links(html)
    assert sources == []
    listed = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix="results/big/campaigns/")
    written = {o["Key"] for o in listed["Contents"]}
    assert len(written) == 1 + 12_000 // RUNS_PER_PAGE
    for href in hrefs:
        target = urllib.parse.urljoin(f"https://x/{key}", href).removeprefix("https://x/")
        if "/campaigns/" in target:
            assert target in written, href
        else:  # an example failure's own page
            assert target.startswith("results/big/sub-") and target.endswith("/report/index.html")
    runs_page = f"results/big/campaigns/{CAMPAIGN}/runs-2/report/index.html"
    page_html = aws.client("s3").get_object(Bucket=bucket, Key=runs_page)["Body"].read().decode()
    child_hrefs, _ = browser.links(page_html)
    assert child_hrefs[:3] == ["../../report/index.html", "../runs-1/report/index.html",
                               "../runs-3/report/index.html"]  # fmt: skip
    first_child = urllib.parse.urljoin(f"https://x/{runs_page}", child_hrefs[3])
    assert first_child.removeprefix("https://x/results/big/").count("/") == 2  # <run>/report/...


@pytest.mark.skipif(not browser.available(), reason="no chromium")
def test_chromium_renders_the_front_page_and_a_runs_page(
    campaign: dict[str, Any], aws_endpoint: str, tmp_path: Path
) -> None:
    key, html = _front(campaign)
    s3 = aws.client("s3")
    folder = tmp_path / "campaigns" / CAMPAIGN
    (folder / "report").mkdir(parents=True)
    (folder / "report" / "index.html").write_text(html)
    runs_key = key.replace("/report/index.html", "/runs-1/report/index.html")
    (folder / "runs-1" / "report").mkdir(parents=True)
    (folder / "runs-1" / "report" / "index.html").write_bytes(
        s3.get_object(Bucket=campaign["bucket"], Key=runs_key)["Body"].read()
    )
    dom = browser.dom_text(folder / "report" / "index.html")
    assert "spikebatch campaign" in dom and "Failures by kind" in dom and "page 24" in dom
    runs = browser.dom_text(folder / "runs-1" / "report" / "index.html")
    assert runs.count("<tr>") == 1 + RUNS_PER_PAGE and "sub-0000" in runs
    shot = browser.screenshot(folder / "report" / "index.html", tmp_path / "campaign.png")
    assert shot.stat().st_size > 20_000

"""Following a campaign (issue 19, part 3) against the moto stack: `spikebatch campaign
status` (once, --watch, --page) and `campaign cancel`, and the run-record Lambda's
progress entries they read.

GIVEN a campaign of two array jobs submitted by the real submission code (30 and 20
children: moto's Batch creates every child as a thread-free record, so small arrays keep
this fast), campaign.json in the campaign's schema, children put in a mix of states in
moto's Batch (it marks them all SUCCEEDED at once; a real campaign is never that tidy), and
each finished child's state change run through the real run-record Lambda;
WHEN the campaign is followed;
THEN the counts are Batch's statusSummary, the money is the children's run.json costs and
the submission's estimate, the pace is the children that finished in the last hour.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from moto.batch.models import batch_backends
from typer.testing import CliRunner

from spikebatch.cli import app, render
from spikebatch.control import campaign_progress, state_changes, submission
from spikebatch.control.campaign_progress import (
    SHARDS,
    ArrayState,
    CampaignProgress,
    follow,
    shard_key,
    with_entry,
)
from spikebatch.control.job_status import classify_failure
from spikebatch.control.records import put_json, record_key, update_json
from spikebatch.control.request import parse_request
from spikebatch.control.stack_outputs import load_stack_outputs
from tests.submission.conftest import BUCKET, REGION, STACK, FakeStack, client

CAMPAIGN = "cmp-000409-kilosort3-5f1c2d"
DANDISET = "000409"
OOM = "OutOfMemoryError: Container killed due to memory usage"
#: "Now" for a campaign's times: set again when each campaign is built (``submit_campaign``),
#: so that "finished in the last hour" does not depend on how long ago the module was
#: imported (under xdist, minutes before the test runs).
NOW = time.time()
#: Per array: child index -> (state, minutes ago it finished, actual cost or None).
#: 30 + 20 children: 25 succeeded, 4 failed, 21 not finished.
PLAN: list[dict[int, tuple[str, float, float | None]]] = [
    {
        **{i: ("SUCCEEDED", 10.0 + i, 0.50) for i in range(10)},  # 10 in the last hour
        **{i: ("SUCCEEDED", 120.0 + i, 0.50) for i in range(10, 20)},
        20: ("FAILED", 30.0, None),  # out of memory: killed before run.json had a cost
        21: ("FAILED", 200.0, None),
        22: ("FAILED", 40.0, 0.25),  # the worker failed and recorded its cost
        23: ("RUNNING", 0, None),
        24: ("RUNNING", 0, None),
        25: ("RUNNABLE", 0, None),
    },
    {
        **{i: ("SUCCEEDED", 45.0 + 10 * i, 1.00) for i in range(5)},  # 2 in the last hour
        5: ("FAILED", 20.0, 0.10),  # a worker error
        6: ("STARTING", 0, None),
    },
]
SIZES = (30, 20)
ESTIMATE_USD = 100.0  # 50 children at $2 each


@dataclass(frozen=True)
class Campaign:
    plans: list[submission.SubmissionPlan]
    jobs: list[submission.SubmittedJob]


def _assets(start: int, count: int) -> list[str]:
    return [f"sub-{i:03d}/sub-{i:03d}_ecephys.nwb" for i in range(start, start + count)]


def _moto_job(job_id: str) -> Any:
    return batch_backends["123456789012"][REGION]._jobs[job_id]


def _event(detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"event-{detail['jobId']}-{detail['status']}",
        "detail-type": "Batch Job State Change",
        "source": "aws.batch",
        "account": "123456789012",
        "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "region": REGION,
        "resources": [detail["jobArn"]],
        "detail": detail,
    }


def child_event(job_id: str, state: str, minutes_ago: float, reason: str | None) -> dict[str, Any]:
    """The state change Batch sends for an array child (DescribeJobs' shape, from moto,
    with the child's index, which moto leaves out)."""
    [detail] = client("batch").describe_jobs(jobs=[job_id])["jobs"]
    detail = json.loads(json.dumps(detail, default=str))
    detail.update(status=state, stoppedAt=int((NOW - minutes_ago * 60) * 1000))
    detail["arrayProperties"] = {"index": int(job_id.rsplit(":", 1)[1])}
    detail.pop("statusReason", None)
    if reason:
        detail["container"] = {**detail.get("container", {}), "reason": reason}
    return _event(detail)


def submit_campaign(stack: FakeStack, *, third_unsubmitted: bool = False) -> Campaign:
    """Two arrays through the real submission code, and the records a campaign keeps."""
    global NOW
    NOW = time.time()
    deployment = load_stack_outputs(STACK, region=REGION).deployment()
    plans, jobs = [], []
    for start, size in zip((0, SIZES[0]), SIZES, strict=True):
        request = parse_request(
            {"dandiset_id": DANDISET, "assets": _assets(start, size), "output_prefix": "big"}
        )
        plan = submission.plan_submission(request, deployment)
        jobs.append(submission.submit(plan, deployment, submitted_by="campaign"))
        plans.append(plan)
        # The campaign submission names its campaign in each array's record.
        update_json(
            BUCKET,
            record_key(plan.run_id, "request.json"),
            lambda old: {**old, "campaign_id": CAMPAIGN},
        )
    arrays = [
        {
            "run_id": plan.run_id,
            "job_id": job.job_id,
            "size": len(plan.runs),
            "manifest_key": plan.manifest_key,
            "depends_on": [],
        }
        for plan, job in zip(plans, jobs, strict=True)
    ]
    if third_unsubmitted:
        arrays.append(
            {
                "run_id": "third-array",
                "job_id": None,
                "size": 5,
                "manifest_key": None,
                "depends_on": [jobs[-1].job_id],
            }
        )
    put_json(
        BUCKET,
        campaign_progress.campaign_key(CAMPAIGN, "campaign.json"),
        {
            "campaign_id": CAMPAIGN,
            "created_at": datetime.fromtimestamp(NOW - 5 * 3600, UTC).isoformat(),
            "request": {
                "dandiset_id": DANDISET,
                "asset_glob": "sub-*/*.nwb",
                "sorter": "kilosort3",
            },
            "max_cost_usd": 250.0,
            "max_concurrent_jobs": 100,
            "estimate_usd": ESTIMATE_USD,
            "counts": {
                "to_run": 50,
                "done": 0,
                "in_flight": 0,
                "failed": 0,
                "over_attempt_cap": 0,
            },
            "arrays": arrays,
        },
    )
    return Campaign(plans, jobs)


def put_states(campaign: Campaign, record_invoke: Any) -> None:
    """Children in PLAN's states in moto's Batch; every finished one's run.json and its
    state change through the run-record Lambda (which adds its progress entry)."""
    s3 = client("s3")
    for plan, job, states in zip(campaign.plans, campaign.jobs, PLAN, strict=True):
        _moto_job(job.job_id).status = "RUNNING"
        for run in plan.runs:
            state, minutes_ago, usd = states.get(run.array_index, ("PENDING", 0, None))
            child_id = job.child_job_id(run)
            _moto_job(child_id).status = state
            if state not in ("SUCCEEDED", "FAILED"):
                continue
            reason = None
            run_json: dict[str, Any] | None = {
                "status": state.lower(),
                "run_id": run.run_id,
                "outputs": ["run.json", "report/index.html"] if state == "SUCCEEDED" else [],
                "cost": {"actual_usd": usd, "wall_s": 3000.0},
            }
            if state == "FAILED" and usd is None:  # killed by Batch: run.json says running
                reason = OOM
                run_json = {"status": "running", "run_id": run.run_id, "stage": "sort"}
            elif state == "FAILED":
                reason = "Essential container in task exited"
                run_json["error"] = {"stage": "sort", "message": "kilosort: no spikes found"}
            key = f"results/big/{run.run_id}/run.json"
            s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(run_json).encode())
            answer = record_invoke(child_event(child_id, state, minutes_ago, reason))
            assert answer["status"] == "recorded", answer


@pytest.fixture
def cli(stack: FakeStack) -> Any:
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "120"})


@pytest.fixture
def running(
    stack: FakeStack, record_env: FakeStack, record_invoke: Any, monkeypatch: pytest.MonkeyPatch
) -> Campaign:
    # Not the small array's summary page after every child (tests/results covers it): it
    # would re-read every child each time.
    monkeypatch.setattr(state_changes, "SUMMARY_EACH_CHILD_MAX", 0)
    campaign = submit_campaign(stack)
    put_states(campaign, record_invoke)
    return campaign


def test_counts_money_and_pace_of_a_campaign(cli: Any, running: Campaign) -> None:
    progress = follow(BUCKET, CAMPAIGN, at=NOW)

    # Counts: Batch's statusSummary of each parent, summed.
    assert progress.total == 50
    assert [a.source for a in progress.arrays] == ["batch", "batch"]
    assert progress.counts == {
        "SUCCEEDED": 25,
        "FAILED": 4,
        "RUNNING": 2,
        "STARTING": 1,
        "RUNNABLE": 1,
        "PENDING": 17,
    }
    assert progress.finished == 29 and progress.remaining == 21 and not progress.done
    # Money: actual costs of finished children; the estimate for those left.
    assert progress.recorded == 29
    assert progress.spent_usd == pytest.approx(20 * 0.50 + 0.25 + 5 * 1.00 + 0.10)
    assert progress.without_cost == 2  # the two killed by Batch
    assert progress.still_estimated_usd == pytest.approx(ESTIMATE_USD * 21 / 50)
    # Pace: finished in the last hour (the campaign began 5 h ago), and the ETA at it.
    assert progress.window_s == 3600
    assert progress.finished_in_window == 10 + 2 + 3  # + the two failures (array 0) and one
    assert progress.per_hour == pytest.approx(15.0)
    assert progress.eta_s == pytest.approx(21 / 15 * 3600)

    # What `spikebatch campaign status` prints of it.
    result = cli("campaign", "status", CAMPAIGN)
    assert result.exit_code == 0, result.output
    text = result.output
    assert f"Campaign {CAMPAIGN}" in text
    for line in ("runs", "50", "in 2 array jobs", "SUCCEEDED", "25", "PENDING", "17"):
        assert line in text
    assert "$15.35" in text and "2 finished without a known cost" in text
    assert "$42.00" in text and "of $100.00 estimated in all; budget $250.00" in text
    assert "in the last 60 min: 15.0 runs/h" in text
    assert "1 h 24 min" in text and "21 runs to go" in text


def test_entries_say_why_children_failed_and_the_page_groups_them(
    cli: Any, running: Campaign, record_invoke: Any
) -> None:
    first = running.plans[0]
    key = shard_key(CAMPAIGN, first.run_id, 20 % SHARDS)
    entry = client("s3").get_object(Bucket=BUCKET, Key=key)
    killed = json.loads(entry["Body"].read())["children"]["20"]
    assert killed["state"] == "FAILED" and killed["kind"] == "out-of-memory"
    assert killed["usd"] is None and OOM in killed["reason"] and not killed["page"]
    worker = json.loads(
        client("s3")
        .get_object(Bucket=BUCKET, Key=shard_key(CAMPAIGN, first.run_id, 22 % SHARDS))["Body"]
        .read()
    )["children"]["22"]
    assert worker["reason"] == "sort: kilosort: no spikes found" and worker["usd"] == 0.25

    before = follow(BUCKET, CAMPAIGN, at=NOW)
    job = running.jobs[0]
    record_invoke(child_event(job.child_job_id(first.runs[20]), "FAILED", 30.0, OOM))
    after = client("s3").get_object(Bucket=BUCKET, Key=key)
    assert after["ETag"] == entry["ETag"]  # not even rewritten
    assert follow(BUCKET, CAMPAIGN, at=NOW).spent_usd == before.spent_usd

    # When an array ends, the run-record Lambda writes the campaign's pages.
    [detail] = client("batch").describe_jobs(jobs=[running.jobs[1].job_id])["jobs"]
    detail = json.loads(json.dumps(detail, default=str)) | {"status": "SUCCEEDED"}
    assert record_invoke(_event(detail))["status"] == "recorded"
    keys = client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"results/big/campaigns/{CAMPAIGN}/")
    assert sorted(o["Key"].split(CAMPAIGN)[1] for o in keys["Contents"]) == [
        "/report/index.html",
        "/runs-1/report/index.html",
    ]

    # `--page` writes them fresh; the failures are grouped by kind, with what to do.
    result = cli("campaign", "status", CAMPAIGN, "--page")
    assert result.exit_code == 0, result.output
    front = f"s3://{BUCKET}/results/big/campaigns/{CAMPAIGN}/report/index.html"
    assert f"page: {front}" in result.output
    html = (
        client("s3")
        .get_object(Bucket=BUCKET, Key=front.removeprefix(f"s3://{BUCKET}/"))["Body"]
        .read()
        .decode()
    )
    failures = html.split('id="failures"')[1].split("<h2")[0]
    oom = failures.split("out-of-memory</span>")[1].split("</tr>")[0]
    assert '<td class="num">2</td>' in oom and "raise resources.memory_gib" in oom
    assert f"2 x</span> out-of-memory: {OOM}" in oom
    worker = failures.split("worker-error</span>")[1].split("</tr>")[0]
    assert '<td class="num">2</td>' in worker and "see `spikebatch logs`" in worker
    assert "sort: kilosort: no spikes found" in worker
    assert "runs-1/report/index.html" in html
    page = client("s3").get_object(
        Bucket=BUCKET, Key=f"results/big/campaigns/{CAMPAIGN}/runs-1/report/index.html"
    )
    assert page["Body"].read().decode().count("<tr>") == 51  # the header and 50 runs


def test_watch_stops_on_ctrl_c_or_when_every_run_has_ended(
    cli: Any, running: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted:
        @staticmethod
        def sleep(seconds: float) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(render, "time", Interrupted)
    result = cli("campaign", "status", CAMPAIGN, "--watch")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "29/50" in result.output
    assert (
        f"stopped watching; the campaign goes on (stop it with: spikebatch campaign cancel {CAMPAIGN})"
        in result.stderr
    )

    sleeps: list[float] = []

    class Finishing:
        """The watch's sleep: Batch finishes every child meanwhile."""

        @staticmethod
        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            for job in running.jobs:
                for child in _moto_job(job.job_id)._child_jobs:
                    if child.status not in ("SUCCEEDED", "FAILED"):
                        child.status = "SUCCEEDED"

    monkeypatch.setattr(render, "time", Finishing)
    result = cli("campaign", "status", CAMPAIGN, "--watch", "--interval", "5")
    assert result.exit_code == 0, result.output
    assert sleeps == [5.0]  # one refresh after the first, then everything had ended
    assert "campaign" in result.output and "50/50" in result.output
    assert "100.0%" in result.output and "done" in result.output


def test_cancel_cancels_every_array_of_the_campaign(cli: Any, stack: FakeStack) -> None:
    campaign = submit_campaign(stack, third_unsubmitted=True)

    result = cli("campaign", "cancel", CAMPAIGN, "--reason", "wrong probe")

    assert result.exit_code == 0, result.output
    reason = "cancelled with spikebatch cancel: wrong probe"
    jobs = client("batch").describe_jobs(jobs=[j.job_id for j in campaign.jobs])["jobs"]
    assert sorted(j["jobId"] for j in jobs) == sorted(j.job_id for j in campaign.jobs)
    assert {j["statusReason"] for j in jobs} == {reason}  # TerminateJob reached each parent
    assert classify_failure([reason]).name == "cancelled"
    for plan, job in zip(campaign.plans, campaign.jobs, strict=True):
        assert f"cancelled array {plan.run_id} (job {job.job_id})" in result.output
    assert "not submitted, so nothing to cancel: third-array" in result.output
    record = stack.get_json(f"campaigns/{CAMPAIGN}/cancel.json")
    assert record["reason"] == reason and record["not_submitted"] == ["third-array"]
    assert [j["job_id"] for j in record["jobs"]] == [j.job_id for j in campaign.jobs]
    # status says so, and --watch does not wait for the array that will never run
    status = cli("campaign", "status", CAMPAIGN, "--watch")
    assert status.exit_code == 0 and f"Campaign {CAMPAIGN} (cancelled" in status.output
    assert "NOT SUBMITTED" in status.output


def test_an_unknown_campaign_is_one_line(cli: Any, stack: FakeStack) -> None:
    result = cli("campaign", "status", "no-such-campaign")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == (
        f"error: no campaign 'no-such-campaign' in s3://{BUCKET}/campaigns/"
    )


def test_an_older_jobs_late_entry_never_replaces_a_newer_ones() -> None:
    older = {"state": "FAILED", "job_id": "j1:0", "created_at": 1000, "usd": None}
    newer = {"state": "SUCCEEDED", "job_id": "j2:0", "created_at": 2000, "usd": 0.4}
    shard = with_entry(with_entry(None, 0, older), 0, newer)
    assert shard is not None and shard["children"]["0"] == newer  # a resubmission wins
    assert with_entry(shard, 0, older) is None  # the old job's late event loses
    assert with_entry(shard, 0, newer) is None  # a redelivery writes nothing


def test_a_young_campaign_is_paced_since_it_began() -> None:
    """Created 20 minutes ago with 4 finished: 12 runs/h, not 4; 6 left take 30 min."""
    created = datetime.fromtimestamp(NOW - 1200, UTC).isoformat()
    progress = CampaignProgress(
        campaign_id="young",
        campaign={"created_at": created, "estimate_usd": 10.0},
        arrays=[ArrayState("a", "j", 10, "RUNNING", {"SUCCEEDED": 4, "RUNNING": 6}, "batch")],
        entries={
            "a": {i: {"state": "SUCCEEDED", "at": NOW - 60 * i, "usd": 1.0} for i in range(4)}
        },
        now=NOW,
    )
    assert progress.window_s == pytest.approx(1200)
    assert progress.per_hour == pytest.approx(12.0) and progress.eta_s == pytest.approx(1800)
    assert progress.spent_usd == 4.0 and progress.still_estimated_usd == pytest.approx(6.0)


def test_batch_counts_an_array_of_10000_from_its_parent_alone() -> None:
    """statusSummary of a 10,000-child parent (moto's children are all SUCCEEDED at once):
    the children Batch has not counted yet show as SUBMITTED, nothing is read per child."""
    array = campaign_progress.ArrayRef("big", "job-big", 10_000)
    live = {"status": "RUNNING", "array": {"SUCCEEDED": 9_000, "FAILED": 200, "RUNNING": 500}}
    state = campaign_progress.array_state(array, live, None, {})
    assert state.source == "batch" and state.finished == 9_200
    assert state.counts == {"SUCCEEDED": 9_000, "FAILED": 200, "RUNNING": 500, "SUBMITTED": 300}
    unknown = campaign_progress.array_state(array, None, None, {0: {"state": "FAILED"}})
    assert unknown.counts == {"FAILED": 1, "UNKNOWN": 9_999} and unknown.source == "entries"

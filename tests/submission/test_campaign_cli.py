"""Campaigns through the CLI: a dandiset of 12,000 assets becomes two array jobs, a second
submission skips what is in flight, done or failed, ``--retry-failed`` resubmits only the
failures, and ``--max-cost`` under the estimate submits nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch.cli import app
from spikebatch.control import campaign
from spikebatch.control.request import parse_request
from spikebatch.estimates import RecordingSize, estimate_runs
from tests.submission.campaign_support import (
    ASSETS,
    DANDISET,
    PATHS,
    arrays,
    campaign_record,
    children,
    mark,
)
from tests.submission.conftest import FakeStack
from tests.support.dandi_server import FakeDandiArchive

GLOB = "sub-*/*_ecephys.nwb"


@pytest.fixture
def cli(stack: FakeStack, big_archive: FakeDandiArchive, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DANDI_API_URL", big_archive.api_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "200"})


def submit(cli: Any, *flags: str) -> Any:
    return cli("submit", "--dandiset", DANDISET, "--glob", GLOB, *flags)


def test_a_dandiset_of_12000_assets_is_one_campaign_of_two_arrays_resumed_without_repeats(
    cli: Any, stack: FakeStack
) -> None:
    # GIVEN 12,000 assets, WHEN submitted: two arrays (10,000 + 2,000), each asset once
    result = submit(cli)
    assert result.exit_code == 0, result.output
    assert "12,000 inputs: 12,000 to run, 0 done, 0 in flight" in result.output
    first, second = arrays(stack)
    assert (first["arrayProperties"]["size"], second["arrayProperties"]["size"]) == (10_000, 2_000)
    assert second["dependsOn"] == [{"jobId": first["jobId"]}]  # one after the other
    counted = children(stack)
    assert sorted(counted) == sorted(PATHS) and set(counted.values()) == {1}
    record = campaign_record(stack)
    assert [(a["run_id"], a["job_id"], a["size"], a["depends_on"]) for a in record["arrays"]] == [
        (first["tags"]["spikebatch:run-id"], first["jobId"], 10_000, None),
        (second["tags"]["spikebatch:run-id"], second["jobId"], 2_000, first["jobId"]),
    ]
    assert record["counts"]["to run"] == ASSETS and record["estimate_usd"] > 0
    assert all(a["manifest_key"].startswith("manifests/array-") for a in record["arrays"])

    # WHEN submitted again: nothing new, everything in flight
    result = submit(cli)
    assert result.exit_code == 0, result.output
    assert "0 to run, 0 done, 12,000 in flight, 0 failed" in result.output
    assert "Nothing to submit." in result.output and len(arrays(stack)) == 2

    # GIVEN 500 children succeeded and 20 failed (their status.json, from Batch's events)
    mark(stack, first, range(500), "SUCCEEDED")
    failed = mark(stack, second, range(1000, 1020), "FAILED")
    result = submit(cli)
    assert result.exit_code == 0, result.output
    assert "0 to run, 500 done, 11,480 in flight, 20 failed, 0 over" in result.output
    assert len(arrays(stack)) == 2

    # WHEN --retry-failed: the 20 failures, and nothing else, in a third array
    result = submit(cli, "--retry-failed")
    assert result.exit_code == 0, result.output
    assert "20 to run, 500 done, 11,480 in flight" in result.output
    third = arrays(stack)[2]
    assert third["arrayProperties"]["size"] == 20
    retried = stack.get_json(f"runs/{third['tags']['spikebatch:run-id']}/request.json")
    assert [c["run_id"] for c in retried["children"]] == failed
    assert {c["attempt"] for c in retried["children"]} == {2}  # the attempt counter
    assert retried["request"]["retry_failed"] is True
    assert len(campaign_record(stack)["arrays"]) == 3
    assert sum(children(stack).values()) == ASSETS + 20


def test_a_cost_cap_under_the_estimate_submits_nothing(cli: Any, stack: FakeStack) -> None:
    result = submit(cli, "--max-cost", "1")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    # The estimate is `spikebatch estimate`'s: the same model, per recording.
    request = parse_request({"dandiset_id": DANDISET, "asset_glob": GLOB})
    size = 60 * 4 * 2 * 30_000
    [row] = estimate_runs(request, [RecordingSize("x", size)], 384)
    assert row.estimate is not None
    total = row.estimate.usd * ASSETS
    assert line == (
        f"error: max_cost_usd: the estimate for 12,000 runs is ${total:,.2f}, over the cap of"
        " $1.00: nothing submitted"
    )
    assert "12,000 to run" in result.stdout  # the plan was shown first
    assert arrays(stack) == [] and stack.keys("runs/") == [] and stack.keys("manifests/") == []


def test_several_dandisets_and_globs_are_one_campaign(
    stack: FakeStack,
    big_archive: FakeDandiArchive,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dandisets`` names several, each with its own assets or globs."""
    monkeypatch.setenv("DANDI_API_URL", big_archive.api_url)
    request = parse_request(
        {
            "dandisets": [
                {"dandiset_id": DANDISET, "asset_globs": ["sub-0000[0-2]/*.nwb", "sub-00001/*"]},
                {"dandiset_id": DANDISET, "version": "draft", "assets": [PATHS[11_999]]},
            ]
        }
    )
    inputs = campaign.resolve_inputs(request, api_url=big_archive.api_url)
    assert [i.name for i in inputs] == [*PATHS[:3], PATHS[11_999]]
    assert campaign.campaign_id(request) == campaign.campaign_id(
        request.model_copy(update={"max_cost_usd": 5.0, "retry_failed": True})
    )  # the knobs do not make another campaign


# -- the rules, on the three-session dandiset (tests/submission/conftest.py's archive) ------


@pytest.fixture
def small(stack: FakeStack, archive: FakeDandiArchive, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)
    runner = CliRunner()
    args = ["submit", "--dandiset", "000409", "--glob", "sub-*/*.nwb"]
    return lambda *flags: runner.invoke(app, [*args, *flags], env={"COLUMNS": "200"})


def test_the_attempt_cap_and_rerun(small: Any, stack: FakeStack) -> None:
    """A failure submitted max_attempts_per_input times is over the cap; --rerun re-sorts
    what is done or failed, never what is in flight."""
    assert small("--max-concurrent-jobs", "2").exit_code == 0
    first, second = arrays(stack)[0], stack.jobs()
    assert first["arrayProperties"]["size"] == 2 and len(second) == 2  # an array, then one job
    mark(stack, first, range(1), "FAILED")
    result = small("--retry-failed", "--max-attempts", "1")
    assert "0 to run, 0 done, 2 in flight, 0 failed, 1 over the attempt cap" in result.output
    result = small("--retry-failed")  # under the default cap of 3: the second attempt
    assert "1 to run, 0 done, 2 in flight, 0 failed, 0 over" in result.output
    mark(stack, first, range(1, 2), "SUCCEEDED")
    result = small("--rerun")
    assert result.exit_code == 0, result.output
    assert "1 to run, 0 done, 2 in flight" in result.output  # the success; not the in-flight


def test_dry_run_prints_the_plan_and_sends_nothing(small: Any, stack: FakeStack) -> None:
    result = small("--dry-run", "--max-concurrent-jobs", "2", "--max-cost", "1000")
    assert result.exit_code == 0, result.output
    assert "3 inputs: 3 to run, 0 done, 0 in flight, 0 failed, 0 over" in result.output
    assert re.search(r"Estimate: \$[\d.]+ for 3 runs in 2 job\(s\) of 2, 1; cap \$1,000.00",
                     result.output)  # fmt: skip
    assert result.output.count("Dry run: nothing was submitted.") == 2
    assert stack.jobs() == [] and stack.keys("") == []

"""A campaign submission killed anywhere and submitted again: every input gets exactly one
job. The kills are real (:class:`~tests.submission.faults.Died` at an AWS call, so no
cleanup runs); between runs the clock moves past the campaign claim's lease."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch.cli import app
from tests.submission.campaign_support import (
    DANDISET,
    PATHS,
    arrays,
    campaign_record,
    children,
)
from tests.submission.conftest import FakeStack
from tests.submission.faults import Died, FakeClock, Faults, watch_clients
from tests.support.dandi_server import FakeDandiArchive


@dataclass
class KillWhen(Faults):
    """Dies at the first AWS call for which ``when(calls so far)`` holds."""

    when: Callable[[list[str]], bool] | None = None

    def _before_call(self, model: Any, **_: Any) -> None:
        self.calls.append(f"{model.service_model.service_id.hyphenize()}.{model.name}")
        if self.when is not None and self.when(self.calls):
            self.when = None
            raise Died(self.calls[-1])


def after_first_submit_job(calls: list[str]) -> bool:
    """The call right after the first SubmitJob returned: the job exists, its records and
    the campaign record do not name it yet."""
    return calls.count("batch.SubmitJob") == 1 and calls[-2] == "batch.SubmitJob"


def at_submit_job(calls: list[str]) -> bool:
    """SubmitJob itself (never sent): the array's records and manifest are written."""
    return calls[-1] == "batch.SubmitJob"


def test_killed_after_an_array_and_after_a_manifest_then_rerun_sorts_each_input_once(
    stack: FakeStack,
    big_archive: FakeDandiArchive,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DANDI_API_URL", big_archive.api_url)
    kill = watch_clients(KillWhen(), monkeypatch)
    runner = CliRunner()

    def submit() -> Any:
        return runner.invoke(app, ["submit", "--dandiset", DANDISET, "--glob", "sub-*/*.nwb"])

    # 1. killed right after the first array's SubmitJob
    kill.when = after_first_submit_job
    with pytest.raises(Died):
        submit()
    assert [a["arrayProperties"]["size"] for a in arrays(stack)] == [10_000]
    assert [a["job_id"] for a in campaign_record(stack)["arrays"]] == [None]

    # 2. run again (after the killed one's lease): the first array is adopted, not
    # resubmitted; killed between the second array's manifest and its SubmitJob
    clock.now += 60
    kill.when = at_submit_job
    with pytest.raises(Died):
        submit()
    assert len(arrays(stack)) == 1
    assert any(k.startswith("manifests/") for k in stack.keys("manifests/")[1:])

    # 3. run again: the second array goes out; 12,000 distinct children, none twice
    clock.now += 60
    result = submit()
    assert result.exit_code == 0, result.output
    assert "2,000 to run, 0 done, 10,000 in flight" in result.output
    counted = children(stack)
    assert sorted(counted) == sorted(PATHS) and set(counted.values()) == {1}
    jobs = arrays(stack)
    assert [(a["run_id"], a["job_id"]) for a in campaign_record(stack)["arrays"]] == [
        (j["tags"]["spikebatch:run-id"], j["jobId"]) for j in jobs
    ]
    # 4. and once more: nothing
    result = submit()
    assert "0 to run, 0 done, 12,000 in flight" in result.output and len(arrays(stack)) == 2

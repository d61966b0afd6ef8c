"""The monthly budget: the spend ledger, refusals (submit Lambda and CLI), and the brake.

GIVEN a moto deployment, WHEN work is submitted or runs end or AWS Budgets alerts, THEN
the ledger, the refusal (errors/ object, failure topic, one CLI line) and the queues say so.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from spikebatch.cli import app
from spikebatch.control import budget
from spikebatch.control.brake import budget_alert
from tests.submission.conftest import BUCKET, FakeStack, Invoke, client, load_event
from tests.submission.lambda_support import (
    FakeLambdaContext,
    capture_logs,
    drain,
    event_for,
    log_lines,
    nwb_bytes,
    submit_one,
    upload_event,
)
from tests.support.dandi_server import FakeDandiArchive

ASSET = "sub-1/sub-1_ecephys.nwb"
FIGURES = re.compile(
    r"month-to-date spend \$(?P<spent>[\d.]+) .* this submission's estimate"
    r" \$(?P<new>[\d.]+) exceeds the monthly budget \$(?P<budget>[\d.]+)"
)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def spent_earlier(usd: float, run_id: str = "earlier-run") -> None:
    """A run that ended this month and cost ``usd``, as the run-record path counts it."""
    budget.record_finished(
        BUCKET, run_id=run_id, job_id=f"job-{run_id}", created_at_ms=now_ms(),
        actual_usd=usd, started=True,
    )  # fmt: skip


def figures(message: str) -> dict[str, float]:
    found = FIGURES.search(message)
    assert found, message
    return {k: float(v) for k, v in found.groupdict().items()}


# -- the ledger ------------------------------------------------------------------------


def test_ledger_enters_estimates_once_and_replaces_them_with_actual_cost(stack: FakeStack) -> None:
    # GIVEN two runs entered at submission
    entered = budget.check_monthly_budget(BUCKET, {"run-a": 1.5, "run-b": 2.0}, None)
    assert entered.before is None  # no budget: the month is not even read
    # WHEN the same submission is entered again (Lambda's retry)
    budget.check_monthly_budget(BUCKET, {"run-a": 1.5, "run-b": 2.0}, 10.0)
    # THEN each run counts once
    spent = budget.month_to_date(BUCKET)
    assert (spent.actual_usd, spent.estimated_usd, spent.runs) == (0.0, 3.5, 2)
    # WHEN run-a ends (twice: EventBridge redelivers) and run-b never started
    common = {"created_at_ms": now_ms()}
    assert budget.record_finished(BUCKET, run_id="run-a", job_id="j1", actual_usd=0.75,
                                  started=True, **common)  # fmt: skip
    assert not budget.record_finished(BUCKET, run_id="run-a", job_id="j1", actual_usd=0.75,
                                      started=True, **common)  # fmt: skip
    budget.record_finished(BUCKET, run_id="run-b", job_id="j2", actual_usd=None, started=False,
                           **common)  # fmt: skip
    # THEN the month holds what they cost, and nothing is estimated any more
    spent = budget.month_to_date(BUCKET)
    assert (spent.actual_usd, spent.estimated_usd) == (0.75, 0.0)
    # AND the ledger is one small object per shard of this month, not one per run
    month = budget.month_of()
    keys = FakeStack.keys(stack, "spend/")
    assert keys and all(k.startswith(f"spend/{month}/") for k in keys)
    assert len(keys) <= budget.SHARDS


def test_a_submission_that_fails_before_any_job_takes_its_estimate_back(stack: FakeStack) -> None:
    entered = budget.check_monthly_budget(BUCKET, {"run-x": 4.0}, None)
    with pytest.raises(ClientError), entered.kept_if_submitted():
        raise ClientError({"Error": {"Code": "ClientException", "Message": "no"}}, "SubmitJob")
    assert budget.month_to_date(BUCKET).estimated_usd == 0.0


def test_over_budget_names_the_three_figures(stack: FakeStack) -> None:
    spent_earlier(9.5)
    budget.check_monthly_budget(BUCKET, {"running": 0.25}, 20.0)
    with pytest.raises(budget.BudgetExceeded) as caught:
        budget.check_monthly_budget(BUCKET, {"new": 0.5}, 10.0)
    assert figures(str(caught.value)) == {"spent": 9.75, "new": 0.5, "budget": 10.0}
    assert "finished runs $9.50 + estimates of unfinished runs $0.25" in str(caught.value)
    assert budget.month_to_date(BUCKET).estimated_usd == 0.25  # the refused run is not entered


# -- the run-record path keeps the ledger ---------------------------------------------------


def test_run_record_counts_what_run_json_says_the_run_cost(
    record_env: FakeStack, record_invoke: Invoke
) -> None:
    # GIVEN a submitted run whose estimate was entered, and whose worker wrote its cost
    job = submit_one(record_env)
    budget.check_monthly_budget(BUCKET, {job.run_id: 0.4}, None)
    results = record_env.get_json(f"runs/{job.run_id}/request.json")["results_uri"]
    key = results.removeprefix(f"s3://{BUCKET}/") + "run.json"
    run_json = {"status": "succeeded", "cost": {"actual_usd": 0.3125, "usd_per_hour": 0.75}}
    client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(run_json).encode())
    # WHEN Batch says it SUCCEEDED (twice)
    event = event_for("batch_job_succeeded", job)
    event["detail"]["createdAt"] = now_ms()
    for _ in range(2):
        assert record_invoke(event)["batch_status"] == "SUCCEEDED"
    # THEN the month holds the run's actual cost, once, and no estimate
    spent = budget.month_to_date(BUCKET)
    assert (spent.actual_usd, spent.estimated_usd, spent.runs) == (0.3125, 0.0, 1)


def test_a_run_that_failed_before_starting_cost_nothing(
    record_env: FakeStack, record_invoke: Invoke
) -> None:
    job = submit_one(record_env)
    budget.check_monthly_budget(BUCKET, {job.run_id: 0.4}, None)
    event = event_for("batch_job_failed_stuck_runnable", job)
    event["detail"]["createdAt"] = now_ms()
    del event["detail"]["startedAt"]  # cancelled in RUNNABLE: Batch never started it
    record_invoke(event)
    spent = budget.month_to_date(BUCKET)
    assert (spent.actual_usd, spent.estimated_usd) == (0.0, 0.0)


# -- the submit Lambda refuses uploads over the budget --------------------------------------


@pytest.fixture
def budgeted_lambda(lambda_env: FakeStack, monkeypatch: pytest.MonkeyPatch) -> FakeStack:
    """The submit Lambda's environment with monthly_budget_usd=10 (stacks/triggers.py)."""
    monkeypatch.setenv("MONTHLY_BUDGET_USD", "10.0")
    monkeypatch.setenv("FAILURE_TOPIC_ARN", lambda_env.outputs["FailureTopicArn"])
    return lambda_env


def test_upload_over_the_budget_is_refused_recorded_and_announced(
    budgeted_lambda: FakeStack, invoke: Invoke, submit_handler: Any
) -> None:
    # GIVEN $9.99 spent this month
    spent_earlier(9.99)
    logs = capture_logs(submit_handler)
    # WHEN a recording is uploaded
    [outcome] = invoke(upload_event("uploads/lab/session 1.nwb", nwb_bytes()))["results"]
    # THEN no job, an errors/ object and one message on the failure topic, with the figures
    assert outcome["status"] == "rejected" and budgeted_lambda.jobs() == []
    assert outcome["error_file"] == f"s3://{BUCKET}/errors/uploads/lab/session 1.nwb.json"
    document = budgeted_lambda.get_json("errors/uploads/lab/session 1.nwb.json")
    [error] = document["errors"]
    found = figures(error["message"])
    assert found["spent"] == 9.99 and found["budget"] == 10.0 and found["new"] > 0.01
    assert error["field"] == "budget" and "README: Budgets" in document["what_to_do"]
    [message] = drain(budgeted_lambda.queue_url)
    assert message["Subject"] == "spikebatch: submission refused, monthly budget reached"
    assert f"s3://{BUCKET}/uploads/lab/session 1.nwb was not submitted" in message["Message"]
    assert figures(message["Message"]) == found
    [line] = [e for e in log_lines(logs) if e["message"].startswith("rejected")]
    assert line["level"] == "WARNING" and line["outcome"]["errors"][0]["field"] == "budget"
    # AND the refused run was not entered in the ledger
    assert budget.month_to_date(BUCKET).estimated_usd == 0.0


def test_upload_while_the_brake_holds_is_refused_with_its_reason(
    budgeted_lambda: FakeStack, invoke: Invoke
) -> None:
    record = {"braked_at": "2026-12-03T09:14:30+00:00", "reason": "AWS Budgets: actual cost"}
    client("s3").put_object(Bucket=BUCKET, Key="brake.json", Body=json.dumps(record).encode())
    [outcome] = invoke(upload_event("uploads/braked.nwb", nwb_bytes()))["results"]
    assert outcome["status"] == "rejected" and budgeted_lambda.jobs() == []
    assert outcome["errors"][0]["message"].startswith(
        "the budget brake holds since 2026-12-03T09:14:30+00:00: AWS Budgets: actual cost;"
    )
    [message] = drain(budgeted_lambda.queue_url)
    assert message["Subject"] == "spikebatch: submission refused, the budget brake holds"


def test_upload_within_the_budget_is_submitted_and_its_estimate_entered(
    budgeted_lambda: FakeStack, invoke: Invoke
) -> None:
    [outcome] = invoke(upload_event("uploads/ok.nwb", nwb_bytes()))["results"]
    assert outcome["status"] == "submitted"
    spent = budget.month_to_date(BUCKET)
    assert spent.runs == 1 and 0 < spent.estimated_usd < 1  # a few KB: startup dominates
    assert drain(budgeted_lambda.queue_url) == []


# -- the CLI refuses the same way -----------------------------------------------------------


def environment_arns() -> str:
    """The fake deployment's compute environment(s), as the stack joins them."""
    found = client("batch").describe_compute_environments()["computeEnvironments"]
    return ",".join(e["computeEnvironmentArn"] for e in found)


@pytest.fixture
def cli(stack: FakeStack, archive: FakeDandiArchive, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``spikebatch ARGS`` against a stack deployed with monthly_budget_usd=10."""
    outputs = {
        **stack.outputs,
        "MonthlyBudgetUsd": "10.0",
        "ComputeEnvironmentArns": environment_arns(),
    }
    template = {
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    client("cloudformation").create_stack(StackName="Budgeted", TemplateBody=json.dumps(template))
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)
    monkeypatch.setenv("SPIKEBATCH_STACK", "Budgeted")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_submit_over_the_budget_exits_1_with_one_line(cli: Any, stack: FakeStack) -> None:
    spent_earlier(9.9)
    result = cli("submit", "--dandiset", "000409", "--asset", ASSET, "--duration-s", "3600")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: budget: monthly budget reached")
    found = figures(line)
    assert found["spent"] == 9.9 and found["budget"] == 10.0 and found["new"] > 0.1
    assert stack.jobs() == []


def test_cli_submit_within_the_budget_enters_its_estimate(cli: Any, stack: FakeStack) -> None:
    result = cli("submit", "--dandiset", "000409", "--asset", ASSET, "--duration-s", "3600")
    assert result.exit_code == 0, result.output
    assert len(stack.jobs()) == 1
    spent = budget.month_to_date(BUCKET)
    # an hour of Kilosort3 on the default spot job: the README's $0.35 per recording-hour
    assert spent.runs == 1 and 0.2 < spent.estimated_usd < 0.6
    status = cli("status")
    assert f"Budget {spent.month}: ${spent.estimated_usd:.2f} of $10.00" in status.output


# -- the brake -------------------------------------------------------------------------------


@pytest.fixture
def brake_invoke(stack: FakeStack, brake_handler: Any, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The brake Lambda as the stack deploys it (stacks/budget.py's environment)."""
    queues = f"{stack.outputs['JobQueueArn']},{stack.outputs['PriorityQueueArn']}"
    monkeypatch.setenv("DATA_BUCKET", BUCKET)
    monkeypatch.setenv("JOB_QUEUE_ARNS", queues)
    monkeypatch.setenv("COMPUTE_ENVIRONMENT_ARNS", environment_arns())
    monkeypatch.setenv("FAILURE_TOPIC_ARN", stack.outputs["FailureTopicArn"])
    context = FakeLambdaContext(function_name="spikebatch-brake")
    return lambda event: brake_handler.handler(event, context)


def queue_states(stack: FakeStack) -> list[str]:
    """The two queues' states, then the compute environment's."""
    batch = client("batch")
    arns = [stack.outputs["JobQueueArn"], stack.outputs["PriorityQueueArn"]]
    queues = batch.describe_job_queues(jobQueues=arns)["jobQueues"]
    states = [q["state"] for q in sorted(queues, key=lambda q: arns.index(q["jobQueueArn"]))]
    return states + [
        e["state"] for e in batch.describe_compute_environments()["computeEnvironments"]
    ]


def test_actual_alert_brakes_queues_and_environments_and_queues_enable_releases_them(
    stack: FakeStack, brake_invoke: Invoke, brake_handler: Any, cli: Any
) -> None:
    logs = capture_logs(brake_handler)
    # WHEN AWS Budgets publishes its 100 % ACTUAL alert
    result = brake_invoke(load_event("sns_budget_actual_alert"))
    # THEN both queues and the compute environment are DISABLED, brake.json says why
    [outcome] = result["results"]
    assert outcome["status"] == "braked"
    assert queue_states(stack) == ["DISABLED", "DISABLED", "DISABLED"]
    record = stack.get_json("brake.json")
    assert record["reason"] == (
        "AWS Budgets: actual cost $263.41 passed the budget $250.00 (SpikeBatch-monthly)"
    )
    assert record["alert"]["Alert Type"] == "ACTUAL" and "Dear AWS Customer" in record["message"]
    [message] = drain(stack.queue_url)
    assert message["Subject"] == "spikebatch: job queues DISABLED by the budget brake"
    assert "spikebatch queues enable" in message["Message"]
    [line] = [e for e in log_lines(logs) if e["message"] == "job queues DISABLED"]
    assert line["function_name"] == "spikebatch-brake" and line["reason"] == record["reason"]
    # AND `spikebatch status` says so
    status = cli("status")
    assert status.exit_code == 0, status.output
    assert f"Job queues BRAKED since {record['braked_at']}: {record['reason']}" in status.output
    # AND while it holds, submissions are refused with its reason (not failed by Batch)
    refused = cli("submit", "--dandiset", "000409", "--asset", ASSET)
    assert refused.exit_code == 1 and stack.jobs() == []
    assert f"error: budget: the budget brake holds since {record['braked_at']}" in refused.stderr
    # WHEN someone has looked and enables the queues
    enabled = cli("queues", "enable")
    # THEN they take work again, the record is gone, and status no longer mentions it
    assert enabled.exit_code == 0, enabled.output
    assert "ENABLED" in enabled.output and record["reason"] in enabled.output
    assert queue_states(stack) == ["ENABLED", "ENABLED", "ENABLED"]
    assert stack.keys("brake.json") == []
    assert "BRAKED" not in cli("status").output


def test_a_forecast_or_other_message_leaves_the_queues_alone(
    stack: FakeStack, brake_invoke: Invoke
) -> None:
    event = load_event("sns_budget_actual_alert")
    sns = event["Records"][0]["Sns"]
    sns["Message"] = sns["Message"].replace("Alert Type: ACTUAL", "Alert Type: FORECASTED")
    assert brake_invoke(event)["results"][0]["status"] == "ignored"
    assert queue_states(stack) == ["ENABLED", "ENABLED", "ENABLED"]
    assert stack.keys("brake.json") == []
    assert budget_alert("Hello from SNS") is None


def test_status_shows_the_brake_even_to_a_user_who_may_not_describe_queues(
    stack: FakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spikebatch import aws
    from spikebatch.control import brake

    record = {"braked_at": "2026-12-03T09:14:30+00:00", "reason": "AWS Budgets: actual cost"}
    client("s3").put_object(Bucket=BUCKET, Key="brake.json", Body=json.dumps(record).encode())
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Describe")

    def describe_job_queues(**_: Any) -> Any:
        raise denied

    monkeypatch.setattr(aws.client("batch"), "describe_job_queues", describe_job_queues)
    state = brake.brake_state(BUCKET, [stack.outputs["JobQueueArn"]], [])
    assert state.record == record and state.states == {}

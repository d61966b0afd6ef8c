"""The ``spikebatch`` CLI against a moto deployment and a fake DANDI archive.

Tests check the exit code, what the user reads, and what reached AWS.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch import cost
from spikebatch.cli import app
from spikebatch.control import batch_events
from spikebatch.control.job_status import classify_failure
from spikebatch.control.request import parse_request
from spikebatch.control.stack_outputs import REQUIRED_OUTPUTS, load_stack_outputs
from spikebatch.control.submission import plan_submission
from tests.submission.conftest import BUCKET, LOG_GROUP, FakeStack, client, load_event
from tests.support.dandi_server import FakeDandiArchive

SNAPSHOT = Path(__file__).parent / "snapshots" / "cli_session.txt"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PORT = re.compile(r"http://127\.0\.0\.1:\d+")
ASSET = "sub-1/sub-1_ecephys.nwb"


@pytest.fixture
def cli(stack: FakeStack, archive: FakeDandiArchive, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``spikebatch ARGS`` against the fake stack and archive; returns the result."""
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)
    runner = CliRunner()

    def run(*args: str, **env: str) -> Any:
        return runner.invoke(app, list(args), env={"COLUMNS": "110", **env})

    return run


def batch_env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


def one_line_error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_submit_one_asset(cli: Any, stack: FakeStack, archive: FakeDandiArchive) -> None:
    result = cli(
        "submit",
        "--dandiset",
        "000409",
        "--asset",
        ASSET,
        "--param",
        "Th=[9,8]",
        "--param",
        "detect_sign=-1",
        "--on-demand",
        "--memory-gib",
        "60",
    )
    assert result.exit_code == 0, result.output
    [job] = stack.jobs()
    env = batch_env(job)
    assert env["DANDI_ASSET_PATH"] == ASSET and env["DANDISET_ID"] == "000409"
    assert json.loads(env["SORTER_PARAMS"]) == {"Th": [9, 8], "detect_sign": -1}
    assert env["DANDI_API_URL"] == archive.api_url  # the job fetches from where we resolved
    assert job["jobQueue"] == stack.outputs["PriorityQueueArn"]
    run_id = env["RUN_ID"]
    assert f"Submitted Batch job {job['jobId']} to spikebatch-on-demand." in result.output
    assert f"{run_id}  ←  dandi:000409/draft/{ASSET}" in result.output
    record = stack.get_json(f"runs/{run_id}/request.json")
    assert record["submitted_by"] == "cli" and record["request"]["resources"]["memory_gib"] == 60


def test_submit_glob_becomes_one_array_job(cli: Any, stack: FakeStack) -> None:
    result = cli("submit", "--dandiset", "000409", "--glob", "sub-*/*.nwb")
    assert result.exit_code == 0, result.output
    [job] = stack.jobs()
    assert job["arrayProperties"]["size"] == 3
    run_id = job["tags"]["spikebatch:run-id"]
    manifest = stack.get_json(f"manifests/{run_id}.json")
    assert [m["DANDI_ASSET_PATH"] for m in manifest] == [
        f"sub-{i}/sub-{i}_ecephys.nwb" for i in (1, 2, 3)
    ]
    assert batch_env(job)["ARRAY_MANIFEST_URI"] == f"s3://{BUCKET}/manifests/{run_id}.json"
    assert "(array job of 3)" in result.output
    for entry in manifest:
        assert f"{entry['RUN_ID']}  ←  dandi:000409/draft/{entry['DANDI_ASSET_PATH']}" in (
            result.output
        )


def test_request_file_with_flag_overrides(cli: Any, stack: FakeStack, tmp_path: Path) -> None:
    request = tmp_path / "req.json"
    request.write_text(
        json.dumps(
            {
                "dandiset_id": "000409",
                "assets": [ASSET],
                "sorter": "kilosort4",
                "resources": {"spot": False},
            }
        )
    )
    result = cli("submit", "--request", str(request), "--spot", "--sorter", "kilosort3")
    assert result.exit_code == 0, result.output
    [job] = stack.jobs()
    assert batch_env(job)["SORTER"] == "kilosort3"
    assert job["jobQueue"] == stack.outputs["JobQueueArn"]


def test_dry_run_prints_the_exact_request_and_submits_nothing(
    cli: Any, stack: FakeStack, archive: FakeDandiArchive
) -> None:
    result = cli("submit", "--dandiset", "000409", "--asset", ASSET, "--dry-run", "--channels", "4")
    assert result.exit_code == 0, result.output
    assert stack.jobs() == [] and stack.keys("runs/") == []
    printed = result.output.split("Batch SubmitJob request:\n", 1)[1].split("\n\n", 1)[0]
    deployment = load_stack_outputs("SpikeBatch").deployment()
    deployment = dataclasses.replace(deployment, dandi_api_url=archive.api_url)
    plan = plan_submission(parse_request({"dandiset_id": "000409", "assets": [ASSET]}), deployment)
    assert json.loads(printed) == plan.submit_job
    # The default Kilosort3 job (8 vCPUs, 30 GiB) does not fit a g4dn.xlarge (4, 16):
    # the estimate prices the cheapest type the job can actually be placed on.
    expected = cost.estimate(
        60.0, 4, instance_type="g4dn.2xlarge", spot=True, input_bytes=60 * 4 * 2 * 30_000
    )
    assert re.search(
        rf"{ASSET} +│ +1\.0 │ g4dn\.2xlarge \(spot\) │ .* │ {expected.usd:.2f}", result.output
    ), result.output


def test_estimate_prices_only_instance_types_the_job_fits() -> None:
    from spikebatch.estimates import fitting_instance_types
    from spikebatch.instances import INSTANCE_TYPES

    small = parse_request(
        {"input_uri": "s3://lab-bucket/a.nwb", "resources": {"vcpus": 4, "memory_gib": 15}}
    )
    assert "g4dn.xlarge" in fitting_instance_types(small)
    default = parse_request({"input_uri": "s3://lab-bucket/a.nwb", "sorter": "kilosort3"})
    fits = fitting_instance_types(default)
    assert "g4dn.xlarge" not in fits and "g4dn.2xlarge" in fits
    # The stack's compute environments hold GPU types only: CPU sorters are priced there too.
    cpu = parse_request({"input_uri": "s3://lab-bucket/a.nwb", "sorter": "tridesclous2"})
    for request in (default, cpu):
        assert all(INSTANCE_TYPES[name].gpus > 0 for name in fitting_instance_types(request))


def test_estimate_from_dandi_sizes(cli: Any) -> None:
    result = cli(
        "estimate",
        "--dandiset",
        "000409",
        "--glob",
        "sub-*/*.nwb",
        "--channels",
        "4",
        "--on-demand",
    )
    assert result.exit_code == 0, result.output
    estimate_table = result.output.split("Scratch (")[0]  # the scratch table follows it
    rows = [line for line in estimate_table.splitlines() if "_ecephys.nwb" in line]
    minutes = [float(row.split("│")[2]) for row in rows]
    assert minutes == [1.0, 2.0, 0.5]  # 60, 120 and 30 s of 4-channel int16 at 30 kHz
    assert all("(on-demand)" in row for row in rows) and "total" in result.output


def test_status_shows_the_recorded_failure_reason(
    cli: Any, stack: FakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("submit", "--input-uri", "s3://lab-bucket/a.nwb").exit_code == 0
    [job] = stack.jobs()
    run_id = job["tags"]["spikebatch:run-id"]
    event = load_event(
        "batch_job_failed_oom", job_id=job["jobId"], job_name=job["jobName"], run_id=run_id
    )
    batch_events.handle(event, stack.record_env)

    table = cli("status")
    assert table.exit_code == 0, table.output
    [row] = [line for line in table.output.splitlines() if run_id in line]
    assert "FAILED" in row and "out-of-memory: OutOfMemoryError" in row

    detail = cli("status", run_id)
    assert detail.exit_code == 0, detail.output
    assert "reason: out-of-memory: OutOfMemoryError: Container killed due to memory usage" in (
        detail.output
    )
    assert "what to do: raise resources.memory_gib" in detail.output
    assert "logs: https://us-east-1.console.aws.amazon.com/cloudwatch/" in detail.output


def test_logs_prints_the_jobs_cloudwatch_stream(cli: Any, stack: FakeStack) -> None:
    assert cli("submit", "--input-uri", "s3://lab-bucket/a.nwb").exit_code == 0
    [job] = stack.jobs()
    stream = job["container"]["logStreamName"]
    logs = client("logs")
    now_ms = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": now_ms + i, "message": f"stage {i}"} for i in range(3)],
    )
    result = cli("logs", job["tags"]["spikebatch:run-id"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["stage 0", "stage 1", "stage 2"]
    # --follow prints each line once and returns when the job has ended
    followed = cli("logs", job["tags"]["spikebatch:run-id"], "--follow", "--interval", "0")
    assert followed.exit_code == 0 and followed.stdout == result.stdout


def test_wait_reports_success_and_failure(
    cli: Any, stack: FakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("submit", "--input-uri", "s3://lab-bucket/ok.nwb").exit_code == 0
    [ok] = stack.jobs()
    result = cli("wait", ok["tags"]["spikebatch:run-id"], "--interval", "0")
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED; results: spikebatch results" in result.output

    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # moto fails the next job
    assert cli("submit", "--input-uri", "s3://lab-bucket/bad.nwb").exit_code == 0
    [bad] = [j for j in stack.jobs() if j["jobId"] != ok["jobId"]]
    run_id = bad["tags"]["spikebatch:run-id"]
    assert one_line_error(cli("wait", run_id, "--interval", "0")).startswith(
        f"error: {run_id} FAILED"
    )


def test_results_lists_and_downloads(cli: Any, stack: FakeStack, tmp_path: Path) -> None:
    assert cli("submit", "--input-uri", "s3://lab-bucket/a.nwb").exit_code == 0
    [job] = stack.jobs()
    run_id = job["tags"]["spikebatch:run-id"]
    s3 = client("s3")
    files = {"run.json": b'{"status": "succeeded"}', "sorting/spikes.npy": b"\x93NUMPY" * 100}
    for name, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"results/{run_id}/{name}", Body=body)
    listing = cli("results", run_id)
    assert listing.exit_code == 0, listing.output
    assert "run.json" in listing.output and "sorting/spikes.npy" in listing.output
    downloaded = cli("results", run_id, "--download", str(tmp_path))
    assert downloaded.exit_code == 0, downloaded.output
    for name, body in files.items():
        assert (tmp_path / run_id / name).read_bytes() == body


def test_cancel_terminates_the_job_with_the_reason(cli: Any, stack: FakeStack) -> None:
    assert cli("submit", "--input-uri", "s3://lab-bucket/a.nwb").exit_code == 0
    [job] = stack.jobs()
    result = cli("cancel", job["tags"]["spikebatch:run-id"], "--reason", "wrong probe")
    assert result.exit_code == 0, result.output
    [after] = client("batch").describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert after["statusReason"] == "cancelled with spikebatch cancel: wrong probe"
    assert classify_failure([after["statusReason"]]).name == "cancelled"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["status"],
            {"SPIKEBATCH_STACK": "Elsewhere"},
            "error: stack 'Elsewhere' not found in us-east-1",
        ),
        (["status", "--stack-name", "Flag"], {"SPIKEBATCH_STACK": "Env"}, "error: stack 'Flag'"),
        (["status", "no-such-run"], {}, "error: no run 'no-such-run' in s3://"),
        (["submit", "--dandiset", "000409"], {}, "error: say what to sort: --asset, --glob"),
        (
            ["submit", "--input-uri", "s3://lab-bucket/a.nwb", "--param", "Th"],
            {},
            "error: --param 'Th'",
        ),
        (
            ["submit", "--input-uri", "s3://lab-bucket/a.nwb", "--gpus", "0"],
            {},
            "error: resources: kilosort3 needs a GPU: gpus must be at least 1",
        ),
        (
            ["submit", "--input-uri", "s3://lab-bucket/a.nwb", "--memory-gib", "500"],
            {},
            "error: resources.memory_gib: 500 is more than the stack's largest instance",
        ),
        (
            ["submit", "--dandiset", "000409", "--glob", "nothing/*.nwb"],
            {},
            "error: asset_glob: 'nothing/*.nwb' matched no assets in dandiset 000409 (draft)",
        ),
        (
            ["submit", "--dandiset", "000409", "--asset", "sub-9/x.nwb"],
            {},
            "error: not in dandiset 000409 (draft): sub-9/x.nwb",
        ),
        (
            ["submit", "--dandiset", "000999", "--asset", ASSET],
            {},
            "error: dandiset 000999 does not exist on http://127.0.0.1:",
        ),
        (
            [
                *("submit", "--dandiset", "000409", "--asset", ASSET),
                *("--dandiset-version", "0.230101.0000"),
            ],
            {},
            "error: dandiset 000409 has no published version '0.230101.0000' on http://",
        ),
        (
            [
                "estimate",
                "--dandiset",
                "000409",
                "--glob",
                "*",
                "--dandi-api-url",
                "http://127.0.0.1:9/api",
            ],
            {},
            "error: cannot reach the DANDI API at http://127.0.0.1:9/api",
        ),
    ],
)
def test_domain_errors_are_one_line(
    cli: Any, stack: FakeStack, args: list[str], env: dict[str, str], message: str
) -> None:
    assert one_line_error(cli(*args, **env)).startswith(message)
    assert stack.jobs() == []


def test_help_documents_precedence_and_env_vars(cli: Any) -> None:
    top = cli("--help")
    assert "flag > environment variable > --request file > default" in " ".join(top.output.split())
    submit_help = " ".join(cli("submit", "--help").output.split())
    assert "SPIKEBATCH_STACK" in submit_help and "--dry-run" in submit_help


def test_typical_session_snapshot(cli: Any, stack: FakeStack) -> None:
    """dry-run → submit → status → logs → cancel, as a user sees it (ids normalized)."""
    transcript = []

    def step(*args: str) -> str:
        result = cli(*args)
        assert result.exit_code == 0, result.output
        transcript.append(f"$ spikebatch {' '.join(args)}\n{result.output}")
        return result.output

    step(
        "submit", "--dandiset", "000409", "--glob", "sub-[12]/*.nwb", "--channels", "4", "--dry-run"
    )
    step("submit", "--dandiset", "000409", "--glob", "sub-[12]/*.nwb")
    [job] = stack.jobs()
    run_id = job["tags"]["spikebatch:run-id"]
    child = stack.get_json(f"runs/{run_id}/request.json")["children"][1]["run_id"]
    [child_job] = client("batch").describe_jobs(jobs=[f"{job['jobId']}:1"])["jobs"]
    event = load_event(
        "batch_job_failed_oom", job_id=child_job["jobId"], job_name=job["jobName"], run_id=run_id
    )
    event["detail"]["arrayProperties"] = {"index": 1}
    batch_events.handle(event, stack.record_env)
    step("status")
    step("status", child)
    step("cancel", run_id)
    text = PORT.sub("http://127.0.0.1:<port>", UUID.sub("<job-id>", "\n".join(transcript)))
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    # The dry-run estimate comes from spikebatch.cost: after an intended change to the
    # cost model or the output, regenerate with UPDATE_SNAPSHOTS=1 and review the diff.
    assert text == SNAPSHOT.read_text()


def test_run_local_hands_the_job_env_to_the_worker(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_main = pytest.importorskip("spikebatch.worker.__main__")
    seen: list[dict[str, str]] = []
    monkeypatch.setattr(worker_main, "main", lambda env: seen.append(dict(env)) or 3)
    result = cli(
        "run-local",
        "--input-uri",
        "file:///data/rec.nwb",
        "--sorter",
        "kilosort4",
        "--param",
        "Th_universal=10",
        "--output",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 3  # the worker's exit status
    [env] = seen
    assert env["INPUT_URI"] == "file:///data/rec.nwb" and env["SORTER"] == "kilosort4"
    assert env["OUTPUT_URI"] == (tmp_path / "out").resolve().as_uri()
    assert env["SORTER_PARAMS"] == '{"Th_universal":10}'
    assert env["RUN_ID"].startswith("rec-kilosort4-")


def test_wait_and_results_cover_every_array_child(cli: Any, stack: FakeStack) -> None:
    assert cli("submit", "--dandiset", "000409", "--glob", "sub-*/*.nwb").exit_code == 0
    [job] = stack.jobs()
    run_id = job["tags"]["spikebatch:run-id"]
    waited = cli("wait", run_id, "--interval", "0")
    assert waited.exit_code == 0, waited.output
    children = stack.get_json(f"runs/{run_id}/request.json")["children"]
    for child in children:
        client("s3").put_object(
            Bucket=BUCKET, Key=f"results/{child['run_id']}/run.json", Body=b"{}"
        )
    listing = cli("results", run_id)
    assert listing.exit_code == 0, listing.output
    for child in children:
        assert f"{child['run_id']}: s3://{BUCKET}/results/{child['run_id']}/" in listing.output


def test_a_stack_without_the_outputs_is_named(cli: Any, stack: FakeStack) -> None:
    template = {
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"DataBucketName": {"Value": BUCKET}},
    }
    client("cloudformation").create_stack(StackName="Partial", TemplateBody=json.dumps(template))
    message = one_line_error(cli("status", "--stack-name", "Partial"))
    assert message.startswith("error: stack 'Partial' in us-east-1 lacks outputs JobQueueArn")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{bad", "not valid JSON (Expecting property name"),
        (b"\xff", "not valid JSON ("),
        (b"[1]", "a request file holds one JSON object"),
    ],
)
def test_unreadable_request_files_are_one_line(
    cli: Any, stack: FakeStack, tmp_path: Path, content: bytes, message: str
) -> None:
    request = tmp_path / "req.json"
    request.write_bytes(content)
    assert message in one_line_error(cli("submit", "--request", str(request)))


def test_request_file_fields_are_validated_with_flags_over_them(
    cli: Any, stack: FakeStack, tmp_path: Path
) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"input_uri": "s3://lab-bucket/a.nwb", "resources": [1]}))
    error = one_line_error(cli("submit", "--request", str(request), "--gpus", "1"))
    assert error.startswith("error: resources: Input should be a valid dictionary")
    assert stack.jobs() == []


def test_the_cli_needs_only_outputs_the_stack_declares() -> None:
    stack_module = pytest.importorskip("stacks.spikebatch_stack")
    assert set(REQUIRED_OUTPUTS) <= set(stack_module.OUTPUT_KEYS)


NO_AWS_CONFIGURATION = {
    **dict.fromkeys(
        [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_ENDPOINT_URL",
        ]
    ),
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
NO_REGION = (
    "error: no AWS region configured: pass --region, set AWS_REGION, or set a region in your"
    " AWS profile (`aws configure`)"
)
NO_CREDENTIALS = (
    "error: no usable AWS credentials: run `aws configure` or `aws sso login`, or set"
    " AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) (Unable to locate credentials)"
)


@pytest.fixture
def fresh_clients() -> Any:
    from spikebatch import aws

    aws.clear_cache()
    aws.use_region(None)
    yield
    aws.clear_cache()
    aws.use_region(None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status"], NO_REGION),
        (["logs", "some-run"], NO_REGION),
        (["redrive", "--dry-run"], NO_REGION),
        (["submit", "--input-uri", "s3://lab-bucket/a.nwb"], NO_REGION),
        (["status", "--region", "eu-west-1"], NO_CREDENTIALS),
        (["cancel", "some-run", "--region", "eu-west-1"], NO_CREDENTIALS),
    ],
)
def test_commands_without_aws_configuration_say_what_to_set(
    fresh_clients: Any, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, args, env=NO_AWS_CONFIGURATION)
    assert one_line_error(result) == message


def _deploy_copy(stack: FakeStack, name: str, **extra: str) -> None:
    """The fake stack's outputs again, plus ``extra``, as another CloudFormation stack."""
    outputs = {**stack.outputs, **extra}
    template = {
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


@pytest.mark.parametrize(("subscribed", "told"), [("false", True), ("true", False), (None, False)])
def test_status_says_once_when_no_one_is_subscribed_to_failures(
    cli: Any, stack: FakeStack, subscribed: str | None, told: bool
) -> None:
    """GIVEN a stack deployed without alarm_email (output FailureAlertsSubscribed=false) and
    a topic nobody subscribed to WHEN `spikebatch status` runs THEN one line says so; with a subscriber, or a stack that
    predates the output, nothing is said."""
    extra = {"FailureAlertsSubscribed": subscribed} if subscribed is not None else {}
    lonely = client("sns").create_topic(Name="no-subscribers")["TopicArn"]
    _deploy_copy(stack, "Watched", FailureTopicArn=lonely, **extra)
    assert cli("submit", "--input-uri", "s3://lab-bucket/a.nwb").exit_code == 0
    result = cli("status", "--stack-name", "Watched")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "subscribed" in line]
    assert len(lines) == (1 if told else 0), result.output
    if told:
        assert "spikebatch.alarm_email" in lines[0]
        assert lonely in " ".join(result.output.split())


def test_status_is_quiet_once_someone_subscribed_by_hand(cli: Any, stack: FakeStack) -> None:
    """GIVEN no alarm_email but a subscription made by hand WHEN status runs THEN no line."""
    _deploy_copy(stack, "Watched", FailureAlertsSubscribed="false")
    assert client("sns").list_subscriptions_by_topic(TopicArn=stack.outputs["FailureTopicArn"])[
        "Subscriptions"
    ], "the fake stack subscribes its test queue to the topic"
    result = cli("status", "--stack-name", "Watched")
    assert result.exit_code == 0, result.output
    assert "subscribed" not in result.output

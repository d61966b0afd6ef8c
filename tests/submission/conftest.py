"""A deployed spikebatch stack, in moto: bucket, queues and job definitions like the
stack's, log group, SNS topic (with an SQS subscriber to read what was published), the
idempotency table, and a CloudFormation stack whose outputs name them all.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spikebatch import aws
from spikebatch.control import idempotency
from tests.submission.faults import FakeClock, Faults, watch_clients
from tests.support.dandi_server import FakeDandiArchive

REGION = "us-east-1"
BUCKET = "spikebatch-data-test"
STACK = "SpikeBatch"
LOG_GROUP = "/aws/batch/spikebatch"
LIMITS = {"max_vcpus": 32, "max_memory_gib": 128, "max_gpus": 1}
EVENTS = Path(__file__).resolve().parent.parent / "events"


@functools.cache
def client(service: str) -> Any:
    """Test-side clients, created once (moto intercepts them in every mock_aws block)."""
    return boto3.client(service, region_name=REGION)


@dataclass
class FakeStack:
    outputs: dict[str, str]
    queue_url: str  # SQS queue subscribed to the failure topic

    @property
    def lambda_env(self) -> dict[str, str]:
        """The submit Lambda's environment, as stacks/triggers.py sets it."""
        return {
            "DATA_BUCKET": self.outputs["DataBucketName"],
            "JOB_QUEUE_ARN": self.outputs["JobQueueArn"],
            "PRIORITY_QUEUE_ARN": self.outputs["PriorityQueueArn"],
            "GPU_JOB_DEFINITION_ARN": self.outputs["GpuJobDefinitionArn"],
            "CPU_JOB_DEFINITION_ARN": self.outputs["CpuJobDefinitionArn"],
            "IDEMPOTENCY_TABLE": self.outputs["IdempotencyTableName"],
            "DEFAULT_SORTER": "kilosort3",
            "DANDI_API_URL": "http://127.0.0.1:9/api",
            "RESOURCE_LIMITS": json.dumps(LIMITS),
            "POWERTOOLS_SERVICE_NAME": "spikebatch-submit",
            "LOG_LEVEL": "INFO",
        }

    @property
    def record_env(self) -> dict[str, str]:
        """The run-record Lambda's environment."""
        return {
            "DATA_BUCKET": self.outputs["DataBucketName"],
            "FAILURE_TOPIC_ARN": self.outputs["FailureTopicArn"],
            "LOG_GROUP_NAME": self.outputs["LogGroupName"],
            "IDEMPOTENCY_TABLE": self.outputs["IdempotencyTableName"],
            "AWS_REGION": REGION,
            "POWERTOOLS_SERVICE_NAME": "spikebatch-run-record",
            "LOG_LEVEL": "INFO",
        }

    def jobs(self) -> list[dict[str, Any]]:
        """Every top-level job in both queues (array children are not listed separately)."""
        batch = client("batch")
        found = []
        for queue in (self.outputs["JobQueueArn"], self.outputs["PriorityQueueArn"]):
            ids = [
                j["jobId"]
                for status in (
                    "SUBMITTED",
                    "PENDING",
                    "RUNNABLE",
                    "STARTING",
                    "RUNNING",
                    "SUCCEEDED",
                    "FAILED",
                )
                for j in batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]
            ]
            if ids:
                found += batch.describe_jobs(jobs=sorted(set(ids)))["jobs"]
        return [j for j in found if ":" not in j["jobId"]]

    def notifications(self) -> list[dict[str, Any]]:
        sqs = client("sqs")
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]

    def get_json(self, key: str) -> Any:
        s3 = client("s3")
        return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        s3 = client("s3")
        page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for o in page.get("Contents", []))


def _job_definition(batch: Any, name: str, *, gpu: bool) -> str:
    """Like stacks/jobs.py: GPU=1 (GPU def), retry on Host EC2*, timeout, awslogs."""
    resources = [{"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "30720"}]
    if gpu:
        resources.append({"type": "GPU", "value": "1"})
    return batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/spikebatch-worker:latest",
            "resourceRequirements": resources,
            "environment": [{"name": "SCRATCH_DIR", "value": "/scratch"}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": LOG_GROUP},
            },
        },
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [
                {"onStatusReason": "Host EC2*", "action": "RETRY"},
                {"onReason": "*", "action": "EXIT"},
            ],
        },
        timeout={"attemptDurationSeconds": 43_200},
        propagateTags=True,
    )["jobDefinitionArn"]


def build_stack() -> FakeStack:
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    iam = client("iam")
    role = iam.create_role(
        RoleName="batch-service",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    batch = client("batch")
    ce = batch.create_compute_environment(
        computeEnvironmentName="gpu", type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    queues = {
        name: batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=priority,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
        )["jobQueueArn"]
        for name, priority in (("spikebatch-spot", 1), ("spikebatch-on-demand", 10))
    }
    gpu_def = _job_definition(batch, "spikebatch-gpu", gpu=True)
    cpu_def = _job_definition(batch, "spikebatch-cpu", gpu=False)
    client("logs").create_log_group(logGroupName=LOG_GROUP)
    topic = client("sns").create_topic(Name="spikebatch-failures")["TopicArn"]
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName="failures")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    client("sns").subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "false"},
    )
    failed_events = sqs.create_queue(QueueName="spikebatch-failed-events")["QueueUrl"]
    table = "spikebatch-idempotency"
    client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    outputs = {
        "DataBucketName": BUCKET,
        "JobQueueArn": queues["spikebatch-spot"],
        "PriorityQueueArn": queues["spikebatch-on-demand"],
        "GpuJobDefinitionArn": gpu_def,
        "CpuJobDefinitionArn": cpu_def,
        "LogGroupName": LOG_GROUP,
        "FailureTopicArn": topic,
        "DashboardUrl": "https://console.aws.amazon.com/cloudwatch/home#dashboards:name=SpikeBatch",
        "IdempotencyTableName": table,
        "ResourceLimits": json.dumps(LIMITS),
        "FailedEventsQueueUrl": failed_events,
        "SubmitFunctionName": "spikebatch-submit",
        "RunRecordFunctionName": "spikebatch-run-record",
    }
    template = {
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    return FakeStack(outputs=outputs, queue_url=queue_url)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStack]:
    """A fresh moto account with the deployed stack; Batch jobs never run a container."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("SPIKEBATCH_STACK", raising=False)
    with mock_aws(config={"batch": {"use_docker": False}}):
        aws.clear_cache()
        aws.use_region(None)
        yield build_stack()
    aws.clear_cache()
    aws.use_region(None)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Counts (and on demand fails) every AWS call the code under test makes."""
    return watch_clients(Faults(), monkeypatch)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The claim module's clock: tests move it (through Lambda's retry delays, leases)."""
    fake = FakeClock()
    monkeypatch.setattr(idempotency, "time", fake)
    return fake


@pytest.fixture
def atomic_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB's conditional writes are atomic per item; moto's are not (a thread can be
    switched out between the condition check and the write, so two claims both succeed).
    One lock around moto's writes gives concurrent invocations the real service's guarantee."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    for name in ("put_item", "update_item", "delete_item"):
        write = getattr(DynamoDBBackend, name)

        def atomic(self: Any, *args: Any, _write: Any = write, **kwargs: Any) -> Any:
            with lock:
                return _write(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


@contextlib.contextmanager
def _library_logging_restored() -> Iterator[None]:
    """Powertools reroutes the ``spikebatch`` logger (propagate=False) when a handler module
    configures it; undo that afterwards so other tests' ``caplog`` still sees the library."""
    library = logging.getLogger("spikebatch")
    saved = (list(library.handlers), library.propagate, library.level)
    try:
        yield
    finally:
        library.handlers, library.propagate = saved[0], saved[1]
        library.setLevel(saved[2])


def _handler_module(name: str) -> Iterator[Any]:
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    with _library_logging_restored():
        module = importlib.import_module(f"lambdas.{name}.handler")
        # What the module did at its (cached) first import, done again for this test.
        copy_config_to_registered_loggers(source_logger=module.logger, include={"spikebatch"})
        yield module


@pytest.fixture
def submit_handler() -> Iterator[Any]:
    """``lambdas/submit/handler.py``, imported as Lambda does, logging as in Lambda."""
    yield from _handler_module("submit")


@pytest.fixture
def record_handler() -> Iterator[Any]:
    """``lambdas/run_record/handler.py``, imported as Lambda does, logging as in Lambda."""
    yield from _handler_module("run_record")


@pytest.fixture
def brake_handler() -> Iterator[Any]:
    """``lambdas/brake/handler.py``, imported as Lambda does, logging as in Lambda."""
    yield from _handler_module("brake")


Invoke = Callable[[Any], dict[str, Any]]


@pytest.fixture
def lambda_env(stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> FakeStack:
    """The submit Lambda's environment, as the stack would set it."""
    for name, value in stack.lambda_env.items():
        monkeypatch.setenv(name, value)
    return stack


@pytest.fixture
def record_env(stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> FakeStack:
    """The run-record Lambda's environment, as the stack would set it."""
    for name, value in stack.record_env.items():
        monkeypatch.setenv(name, value)
    return stack


@pytest.fixture
def record_invoke(record_handler: Any) -> Invoke:
    """Call the run-record handler as Lambda does: the event and a context."""
    from tests.submission.lambda_support import FakeLambdaContext

    context = FakeLambdaContext(function_name="spikebatch-run-record")
    return lambda event: record_handler.handler(event, context)


@pytest.fixture
def invoke(submit_handler: Any) -> Invoke:
    """Call the submit handler as Lambda does: the event and a context."""
    from tests.submission.lambda_support import FakeLambdaContext

    return lambda event: submit_handler.handler(event, FakeLambdaContext())


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDandiArchive]:
    """A fake DANDI archive with dandiset 000409: three sessions and a non-NWB file."""
    folder = tmp_path_factory.mktemp("dandi")
    with FakeDandiArchive(page_size=2) as fake:
        for index, seconds in enumerate((60, 120, 30), start=1):
            path = folder / f"s{index}.nwb"
            path.write_bytes(b"\0" * (seconds * 4 * 2 * 30_000))  # 4 channels, int16, 30 kHz
            fake.add_asset("000409", f"sub-{index}/sub-{index}_ecephys.nwb", path)
        notes = folder / "notes.txt"
        notes.write_text("not a recording")
        fake.add_asset("000409", "sub-1/notes.txt", notes)
        yield fake


BIG_DANDISET = "000800"
BIG_ASSETS = 12_000
BIG_PATHS = [f"sub-{i:05d}/sub-{i:05d}_ses-1_ecephys.nwb" for i in range(BIG_ASSETS)]
DANDISET, ASSETS, PATHS = BIG_DANDISET, BIG_ASSETS, BIG_PATHS


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDandiArchive]:
    """Dandiset 000800 with 12,000 NWB assets (one 60 s, 4-channel blob served 12,000 times):
    a campaign of two arrays."""
    blob = tmp_path_factory.mktemp("dandi") / "rec.nwb"
    blob.write_bytes(b"\0" * (60 * 4 * 2 * 30_000))
    with FakeDandiArchive(page_size=1000) as fake:
        fake.add_assets(BIG_DANDISET, BIG_PATHS, blob)
        yield fake


def load_event(name: str, **replacements: str) -> dict[str, Any]:
    """tests/events/<name>.json with ``{{placeholders}}`` filled in."""
    text = (EVENTS / f"{name}.json").read_text()
    for key, value in replacements.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)

"""The two Lambdas: S3 upload/request -> submit, Batch state change -> run record.

Each gets its own role with exactly what its handler does, its own log group with
retention, and the Powertools v3 layer (which also brings pydantic v2).

Both are invoked asynchronously and built to die at any instant (README, "Uploads under
faults"): their timeout is the claim protocol's ``HANDLER_TIMEOUT_S`` (shorter than a
claim's lease, which is shorter than Lambda's first retry), Lambda retries each failed
event twice, and what still fails, or waits longer than ``MAX_EVENT_AGE``, is kept in the
failed-events queue. The submit Lambda's reserved concurrency caps its SubmitJob rate
below Batch's account quota, so a burst of uploads waits in Lambda's queue instead of
failing. The run-record Lambda's (``run_record_reserved_concurrency``) keeps a burst of job
events from taking the account's Lambda concurrency; throttled events wait in Lambda's queue
(6 h), EventBridge retries a refused hand-over (24 h), and both end in the failed-events queue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from spikebatch.contract import (
    BRAKE_KEY,
    CAMPAIGNS_PREFIX,
    CONTINUATIONS_PREFIX,
    ERRORS_PREFIX,
    MANIFESTS_PREFIX,
    REQUESTS_PREFIX,
    RESULTS_PREFIX,
    RUN_JSON,
    RUN_PAGE,
    RUNS_PREFIX,
    SPEND_PREFIX,
    UPLOADS_PREFIX,
)
from spikebatch.control.idempotency import HANDLER_TIMEOUT_S
from stacks.cfn_tidy import drop_role_depends_on
from stacks.lambda_asset import HANDLER, lambda_code
from stacks.nag import acknowledge, arn_finding, object_pattern_finding
from stacks.storage import allow_list_prefixes, allow_object_prefixes

RUNTIME = lambda_.Runtime.PYTHON_3_12
# Public SSM parameters that Powertools publishes per release: CloudFormation resolves
# the layer ARN of exactly the pinned version at deploy time (synth stays offline).
POWERTOOLS_LAYER_PARAMETER = "/aws/service/powertools/python/x86_64/python3.12/{version}"
# Claims are conditional UpdateItems that return the item they replaced (or that blocked
# them): an item read, hence GetItem too.
IDEMPOTENCY_ACTIONS = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
# Lambda's CPU share grows with memory (one full vCPU at 1769 MB). An array of 10,000
# recordings writes 20,002 run records; botocore spends ~0.76 ms of CPU per PutObject
# (measured on one core), ~15 s in all, which must fit the 40 s timeout with the DANDI
# listing and the network waits: 52 s at 512 MB would not.
SUBMIT_MEMORY_MB = 1769
RETRY_ATTEMPTS = 2  # Lambda's asynchronous retries (1 and 3 minutes later), the maximum
MAX_EVENT_AGE = Duration.hours(6)  # the maximum: throttled events wait this long in Lambda's queue


def job_definition_arn_pattern(stack: Stack, name: str) -> str:
    """Every revision of job definition ``name``: a stack update registers a new one."""
    return stack.format_arn(service="batch", resource="job-definition", resource_name=f"{name}:*")


class Triggers(Construct):
    """``self.submit`` and ``self.run_record`` functions and ``self.idempotency_table``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        bucket: s3.IBucket,
        default_queue: batch.IJobQueue,
        priority_queue: batch.IJobQueue,
        gpu_job_definition: batch.IJobDefinition,
        cpu_job_definition: batch.IJobDefinition,
        job_definition_names: Sequence[str],
        job_events: events.Rule,
        failure_topic: sns.ITopic,
        failed_events: sqs.IQueue,
        submit_reserved_concurrency: int | None,
        run_record_reserved_concurrency: int | None,
        job_log_group: logs.ILogGroup,
        default_sorter: str,
        dandi_api_url: str,
        resource_limits: Mapping[str, int],
        monthly_budget_usd: float | None,
        powertools_version: str,
        powertools_layer_arn: str | None,
        log_level: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.idempotency_table = dynamodb.Table(
            self,
            "Idempotency",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expires_at",
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=removal_policy,
        )
        layer_arn = powertools_layer_arn or ssm.StringParameter.value_for_string_parameter(
            self, POWERTOOLS_LAYER_PARAMETER.format(version=powertools_version)
        )
        self._powertools = lambda_.LayerVersion.from_layer_version_arn(
            self, "Powertools", layer_arn
        )
        self._log_retention = log_retention
        self._failed_events = failed_events

        self.submit = self.function(
            "Submit",
            name="submit",
            description="Validate job requests and uploads in the data bucket; submit Batch jobs",
            reserved_concurrency=submit_reserved_concurrency,
            memory_mb=SUBMIT_MEMORY_MB,
            environment={
                "DATA_BUCKET": bucket.bucket_name,
                "JOB_QUEUE_ARN": default_queue.job_queue_arn,
                "PRIORITY_QUEUE_ARN": priority_queue.job_queue_arn,
                "GPU_JOB_DEFINITION_ARN": gpu_job_definition.job_definition_arn,
                "CPU_JOB_DEFINITION_ARN": cpu_job_definition.job_definition_arn,
                "IDEMPOTENCY_TABLE": self.idempotency_table.table_name,
                "DEFAULT_SORTER": default_sorter,
                "DANDI_API_URL": dandi_api_url,
                "RESOURCE_LIMITS": json.dumps(dict(resource_limits), sort_keys=True),
                "POWERTOOLS_SERVICE_NAME": "spikebatch-submit",
                "LOG_LEVEL": log_level,
                **(
                    {
                        "MONTHLY_BUDGET_USD": repr(float(monthly_budget_usd)),
                        "FAILURE_TOPIC_ARN": failure_topic.topic_arn,
                    }
                    if monthly_budget_usd is not None
                    else {}
                ),
            },
        )
        job_definitions = [job_definition_arn_pattern(stack, n) for n in job_definition_names]
        job_arns = stack.format_arn(service="batch", resource="job", resource_name="*")
        self.submit.add_to_role_policy(
            iam.PolicyStatement(
                sid="SubmitToOurQueues",
                actions=["batch:SubmitJob"],
                resources=[
                    default_queue.job_queue_arn,
                    priority_queue.job_queue_arn,
                    *job_definitions,
                ],
            )
        )
        self.submit.add_to_role_policy(
            iam.PolicyStatement(
                sid="TagJobsOnSubmit",
                actions=["batch:TagResource"],
                resources=[job_arns],
                conditions={"StringEquals": {"batch:CreateAction": "SubmitJob"}},
            )
        )
        self.submit.add_to_role_policy(
            iam.PolicyStatement(
                sid="FindSubmittedJobs",
                actions=["batch:ListJobs", "batch:DescribeJobs"],
                resources=["*"],
            )
        )
        submit_role = self.submit.role
        acknowledge(
            submit_role,
            "AwsSolutions-IAM5[Resource::*]",
            "batch:ListJobs and batch:DescribeJobs support no resource-level permissions; a"
            " retry uses them to find the job an interrupted invocation submitted.",
        )
        allow_object_prefixes(
            submit_role,
            sid="ReadRequests",
            # The bucket is versioned: events name a version, and reading one needs both.
            actions=["s3:GetObject", "s3:GetObjectVersion"],
            bucket=bucket,
            prefixes=[REQUESTS_PREFIX, UPLOADS_PREFIX],
        )
        allow_object_prefixes(
            submit_role,
            sid="WriteRecords",
            actions=["s3:PutObject"],
            bucket=bucket,
            prefixes=[
                ERRORS_PREFIX,
                RUNS_PREFIX,
                MANIFESTS_PREFIX,
                CAMPAIGNS_PREFIX,
                CONTINUATIONS_PREFIX,
            ],
        )
        # A campaign skips what is done or in flight: it lists and reads the run records,
        # and reads (then updates) its own record.
        allow_object_prefixes(
            submit_role,
            sid="ReadRecords",
            actions=["s3:GetObject"],
            bucket=bucket,
            prefixes=[RUNS_PREFIX, CAMPAIGNS_PREFIX],
        )
        allow_list_prefixes(submit_role, sid="ListRuns", bucket=bucket, prefixes=[RUNS_PREFIX])
        # A SpikeGLX .meta's missing .bin must read as 404 (not 403); an input_uri glob
        # over uploads/ lists it.
        allow_list_prefixes(
            submit_role, sid="ListUploads", bucket=bucket, prefixes=[UPLOADS_PREFIX]
        )
        self._idempotency(self.submit)
        self._spend_ledger(self.submit, bucket)
        # While the budget brake holds, submissions are refused with its reason.
        self.submit.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadTheBrake",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(BRAKE_KEY)],
            )
        )
        allow_list_prefixes(submit_role, sid="ListTheBrake", bucket=bucket, prefixes=[BRAKE_KEY])
        if monthly_budget_usd is not None:  # it says so when it refuses an upload
            self.publish_failures(self.submit, failure_topic)
        for arn in job_definitions:
            acknowledge(
                submit_role,
                arn_finding(stack, arn),
                "Every revision of this app's own job definition: each deploy registers a new"
                " revision under the same name.",
            )
        acknowledge(
            submit_role,
            arn_finding(stack, job_arns),
            "Tag-on-create of the jobs it submits (condition batch:CreateAction=SubmitJob);"
            " job ids do not exist before SubmitJob.",
        )
        # A SpikeGLX probe is submitted by its .ap.meta (written after its .bin).
        for prefix, suffix in (
            (REQUESTS_PREFIX, ".json"),
            (UPLOADS_PREFIX, ".nwb"),
            (UPLOADS_PREFIX, ".ap.meta"),
        ):
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                s3n.LambdaDestination(self.submit),
                s3.NotificationKeyFilter(prefix=prefix, suffix=suffix),
            )
        self._tidy_notifications_handler(stack)

        self.run_record = self.function(
            "RunRecord",
            name="run_record",
            description="Record Batch job state changes under runs/; notify on failures",
            reserved_concurrency=run_record_reserved_concurrency,
            environment={
                "DATA_BUCKET": bucket.bucket_name,
                "FAILURE_TOPIC_ARN": failure_topic.topic_arn,
                "LOG_GROUP_NAME": job_log_group.log_group_name,
                "IDEMPOTENCY_TABLE": self.idempotency_table.table_name,
                "POWERTOOLS_SERVICE_NAME": "spikebatch-run-record",
                "LOG_LEVEL": log_level,
            },
        )
        allow_object_prefixes(
            self.run_record.role,
            sid="RunRecords",
            actions=["s3:GetObject", "s3:PutObject"],
            bucket=bucket,
            prefixes=[RUNS_PREFIX],
        )
        allow_list_prefixes(
            self.run_record.role, sid="ListRunRecords", bucket=bucket, prefixes=[RUNS_PREFIX]
        )
        self._results_access(self.run_record, bucket)
        self._campaign_access(self.run_record, bucket)
        self._idempotency(self.run_record)
        self._spend_ledger(self.run_record, bucket)
        self.publish_failures(self.run_record, failure_topic)
        self.run_record.add_to_role_policy(
            iam.PolicyStatement(sid="DescribeJobs", actions=["batch:DescribeJobs"], resources=["*"])
        )
        acknowledge(
            self.run_record.role,
            "AwsSolutions-IAM5[Resource::*]",
            "batch:DescribeJobs supports no resource-level permissions; AWS requires '*'.",
        )
        # EventBridge's own retries cover failures to hand the event to Lambda (throttling);
        # what it cannot deliver within a day goes to the same failed-events queue.
        job_events.add_target(
            targets.LambdaFunction(
                self.run_record,
                retry_attempts=4,
                max_event_age=Duration.hours(24),
                dead_letter_queue=failed_events,
            )
        )

    def function(
        self,
        id: str,
        *,
        name: str,
        description: str,
        environment: dict[str, str],
        reserved_concurrency: int | None = None,
        memory_mb: int = 512,
    ) -> lambda_.Function:
        """A Lambda of ``lambdas/<name>`` with its own role and log group, the Powertools
        layer, the claim protocol's timeout, and failures kept in the failed-events queue."""
        log_group = logs.LogGroup(self, f"{id}Logs", retention=self._log_retention)
        role = iam.Role(
            self,
            f"{id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"spikebatch {name} Lambda",
        )
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            id,
            description=description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=HANDLER,
            code=lambda_code(name),
            layers=[self._powertools],
            role=role,
            log_group=log_group,
            timeout=Duration.seconds(HANDLER_TIMEOUT_S),
            memory_size=memory_mb,
            environment=environment,
            reserved_concurrent_executions=reserved_concurrency,
            retry_attempts=RETRY_ATTEMPTS,
            max_event_age=MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self._failed_events),
        )
        drop_role_depends_on(function.node.default_child, role)
        acknowledge(
            function,
            "AwsSolutions-L1",
            "Python 3.12 is pinned with the Powertools layer build and the tested handlers;"
            " bump runtime and layer together.",
        )
        return function

    @staticmethod
    def _tidy_notifications_handler(stack: Stack) -> None:
        """CDK's S3 notification custom resource: a deploy-time singleton Lambda."""
        for child in stack.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                role = child.node.find_child("Role")
                drop_role_depends_on(child.node.default_child, role)
                acknowledge(
                    child,
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]",
                    "CDK's own S3 bucket-notification handler runs only during deploys and only"
                    " writes its logs with this policy.",
                )

    @staticmethod
    def _results_access(function: lambda_.Function, bucket: s3.IBucket) -> None:
        """What the worker wrote and the run-record Lambda reads (a run's publication, an
        array's children: their run.json) and the array's summary page it writes beside
        them; nothing else under results/ (``<output prefix>/<run id>/`` nests: S3's ``*``
        spans slashes)."""
        role = function.role
        assert role is not None
        patterns = {
            "ReadRunManifests": ("s3:GetObject", f"{RESULTS_PREFIX}*/{RUN_JSON}"),
            "WriteArraySummaries": ("s3:PutObject", f"{RESULTS_PREFIX}*/{RUN_PAGE}"),
        }
        for sid, (action, pattern) in patterns.items():
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid=sid, actions=[action], resources=[bucket.arn_for_objects(pattern)]
                )
            )
            acknowledge(
                role,
                object_pattern_finding(bucket, pattern),
                f"{action} on '{pattern}' only: one file name in every run folder under"
                " results/, whose depth depends on the request's output prefix.",
            )
        # A child that has not started has no run.json: 404, not 403, needs ListBucket.
        allow_list_prefixes(role, sid="ListResults", bucket=bucket, prefixes=[RESULTS_PREFIX])

    @staticmethod
    def _campaign_access(function: lambda_.Function, bucket: s3.IBucket) -> None:
        """A campaign's records read (campaign.json, cancel.json, for its page) and its
        progress shards read-modified-written as its children end; nothing else written
        under campaigns/ (campaign.json is the submission's)."""
        role = function.role
        assert role is not None
        allow_object_prefixes(
            role,
            sid="ReadCampaigns",
            actions=["s3:GetObject"],
            bucket=bucket,
            prefixes=[CAMPAIGNS_PREFIX],
        )
        pattern = f"{CAMPAIGNS_PREFIX}*/progress/*"
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteCampaignProgress",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(pattern)],
            )
        )
        acknowledge(
            role,
            object_pattern_finding(bucket, pattern),
            f"s3:PutObject on '{pattern}' only: the progress shards of each campaign, one"
            " folder per campaign id and array.",
        )
        # A shard not written yet must read as 404, not 403.
        allow_list_prefixes(role, sid="ListCampaigns", bucket=bucket, prefixes=[CAMPAIGNS_PREFIX])

    @staticmethod
    def publish_failures(function: lambda_.Function, topic: sns.ITopic) -> None:
        """Let ``function`` publish to the (KMS-encrypted) failure topic."""
        topic.grant_publish(function)
        acknowledge(
            function.role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "Publishing to the failure topic encrypts with the topic's own key; CDK's"
            " grant_publish scopes kms:GenerateDataKey* to that one key.",
        )

    @staticmethod
    def _spend_ledger(function: lambda_.Function, bucket: s3.IBucket) -> None:
        """The month's spend ledger (spikebatch.control.budget): submissions enter their
        estimates, the run record replaces them with what runs cost; read-modify-write."""
        role = function.role
        assert role is not None
        allow_object_prefixes(
            role,
            sid="SpendLedger",
            actions=["s3:GetObject", "s3:PutObject"],
            bucket=bucket,
            prefixes=[SPEND_PREFIX],
        )
        allow_list_prefixes(role, sid="ListSpendLedger", bucket=bucket, prefixes=[SPEND_PREFIX])

    def _idempotency(self, function: lambda_.Function) -> None:
        function.add_to_role_policy(
            iam.PolicyStatement(
                sid="Idempotency",
                actions=IDEMPOTENCY_ACTIONS,
                resources=[self.idempotency_table.table_arn],
            )
        )

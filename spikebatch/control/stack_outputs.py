"""Find a deployed spikebatch stack by name, so users never paste ARNs.

The CDK stack exports its resources as CloudFormation outputs (README, "Deploy"); the
CLI reads them with DescribeStacks. The output keys below are the contract with
``stacks/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spikebatch import aws
from spikebatch.control.request import ResourceLimits
from spikebatch.control.submission import Deployment

DEFAULT_STACK_NAME = "SpikeBatch"

# The OutputKeys the stack must publish (stacks/spikebatch_stack.py imports this tuple, so
# the two sides cannot drift; it also publishes optional extras such as ResourceLimits),
# and the subset the CLI cannot work without.
OUTPUT_KEYS = (
    "DataBucketName",
    "JobQueueArn",
    "PriorityQueueArn",
    "GpuJobDefinitionArn",
    "CpuJobDefinitionArn",
    "LogGroupName",
    "FailureTopicArn",
    "DashboardUrl",
    "IdempotencyTableName",
    "DandiApiKeySecretArn",
    "ImageUri",
    "FailedEventsQueueUrl",
    "SubmitFunctionName",
    "RunRecordFunctionName",
)
REQUIRED_OUTPUTS = OUTPUT_KEYS[:6]


class StackNotFoundError(RuntimeError):
    """The named stack is missing, unreadable, or lacks outputs the CLI needs."""


@dataclass(frozen=True, slots=True)
class StackOutputs:
    stack_name: str
    region: str
    outputs: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.outputs["DataBucketName"]

    @property
    def log_group_name(self) -> str:
        return self.outputs["LogGroupName"]

    @property
    def dashboard_url(self) -> str | None:
        return self.outputs.get("DashboardUrl")

    @property
    def monthly_budget_usd(self) -> float | None:
        """The stack's ``monthly_budget_usd`` (output ``MonthlyBudgetUsd``, only when set)."""
        value = self.outputs.get("MonthlyBudgetUsd")
        return float(value) if value else None

    @property
    def failure_alerts_subscribed(self) -> bool | None:
        """Whether the stack subscribed ``alarm_email`` to the failure topic (output
        ``FailureAlertsSubscribed``); None for a stack that predates the output."""
        value = self.outputs.get("FailureAlertsSubscribed")
        return None if value is None else value == "true"

    @property
    def queue_arns(self) -> tuple[str, str]:
        """The two job queues (default, priority): what the budget brake disables."""
        return self.outputs["JobQueueArn"], self.outputs["PriorityQueueArn"]

    @property
    def compute_environment_arns(self) -> tuple[str, ...]:
        """The compute environments (output ``ComputeEnvironmentArns``, comma-separated)."""
        return tuple(a for a in self.outputs.get("ComputeEnvironmentArns", "").split(",") if a)

    def deployment(self) -> Deployment:
        """The submit-side view of the stack (what the submit Lambda gets as env vars)."""
        limits_json = self.outputs.get("ResourceLimits")
        return Deployment(
            bucket=self.bucket,
            job_queue_arn=self.outputs["JobQueueArn"],
            priority_queue_arn=self.outputs["PriorityQueueArn"],
            gpu_job_definition_arn=self.outputs["GpuJobDefinitionArn"],
            cpu_job_definition_arn=self.outputs["CpuJobDefinitionArn"],
            limits=ResourceLimits.from_json(limits_json) if limits_json else None,
            monthly_budget_usd=self.monthly_budget_usd,
            **{
                key: self.outputs[output]
                for key, output in (
                    ("default_sorter", "DefaultSorter"),
                    ("dandi_api_url", "DandiApiUrl"),
                )
                if output in self.outputs
            },
        )


def load_stack_outputs(stack_name: str, *, region: str | None = None) -> StackOutputs:
    """DescribeStacks → outputs; one clear error when the stack is not there, or when
    there is no AWS configuration to look with (saying what to set)."""
    try:
        cfn: Any = aws.client("cloudformation", region=region)
        where = f"in {aws.region_of(cfn)}"
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise StackNotFoundError(
            f"stack {stack_name!r} not found {where} ({aws.error_message(exc)}); deploy it"
            " with `cdk deploy` or pass --stack-name / SPIKEBATCH_STACK"
        ) from None
    except BotoCoreError as exc:
        raise StackNotFoundError(
            aws.configuration_problem(exc) or f"cannot reach AWS: {exc}"
        ) from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
    if missing:
        raise StackNotFoundError(
            f"stack {stack_name!r} {where} lacks outputs {', '.join(missing)}; "
            "is it a spikebatch stack, and is the deployment finished?"
        )
    return StackOutputs(stack_name=stack_name, region=aws.region_of(cfn), outputs=outputs)

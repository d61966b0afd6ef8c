"""Batch job state changes: an event log, a failure topic and a dashboard.

Every ``Batch Job State Change`` event of this app's queues lands in a log group, so the
dashboard can count jobs by state and measure durations (``stoppedAt - startedAt``) with
Logs Insights, with no code running. ``self.job_events`` is the rule other constructs
add targets to (the run-record Lambda).
"""

from __future__ import annotations

from collections.abc import Sequence

import jsii
from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

_EVENTS_LOG_PREFIX = "/aws/events/"


@jsii.implements(events.IRuleTarget)
class LogGroupTarget:
    """EventBridge -> CloudWatch Logs without the custom resource (a Lambda) that
    aws_events_targets.CloudWatchLogGroup installs: the resource policy is declared here."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._log_group = log_group

    def bind(self, rule: events.IRule, id: str | None = None) -> events.RuleTargetConfig:
        arn = Stack.of(rule).format_arn(
            service="logs",
            resource="log-group",
            resource_name=self._log_group.log_group_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        return events.RuleTargetConfig(arn=arn)


class Observability(Construct):
    """``self.failure_topic``, ``self.job_events`` (rule), ``self.events_log_group``,
    ``self.dashboard``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        queues: Sequence[batch.IJobQueue],
        job_log_group: logs.ILogGroup,
        alarm_email: str | None,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.failure_topic = sns.Topic(
            self,
            "Failures",
            display_name="spikebatch: failed sorting jobs",
            enforce_ssl=True,
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
        )
        if alarm_email:
            self.failure_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        self.events_log_group = logs.LogGroup(
            self,
            "JobEvents",
            log_group_name=f"{_EVENTS_LOG_PREFIX}{stack.stack_name}/batch-job-state",
            retention=log_retention,
        )
        logs.ResourcePolicy(
            self,
            "JobEventsDelivery",
            resource_policy_name=f"{stack.stack_name}-batch-job-events",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.events_log_group.log_group_arn],
                )
            ],
        )
        self.job_events = events.Rule(
            self,
            "JobStateChange",
            description="Batch job state changes of this app's queues",
            event_pattern=events.EventPattern(
                source=["aws.batch"],
                detail_type=["Batch Job State Change"],
                detail={"jobQueue": [q.job_queue_arn for q in queues]},
            ),
        )
        self.job_events.add_target(LogGroupTarget(self.events_log_group))

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{stack.stack_name}-jobs",
            default_interval=Duration.days(7),
        )
        self.dashboard.add_widgets(*self._widgets(job_log_group))

    def _widgets(self, job_log_group: logs.ILogGroup) -> list[cloudwatch.IWidget]:
        events_log = [self.events_log_group.log_group_name]
        return [
            cloudwatch.LogQueryWidget(
                title="Jobs by state (latest state of each job)",
                log_group_names=events_log,
                view=cloudwatch.LogQueryVisualizationType.BAR,
                query_lines=[
                    "fields detail.jobId as job, detail.status as state",
                    "stats latest(state) as current by job",
                    "stats count(*) as jobs by current",
                ],
                width=12,
            ),
            cloudwatch.LogQueryWidget(
                title="Job state changes per hour",
                log_group_names=events_log,
                view=cloudwatch.LogQueryVisualizationType.STACKEDAREA,
                query_lines=[
                    "fields detail.status as state",
                    "stats count(*) by state, bin(1h)",
                ],
                width=12,
            ),
            cloudwatch.LogQueryWidget(
                title="Job durations (minutes, start to stop)",
                log_group_names=events_log,
                view=cloudwatch.LogQueryVisualizationType.TABLE,
                query_lines=[
                    'filter detail.status in ["SUCCEEDED", "FAILED"] and detail.startedAt > 0',
                    "fields (detail.stoppedAt - detail.startedAt) / 60000 as minutes",
                    "stats count(*) as jobs, avg(minutes) as mean, pct(minutes, 90) as p90,"
                    " max(minutes) as longest by detail.status, detail.jobDefinition",
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="GPU (G) instance vCPUs running in this account",
                left=[
                    cloudwatch.Metric(
                        namespace="AWS/Usage",
                        metric_name="ResourceCount",
                        dimensions_map={
                            "Service": "EC2",
                            "Type": "Resource",
                            "Resource": "vCPU",
                            "Class": cls,
                        },
                        statistic="Maximum",
                        period=Duration.minutes(5),
                        label=label,
                    )
                    for cls, label in (("G/OnDemand", "on-demand"), ("G/Spot", "spot"))
                ],
                width=12,
            ),
            cloudwatch.LogQueryWidget(
                title="Worker errors",
                log_group_names=[job_log_group.log_group_name],
                view=cloudwatch.LogQueryVisualizationType.TABLE,
                query_lines=[
                    "fields @timestamp, @logStream, @message",
                    "filter @message like /(?i)(error|traceback)/",
                    "sort @timestamp desc",
                    "limit 50",
                ],
                width=24,
            ),
        ]

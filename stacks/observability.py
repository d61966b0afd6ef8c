"""Batch job state changes, failures kept and seen: an event log, a failure topic, the
failed-events queue, alarms and a dashboard.

Every ``Batch Job State Change`` event of this app's queues lands in a log group, so the
dashboard can count jobs by state and measure durations (``stoppedAt - startedAt``) with
Logs Insights, with no code running. ``self.job_events`` is the rule other constructs
add targets to (the run-record Lambda).

Failures are kept: events the Lambdas could not handle after Lambda's retries go to
``self.failed_events`` (SQS, encrypted, 14 days), which ``spikebatch redrive`` empties.
And seen: every alarm notifies the failure topic. CloudWatch can publish to an encrypted
topic only if the key's policy lets it, which the AWS-managed ``aws/sns`` key's cannot,
so the topic has its own key (~$1/month).
"""

from __future__ import annotations

from collections.abc import Sequence

import jsii
from aws_cdk import Annotations, ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.nag import acknowledge

_EVENTS_LOG_PREFIX = "/aws/events/"
FAILED_EVENTS_RETENTION = Duration.days(14)  # SQS's maximum
STUCK_METRIC = ("spikebatch", "JobsBlockedInRunnable")
NO_SUBSCRIBER_WARNING = (
    "spikebatch.alarm_email is not set: no one is subscribed to the failure topic, so failed"
    " jobs and alarms reach no person. Set it in cdk.json (or -c spikebatch:alarm_email=you@lab.org)"
    " or subscribe to the FailureTopicArn output yourself."
)


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
    """``self.failure_topic`` (encrypted with ``self.topic_key``), ``self.failed_events``
    (queue), ``self.job_events`` (rule), ``self.events_log_group``, ``self.dashboard``;
    :meth:`alarm_on_errors` for functions, :meth:`allow_budgets` for topics."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        queues: Sequence[batch.IJobQueue],
        job_log_group: logs.ILogGroup,
        alarm_email: str | None,
        log_retention: logs.RetentionDays,
        failed_events_alarm_age: Duration = Duration.days(3),
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        alarm_arns = stack.format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name="*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        from_our_alarms = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": alarm_arns},
        }
        self.topic_key = topic_key = kms.Key(
            self,
            "FailuresKey",
            description="spikebatch failure topic (CloudWatch alarms may publish to it)",
            enable_key_rotation=True,
            pending_window=Duration.days(7),
            removal_policy=RemovalPolicy.DESTROY,
        )
        topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=from_our_alarms,
            )
        )
        self.failure_topic = sns.Topic(
            self,
            "Failures",
            display_name="spikebatch: failed sorting jobs and alarms",
            enforce_ssl=True,
            master_key=topic_key,
        )
        self.failure_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.failure_topic.topic_arn],
                conditions=from_our_alarms,
            )
        )
        self.alerts_subscribed = bool(alarm_email)
        if alarm_email:
            self.failure_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        else:
            Annotations.of(stack).add_warning_v2("spikebatch:no-alarm-email", NO_SUBSCRIBER_WARNING)
        self._notify = cloudwatch_actions.SnsAction(self.failure_topic)
        self._budgets_may_encrypt = False

        self.failed_events = sqs.Queue(
            self,
            "FailedEvents",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=FAILED_EVENTS_RETENTION,
            # A redrive holds each message while the Lambda it invokes runs (40 s at most).
            visibility_timeout=Duration.minutes(2),
        )
        acknowledge(
            self.failed_events,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter destination of both Lambdas and of the"
            " EventBridge target; `spikebatch redrive` empties it.",
        )
        self._alarm(
            "FailedEventsAlarm",
            self.failed_events.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            "Events the Lambdas could not handle are waiting in the failed-events queue:"
            " run `spikebatch redrive`",
        )
        self._alarm_on_old_failed_events(failed_events_alarm_age)

        self.events_log_group, self.job_events = self._batch_events_to_log(
            ("JobEvents", "JobEventsDelivery", "JobStateChange"),
            detail_type="Batch Job State Change",
            log_name="batch-job-state",
            policy_name="batch-job-events",
            description="Batch job state changes of this app's queues",
            queues=queues,
            log_retention=log_retention,
        )
        self._alarm_on_blocked_queues(queues, log_retention)

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{stack.stack_name}-jobs",
            default_interval=Duration.days(7),
        )
        self.dashboard.add_widgets(*self._widgets(job_log_group))

    def allow_budgets(self, topic: sns.Topic) -> None:
        """Let AWS Budgets (this account's budgets only) publish to ``topic``, which is
        encrypted with this construct's key: the topic policy and the key's."""
        stack = Stack.of(self)
        from_our_budgets = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": f"arn:{stack.partition}:budgets::{stack.account}:*"},
        }
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="BudgetsPublish",
                principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions=from_our_budgets,
            )
        )
        if self._budgets_may_encrypt:
            return
        self._budgets_may_encrypt = True
        self.topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="BudgetsPublish",
                principals=[iam.ServicePrincipal("budgets.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=from_our_budgets,
            )
        )

    def _alarm(
        self, id: str, metric: cloudwatch.IMetric, description: str, threshold: float = 0
    ) -> cloudwatch.Alarm:
        """An alarm that notifies the failure topic whenever ``metric`` is above
        ``threshold``."""
        alarm = cloudwatch.Alarm(
            self,
            id,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._notify)
        return alarm

    def _alarm_on_old_failed_events(self, age: Duration) -> None:
        """SQS deletes a failed event 14 days after it arrived. Alarm once the oldest has
        waited ``age``, and again every day while one still waits: CloudWatch notifies
        only on a state change, so an EventBridge Scheduler schedule sets the alarm to OK
        once a day (one SDK call, no code); if the queue still holds an old event the
        next hourly evaluation sets it back to ALARM and mails again."""
        days = age.to_days()
        alarm = self._alarm(
            "OldFailedEventsAlarm",
            self.failed_events.metric_approximate_age_of_oldest_message(
                period=Duration.hours(1), statistic="Maximum"
            ),
            f"A failed event has waited over {days:g} days in the failed-events queue; SQS"
            f" deletes it {FAILED_EVENTS_RETENTION.to_days():g} days after it arrived. Run"
            " `spikebatch redrive`. This repeats daily until the queue is empty.",
            threshold=age.to_seconds(),
        )
        scheduler.Schedule(
            self,
            "RepeatOldFailedEventsAlarm",
            description="Re-arm the old-failed-events alarm daily so a lasting backlog mails again",
            schedule=scheduler.ScheduleExpression.rate(Duration.days(1)),
            target=scheduler_targets.Universal(
                service="cloudwatch",
                action="setAlarmState",
                input=scheduler.ScheduleTargetInput.from_object(
                    {
                        "AlarmName": alarm.alarm_name,
                        "StateValue": "OK",
                        "StateReason": "spikebatch: daily re-arm; the next evaluation decides",
                    }
                ),
                policy_statements=[
                    iam.PolicyStatement(
                        actions=["cloudwatch:SetAlarmState"], resources=[alarm.alarm_arn]
                    )
                ],
                retry_attempts=3,
            ),
        )

    def alarm_on_errors(self, function: lambda_.IFunction, id: str, what: str) -> None:
        """Alarm on any failed invocation of ``function`` (``what`` it does, for the mail)."""
        self._alarm(
            id,
            function.metric_errors(period=Duration.minutes(5), statistic="Sum"),
            f"The {what} Lambda failed; Lambda retries it, and what still fails lands in the"
            " failed-events queue. See its log group.",
        )

    def _batch_events_to_log(
        self,
        ids: tuple[str, str, str],
        *,
        detail_type: str,
        log_name: str,
        policy_name: str,
        description: str,
        queues: Sequence[batch.IJobQueue],
        log_retention: logs.RetentionDays,
    ) -> tuple[logs.LogGroup, events.Rule]:
        """One kind of Batch event of this app's queues, kept in its own log group (which
        EventBridge may write to): ``ids`` are the log group's, its policy's and the rule's."""
        stack = Stack.of(self)
        log_id, policy_id, rule_id = ids
        log_group = logs.LogGroup(
            self,
            log_id,
            log_group_name=f"{_EVENTS_LOG_PREFIX}{stack.stack_name}/{log_name}",
            retention=log_retention,
        )
        logs.ResourcePolicy(
            self,
            policy_id,
            resource_policy_name=f"{stack.stack_name}-{policy_name}",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                )
            ],
        )
        rule = events.Rule(
            self,
            rule_id,
            description=description,
            event_pattern=events.EventPattern(
                source=["aws.batch"],
                detail_type=[detail_type],
                detail={"jobQueue": [q.job_queue_arn for q in queues]},
            ),
            targets=[LogGroupTarget(log_group)],
        )
        return log_group, rule

    def _alarm_on_blocked_queues(
        self, queues: Sequence[batch.IJobQueue], log_retention: logs.RetentionDays
    ) -> None:
        """Batch says a RUNNABLE job blocks a queue (no instance can take it: quota,
        capacity, a request larger than any instance type) long before the
        ``runnable_timeout_minutes`` cancellation: count those events and alarm."""
        blocked_log, _ = self._batch_events_to_log(
            ("QueueBlockedEvents", "QueueBlockedDelivery", "JobQueueBlocked"),
            detail_type="Batch Job Queue Blocked",
            log_name="batch-queue-blocked",
            policy_name="batch-queue-blocked",
            description="Batch jobs stuck in RUNNABLE, blocking this app's queues",
            queues=queues,
            log_retention=log_retention,
        )
        namespace, name = STUCK_METRIC
        blocked = logs.MetricFilter(
            self,
            "JobsBlocked",
            log_group=blocked_log,
            filter_pattern=logs.FilterPattern.all_events(),
            metric_namespace=namespace,
            metric_name=name,
            metric_value="1",
        )
        self._alarm(
            "JobsStuckRunnableAlarm",
            blocked.metric(period=Duration.minutes(5), statistic="Sum"),
            "A Batch job is stuck in RUNNABLE (GPU quota, capacity, or resources no instance"
            " type offers); `spikebatch status` shows the reason. It is cancelled after"
            " runnable_timeout_minutes.",
        )

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

"""The monthly budget in AWS: a Budgets budget on the stack's cost-allocation tag, its
alerts, and the brake Lambda that disables the job queues at 100 % (README, "Budgets").

Only built when ``monthly_budget_usd`` is set. Submissions are refused on spikebatch's own
month-to-date figure (:mod:`spikebatch.control.budget`, no infrastructure of its own);
this is the backstop that sees everything the tag covers, hours late:

- 80 % FORECASTED: an alert on the failure topic;
- 100 % ACTUAL: the brake topic (a notification has at most one SNS subscriber, and
  Budgets' plain-text messages carry nothing a filter policy on the shared topic could
  match), whose Lambda disables both job queues and both compute environments, records why
  in ``brake.json`` and tells the failure topic; ``alarm_email``, when set, also gets
  Budgets' own e-mail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aws_cdk import Fn, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from spikebatch.contract import BRAKE_KEY
from stacks.observability import Observability

COST_TAG_KEY = "spikebatch-stack"
"""Every resource of the stack carries ``spikebatch-stack=<stack name>`` (instances and
volumes through the launch template); the budget counts what carries it, once it is
activated as a cost-allocation tag in the Billing console."""
FORECAST_ALERT_PERCENT = 80
BRAKE_PERCENT = 100


def cost_filter(stack_name: str) -> dict[str, list[str]]:
    """Budgets' CostFilters for the user-defined tag (``user:<key>$<value>``)."""
    return {"TagKeyValue": [f"user:{COST_TAG_KEY}${stack_name}"]}


class Budget(Construct):
    """``self.budget`` (AWS::Budgets::Budget), ``self.brake_topic``, ``self.brake``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        monthly_budget_usd: float,
        observability: Observability,
        queues: Sequence[batch.IJobQueue],
        environments: Sequence[batch.IComputeEnvironment],
        bucket: s3.IBucket,
        alarm_email: str | None,
        make_function: Callable[..., lambda_.Function],
        publish_failures: Callable[[lambda_.Function, sns.ITopic], None],
        log_level: str,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        failure_topic = observability.failure_topic
        self.brake_topic = sns.Topic(
            self,
            "BrakeTopic",
            display_name="spikebatch: AWS Budgets 100 % actual -> the brake",
            enforce_ssl=True,
            master_key=observability.topic_key,
        )
        observability.allow_budgets(failure_topic)
        observability.allow_budgets(self.brake_topic)

        self.brake = make_function(
            "Brake",
            name="brake",
            description="Disable the job queues when AWS Budgets reports the month's budget spent",
            environment={
                "DATA_BUCKET": bucket.bucket_name,
                "JOB_QUEUE_ARNS": Fn.join(",", [q.job_queue_arn for q in queues]),
                "COMPUTE_ENVIRONMENT_ARNS": Fn.join(
                    ",", [e.compute_environment_arn for e in environments]
                ),
                "FAILURE_TOPIC_ARN": failure_topic.topic_arn,
                "POWERTOOLS_SERVICE_NAME": "spikebatch-brake",
                "LOG_LEVEL": log_level,
            },
        )
        self.brake.add_to_role_policy(
            iam.PolicyStatement(
                sid="DisableOurQueues",
                actions=["batch:UpdateJobQueue"],
                resources=[q.job_queue_arn for q in queues],
            )
        )
        self.brake.add_to_role_policy(
            iam.PolicyStatement(
                sid="DisableOurComputeEnvironments",
                actions=["batch:UpdateComputeEnvironment"],
                resources=[e.compute_environment_arn for e in environments],
            )
        )
        self.brake.add_to_role_policy(
            iam.PolicyStatement(
                sid="RecordTheBrake",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(BRAKE_KEY)],
            )
        )
        publish_failures(self.brake, failure_topic)
        self.brake_topic.add_subscription(subscriptions.LambdaSubscription(self.brake))
        observability.alarm_on_errors(self.brake, "BrakeErrorsAlarm", "budget brake")

        def alert(
            kind: str, percent: int, topic: sns.ITopic, emails: Sequence[str] = ()
        ) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=[
                    budgets.CfnBudget.SubscriberProperty(
                        subscription_type="SNS", address=topic.topic_arn
                    ),
                    *(
                        budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=e)
                        for e in emails
                    ),
                ],
            )

        self.budget = budgets.CfnBudget(
            self,
            "Monthly",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{stack.stack_name}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=monthly_budget_usd, unit="USD"),
                cost_filters=cost_filter(stack.stack_name),
            ),
            notifications_with_subscribers=[
                alert("FORECASTED", FORECAST_ALERT_PERCENT, failure_topic),
                alert(
                    "ACTUAL", BRAKE_PERCENT, self.brake_topic, [alarm_email] if alarm_email else []
                ),
            ],
        )
        # Budgets checks that it may publish when the budget is created.
        for topic in (failure_topic, self.brake_topic):
            policy = topic.node.try_find_child("Policy")
            if policy is not None:
                self.budget.node.add_dependency(policy)

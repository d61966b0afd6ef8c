"""``spikebatch queues enable``, and the stack lines of ``spikebatch status``: the monthly
budget's figure and the brake (README, "Budgets"), and whether anyone gets the failure
alerts. Thin over :mod:`spikebatch.control.brake` and :mod:`spikebatch.control.budget`."""

from __future__ import annotations

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

from spikebatch import aws
from spikebatch.cli.common import RegionOpt, StackOpt, deployed_stack, domain_errors, out
from spikebatch.control import brake, budget
from spikebatch.control.stack_outputs import DEFAULT_STACK_NAME, StackOutputs

queues_app = typer.Typer(no_args_is_help=True)


@queues_app.callback()
def queues() -> None:
    """The stack's job queues, which the budget brake disables at 100 % of the budget."""


@queues_app.command()
def enable(stack_name: StackOpt = DEFAULT_STACK_NAME, region: RegionOpt = None) -> None:
    """Take the budget brake off after a look: enable the job queues and compute
    environments again, and clear brake.json."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        cleared = brake.release_brake(
            stack.bucket, stack.queue_arns, stack.compute_environment_arns
        )
        why = f" (braked at {cleared.get('braked_at')}: {cleared.get('reason')})" if cleared else ""
        out.print(
            f"job queues and compute environments ENABLED{why}; queued jobs start again",
            markup=False,
        )


def print_budget(console: Console, stack: StackOutputs) -> None:
    """The brake when it holds (or a queue is disabled), and the month's spend against the
    budget when one is set; nothing otherwise."""
    state = brake.brake_state(stack.bucket, stack.queue_arns, stack.compute_environment_arns)
    if state.record is not None:
        console.print(
            f"Job queues BRAKED since {state.record.get('braked_at')}:"
            f" {state.record.get('reason')}. Running jobs finish, queued jobs wait;"
            " after a look: spikebatch queues enable",
            markup=False,
        )
    elif state.disabled:
        names = ", ".join(arn.rpartition("/")[2] for arn in state.disabled)
        console.print(f"DISABLED, not by the brake: {names}", markup=False)
    if stack.monthly_budget_usd is not None:
        spent = budget.month_to_date(stack.bucket)
        console.print(
            f"Budget {spent.month}: ${spent.total_usd:.2f} of ${stack.monthly_budget_usd:.2f}"
            f" (finished runs ${spent.actual_usd:.2f} + estimates of unfinished runs"
            f" ${spent.estimated_usd:.2f})",
            markup=False,
        )


def print_unsubscribed(console: Console, stack: StackOutputs) -> None:
    """One line when failures and alarms go to a topic nobody reads: the stack was
    deployed without ``alarm_email`` and the topic has no confirmed subscription either."""
    topic = stack.outputs.get("FailureTopicArn")
    if stack.failure_alerts_subscribed is not False or (topic and _confirmed_subscribers(topic)):
        return
    console.print(
        "No one is subscribed to failure alerts: set spikebatch.alarm_email in cdk.json and"
        f" deploy again, or subscribe to {topic or 'the failure topic'}.",
        markup=False,
    )


def _confirmed_subscribers(topic_arn: str) -> int:
    """Confirmed subscriptions added by hand (0 when they cannot be listed: say it)."""
    try:
        found = aws.client("sns").list_subscriptions_by_topic(TopicArn=topic_arn)
    except (BotoCoreError, ClientError):
        return 0
    return sum(1 for s in found.get("Subscriptions", []) if s["SubscriptionArn"].startswith("arn:"))

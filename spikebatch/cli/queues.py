"""``spikebatch queues enable``, and the budget lines of ``spikebatch status``: the monthly
budget's figure and the brake (README, "Budgets"). Thin over :mod:`spikebatch.control.brake`
and :mod:`spikebatch.control.budget`."""

from __future__ import annotations

import typer
from rich.console import Console

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
    """One line when failures and alarms go to a topic nobody reads."""
    if stack.failure_alerts_subscribed is False:
        console.print(
            "No one is subscribed to failure alerts: set spikebatch.alarm_email in cdk.json and"
            f" deploy again, or subscribe to {stack.outputs.get('FailureTopicArn', 'the topic')}.",
            markup=False,
        )

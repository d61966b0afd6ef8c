"""``spikebatch redrive``: list the events the Lambdas gave up on, and resubmit them."""

from __future__ import annotations

from typing import Annotated

import typer

from spikebatch.cli.common import (
    RegionOpt,
    StackOpt,
    deployed_stack,
    domain_errors,
    err,
    out,
)
from spikebatch.control import failed_events
from spikebatch.control.failed_events import FailedEvent, Redriven
from spikebatch.control.stack_outputs import DEFAULT_STACK_NAME, StackNotFoundError


def _line(item: FailedEvent | Redriven) -> None:
    if isinstance(item, FailedEvent):
        when = f" at {item.failed_at}" if item.failed_at else ""
        out.print(f"{item.what}  [{item.function}{when}]  {item.why}", markup=False)
        return
    mark = "resubmitted" if item.ok else "NOT resubmitted"
    out.print(f"{mark}: {item.event.what}  ->  {item.answer}", markup=False)


def redrive(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the failed events; resubmit nothing.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Resubmit at most this many events.")
    ] = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """List the events the Lambdas gave up on and resubmit them (the failed-events queue).

    Each event goes to the same function, through the same idempotent path, and is deleted
    from the queue only once the function has handled it.
    """
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        names = ("FailedEventsQueueUrl", "SubmitFunctionName", "RunRecordFunctionName")
        missing = [n for n in names if n not in stack.outputs]
        if missing:
            raise StackNotFoundError(
                f"stack {stack_name!r} has no {', '.join(missing)} output; deploy this version"
            )
        queue, *functions = (stack.outputs[n] for n in names)
        done = failed_events.redrive(
            queue, set(functions), dry_run=dry_run, limit=limit, on_each=_line
        )
        if not done:
            out.print("No failed events.", markup=False)
            return
        if dry_run:
            out.print(f"{len(done)} failed event(s); resubmit with `spikebatch redrive`.")
            return
        failed = [d for d in done if isinstance(d, Redriven) and not d.ok]
        out.print(f"{len(done) - len(failed)} of {len(done)} resubmitted.", markup=False)
        if failed:
            err.print(f"error: {len(failed)} event(s) failed again; they stay queued", markup=False)
            raise typer.Exit(1)

"""The campaign commands: ``campaign status`` (once, ``--watch``, ``--page``) and
``campaign cancel``. Thin: the logic is in :mod:`spikebatch.control.campaign_progress`
and :mod:`spikebatch.control.campaign_page`."""

from __future__ import annotations

from typing import Annotated

import typer

from spikebatch.cli import render
from spikebatch.cli.common import RegionOpt, StackOpt, deployed_stack, domain_errors, err, out
from spikebatch.control import campaign_page, campaign_progress
from spikebatch.control.stack_outputs import DEFAULT_STACK_NAME

campaign_app = typer.Typer(
    help="Follow or cancel a campaign (a submission split into several array jobs).",
    no_args_is_help=True,
)

CampaignIdArg = Annotated[
    str, typer.Argument(help="Campaign id, as printed when the campaign was submitted.")
]


@campaign_app.command("status")
def status(
    campaign_id: CampaignIdArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Redraw a progress display every --interval s until every run has ended "
            "(Ctrl-C stops watching; the campaign goes on).",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=1.0, help="Seconds between refreshes with --watch.")
    ] = 30.0,
    write_page: Annotated[
        bool,
        typer.Option(
            "--page",
            help="Also write the campaign's pages beside its results and print where "
            "(<output_uri>/campaigns/<id>/report/index.html).",
        ),
    ] = False,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Runs by state across the campaign's arrays (Batch's counts), $ spent and still
    estimated, runs finished in the last hour, and the ETA at that rate."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)

        def poll() -> campaign_progress.CampaignProgress:
            return campaign_progress.follow(stack.bucket, campaign_id)

        if watch:
            progress, ended = render.campaign_watch(out, poll, interval=interval)
            if not ended:
                err.print(
                    f"stopped watching; the campaign goes on (stop it with: spikebatch "
                    f"campaign cancel {campaign_id})",
                    markup=False,
                )
        else:
            progress = poll()
            render.campaign_status(out, progress)
        if write_page:
            uri = campaign_page.write_campaign_pages(stack.bucket, campaign_id, progress=progress)
            out.print(f"page: {uri}", markup=False)


@campaign_app.command("cancel")
def cancel(
    campaign_id: CampaignIdArg,
    reason: Annotated[
        str | None, typer.Option(help="Why; recorded in every job's status reason.")
    ] = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Cancel every array job of the campaign: waiting children are cancelled, running
    ones terminated (as `spikebatch cancel` does for one array)."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        outcome = campaign_progress.cancel_campaign(stack.bucket, campaign_id, reason)
        for run_id, job_id in outcome.cancelled:
            out.print(f"cancelled array {run_id} (job {job_id})", markup=False)
        if outcome.not_submitted:
            out.print(
                f"not submitted, so nothing to cancel: {', '.join(outcome.not_submitted)}",
                markup=False,
            )
        out.print(f"reason: {outcome.reason}", markup=False)

"""How the CLI shows things (rich): tables, the dry-run request, progress displays.

Output is plain enough to paste into an issue and stable enough to snapshot: no colours
when not on a terminal, no timestamps in tables.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from spikebatch import aws
from spikebatch.control.campaign import DONE, FAILED, IN_FLIGHT, OVER_CAP, TO_RUN, CampaignPlan
from spikebatch.control.campaign_progress import (
    NOT_SUBMITTED,
    STATES,
    UNKNOWN,
    CampaignProgress,
)
from spikebatch.control.job_status import TERMINAL
from spikebatch.control.records import RunRecord, live_statuses
from spikebatch.control.submission import SubmissionPlan, SubmittedJob
from spikebatch.estimates import RunEstimate
from spikebatch.scratch import size_text


def _json(console: Console, data: Any) -> None:
    console.print(json.dumps(data, indent=2, sort_keys=False), markup=False, soft_wrap=True)


def _short_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


#: Arrays up to this size are shown child by child (manifest, estimate rows); larger ones
#: by their first children and totals.
DETAIL_MAX = 50


def campaign_plan(console: Console, plan: CampaignPlan) -> None:
    """The plan before anything is sent: the counts, the arrays, the estimate and the cap."""
    counts = plan.counts
    console.print(
        f"Campaign {plan.campaign_id}: {sum(counts.values()):,} inputs: "
        f"{counts[TO_RUN]:,} to run, {counts[DONE]:,} done, {counts[IN_FLIGHT]:,} in flight, "
        f"{counts[FAILED]:,} failed, {counts[OVER_CAP]:,} over the attempt cap",
        markup=False,
    )
    if not plan.arrays:
        console.print("Nothing to submit.", markup=False)
        return
    sizes = ", ".join(f"{len(a.runs):,}" for a in plan.arrays)
    cap = plan.request.max_cost_usd
    console.print(
        f"Estimate: ${plan.estimate_usd:,.2f} for {plan.to_run:,} runs in "
        f"{len(plan.arrays)} job(s) of {sizes}"
        + (f" ({plan.unpriced:,} without a price)" if plan.unpriced else "")
        + (f"; cap ${cap:,.2f}" if cap is not None else ""),
        markup=False,
    )


def dry_run(console: Console, plan: SubmissionPlan, estimates: list[RunEstimate] | None) -> None:
    console.print("Dry run: nothing was submitted.", markup=False)
    _runs(console, plan)
    if plan.is_array:
        env = {e["name"]: e["value"] for e in plan.submit_job["containerOverrides"]["environment"]}
        console.print(f"\nArray manifest, written to {env['ARRAY_MANIFEST_URI']}:", markup=False)
        if len(plan.runs) <= DETAIL_MAX:
            _json(console, plan.manifest)
        else:
            console.print(f"  ({len(plan.runs):,} entries)", markup=False)
    console.print("\nBatch SubmitJob request:", markup=False)
    _json(console, plan.submit_job)
    console.print()
    if estimates is not None:
        estimates_table(console, estimates)


def _runs(console: Console, plan: SubmissionPlan) -> None:
    kind = f"array job of {len(plan.runs)}" if plan.is_array else "job"
    console.print(f"Run {plan.run_id} ({kind}), results under {plan.output_uri}/", markup=False)
    for run in plan.runs[:DETAIL_MAX]:
        index = "" if run.array_index is None else f"[{run.array_index}] "
        console.print(f"  {index}{run.run_id}  ←  {run.source}", markup=False)
    if len(plan.runs) > DETAIL_MAX:
        console.print(f"  ... and {len(plan.runs) - DETAIL_MAX:,} more", markup=False)


def submitted(console: Console, plan: SubmissionPlan, job: SubmittedJob, bucket: str) -> None:
    console.print(f"Submitted Batch job {job.job_id} to {_short_arn(job.job_queue)}.", markup=False)
    _runs(console, plan)
    console.print(
        f"Follow it:  spikebatch wait {plan.run_id}   "
        f"(or: status / logs {plan.run_id}; records in s3://{bucket}/runs/)",
        markup=False,
    )


def estimates_table(console: Console, rows: list[RunEstimate]) -> None:
    table = Table(title="Estimate", title_justify="left")
    for column in ("recording", "minutes", "instance", "job hours", "USD"):
        table.add_column(column, justify="left" if column == "recording" else "right")
    total_usd = total_h = 0.0
    for row in rows:
        if row.estimate is None:
            minutes = "?" if row.duration_s is None else f"{row.duration_s / 60:.1f}"
            why = "no type holds it" if row.scratch is not None else "pass --duration-s"
            table.add_row(row.name, minutes, "-", "-", why)
            continue
        hours = row.estimate.total_seconds / 3600
        total_usd += row.estimate.usd
        total_h += hours
        market = "spot" if row.estimate.spot else "on-demand"
        table.add_row(
            row.name,
            f"{(row.duration_s or 0) / 60:.1f}",
            f"{row.estimate.instance_type} ({market})",
            f"{hours:.2f}",
            f"{row.estimate.usd:.2f}",
        )
    if len(rows) > 1:
        table.add_row("total", "", "", f"{total_h:.2f}", f"{total_usd:.2f}", style="bold")
    console.print(table)
    scratch_table(console, rows)


def scratch_table(console: Console, rows: list[RunEstimate]) -> None:
    """Which instance types can hold each recording on their /scratch (NVMe)."""
    planned = [row for row in rows if row.scratch is not None]
    if not planned:
        return
    table = Table(title="Scratch (instance NVMe at /scratch)", title_justify="left")
    table.add_column("recording")
    table.add_column("peak", justify="right")
    table.add_column("stage")
    table.add_column("instance types that hold it")
    for row in planned:
        assert row.scratch is not None
        holding = ", ".join(row.holding) or (
            "none: sort less (max_duration_s) or one probe at a time (electrical_series_path)"
        )
        table.add_row(row.name, size_text(row.scratch.peak_bytes), row.scratch.peak_stage, holding)
    console.print(table)


def estimates(console: Console, rows: list[RunEstimate]) -> None:
    estimates_table(console, rows)
    console.print(
        "Model: stage times from spikebatch.cost (startup, image pull, fetch, convert, sort, "
        "post-process, publish) times the instance's hourly price.",
        markup=False,
    )


def _state(record: RunRecord, live: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The recorded outcome once there is one (it carries Batch's reasons); else Batch's
    current view; else the last recorded state change."""
    if record.status and record.status.get("status") in TERMINAL:
        return record.status
    return live.get(record.job_id) or record.status or {"status": record.state}


def _publication(state: dict[str, Any]) -> str:
    """A run's publication to DANDI, as the run-record Lambda copied it from run.json."""
    publication = state.get("publish") or {}
    status = publication.get("status")
    if not status:
        return ""
    if status == "failed":
        return f"publish failed: {publication.get('reason') or 'no reason given'}"
    return f"{status} on dandiset {publication.get('dandiset_id')}: {publication.get('path')}"


def _reason(state: dict[str, Any], *, short: bool = False) -> str:
    """``<failure kind>: <Batch's reasons>``; ``short`` keeps only the most specific one.
    A run that succeeded but whose publication to DANDI failed says so."""
    if state.get("status") == "SUCCEEDED" and (state.get("publish") or {}).get("status") == (
        "failed"
    ):
        return _publication(state)
    if state.get("status") != "FAILED":
        return ""
    reason = str(state.get("status_reason") or "")
    if short:
        reason = reason.split(" | ")[0]
    kind = state.get("failure_kind")
    return f"{kind}: {reason}" if kind else reason


def run_table(console: Console, records: list[RunRecord], live: dict[str, dict[str, Any]]) -> None:
    if not records:
        console.print("No runs yet. Start one with `spikebatch submit`.", markup=False)
        return
    table = Table(
        title="Runs",
        title_justify="left",
        caption="details: spikebatch status RUN_ID",
        caption_justify="left",
    )
    table.add_column("run id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason")
    states = {record.run_id: _state(record, live) for record in records}
    for record in records:
        state = states[record.run_id]
        reason = _reason(state, short=True)
        if record.children:  # an array job: how its children stand
            counts = Counter(
                str(states.get(c["run_id"], {}).get("status", "?")) for c in record.children
            )
            reason = "array: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        table.add_row(record.run_id, str(state.get("status")), reason)
    console.print(table)


def run_detail(
    console: Console,
    record: RunRecord,
    children: list[RunRecord],
    live: dict[str, dict[str, Any]],
) -> None:
    state = _state(record, live)
    recorded = record.status or {}
    lines = [
        ("run", record.run_id),
        ("status", str(state.get("status"))),
        ("reason", _reason(state) if state.get("status") == "FAILED" else ""),
        ("what to do", str(state.get("hint") or "") if state.get("status") == "FAILED" else ""),
        ("DANDI", _publication(state) if state.get("status") == "SUCCEEDED" else ""),
        ("source", str(record.submitted.get("source") or "")),
        ("job", f"{record.job_id} on {_short_arn(str(record.submitted.get('job_queue')))}"),
        ("results", str(record.submitted.get("results_uri") or "")),
        ("logs", str(recorded.get("log_url") or "")),
    ]
    for label, value in lines:
        if value:
            console.print(f"{label:>11}: {value}", markup=False)
    if children:
        run_table(console, children, live)


def wait_progress(
    console: Console, record: RunRecord, *, interval: float, timeout: float | None
) -> dict[str, Any] | None:
    """Poll Batch until the run ends; the final summary, or None on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if record.children:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(record.run_id, total=len(record.children) or None)
        while True:
            live = live_statuses([record.job_id]).get(record.job_id)
            state = live or record.status or {"status": record.state}
            summary = (live or {}).get("array") or {}
            finished = summary.get("SUCCEEDED", 0) + summary.get("FAILED", 0)
            progress.update(
                task,
                description=f"{record.run_id} {state.get('status')}",
                completed=finished if record.children else None,
            )
            if state.get("status") in TERMINAL:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(interval)


def object_table(console: Console, run_id: str, uri: str, objects: list[dict[str, Any]]) -> None:
    if not objects:
        console.print(f"{run_id}: nothing under {uri} yet", markup=False)
        return
    table = Table(title=f"{run_id}: {uri}", title_justify="left")
    table.add_column("object")
    table.add_column("bytes", justify="right")
    prefix = uri.removeprefix("s3://").partition("/")[2]
    for obj in objects:
        table.add_row(obj["Key"].removeprefix(prefix), f"{obj['Size']:,}")
    console.print(table)


def download(console: Console, uri: str, objects: list[dict[str, Any]], dest: Path) -> None:
    """Download with boto3's transfer manager (multipart, parallel), one progress bar."""
    s3 = aws.client("s3")
    prefix = uri.removeprefix("s3://").partition("/")[2]
    total = sum(int(o["Size"]) for o in objects)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"{dest}", total=total)
        for obj in objects:
            target = dest / obj["Key"].removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(
                obj["Bucket"],
                obj["Key"],
                str(target),
                Callback=lambda n: progress.advance(task, n),
            )
    console.print(f"downloaded {len(objects)} objects ({total:,} bytes) to {dest}", markup=False)


# -- campaigns ---------------------------------------------------------------------------


def _usd(value: float | None) -> str:
    return "?" if value is None else f"${value:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown: nothing finished in the last hour"
    if seconds <= 0:
        return "done"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


def campaign_table(progress: CampaignProgress) -> Table:
    """Counts by state, money and pace, as two columns of label and value."""
    title = f"Campaign {progress.campaign_id}"
    if progress.cancelled:
        title += f" (cancelled {progress.cancelled.get('cancelled_at')})"
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("runs", f"{progress.total:,}", f"in {len(progress.arrays)} array jobs")
    counts = progress.counts
    for state in (*STATES, NOT_SUBMITTED, UNKNOWN):
        if counts.get(state):
            table.add_row(f"  {state}", f"{counts[state]:,}", "")
    budget = progress.max_cost_usd
    unknown = progress.without_cost
    table.add_row(
        "spent",
        _usd(progress.spent_usd),
        "actual cost of finished runs"
        + (f"; {unknown:,} finished without a known cost" if unknown else ""),
    )
    estimated = progress.estimate_usd
    table.add_row(
        "still estimated",
        _usd(progress.still_estimated_usd),
        (f"of {_usd(estimated)} estimated in all" if estimated is not None else "no estimate")
        + (f"; budget {_usd(budget)}" if budget is not None else ""),
    )
    window = f"{progress.window_s / 60:.0f} min"
    table.add_row(
        "finished lately",
        f"{progress.finished_in_window:,}",
        f"in the last {window}: {progress.per_hour:,.1f} runs/h",
    )
    table.add_row("ETA", _duration(progress.eta_s), f"{progress.remaining:,} runs to go")
    return table


def campaign_status(console: Console, progress: CampaignProgress) -> None:
    console.print(campaign_table(progress))


def _bars(progress: CampaignProgress) -> Progress:
    """One bar for the campaign and, for up to ten arrays, one per array."""
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        console=None,
        auto_refresh=False,
    )
    bars.add_task("campaign", total=progress.total, completed=progress.finished)
    if 1 < len(progress.arrays) <= 10:
        for array in progress.arrays:
            bars.add_task(f"  {array.run_id[:40]}", total=array.size, completed=array.finished)
    return bars


def campaign_watch(
    console: Console, poll: Callable[[], CampaignProgress], *, interval: float
) -> tuple[CampaignProgress, bool]:
    """Redraw the bars and the table every ``interval`` s until every run has ended;
    returns the last state and whether it ended (False: the user pressed Ctrl-C)."""
    current = poll()
    with Live(console=console, auto_refresh=False) as live:
        try:
            while True:
                live.update(Group(_bars(current), campaign_table(current)), refresh=True)
                if current.done:
                    return current, True
                time.sleep(interval)
                current = poll()
        except KeyboardInterrupt:
            return current, False

"""The job commands: ``submit``, ``estimate``, ``status``, ``logs``, ``wait``, ``results``,
``cancel`` and ``run-local``. Thin: each gathers options and calls core functions."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.cli import render
from spikebatch.cli.common import (
    AssetOpt,
    ChannelsOpt,
    DandiKeyOpt,
    DandisetOpt,
    DandiUrlOpt,
    DataTypeOpt,
    DurationOpt,
    GlobOpt,
    InputUriOpt,
    MaxAttemptsOpt,
    MaxConcurrentOpt,
    MaxCostOpt,
    ParamOpt,
    RegionOpt,
    RequestOpt,
    RerunOpt,
    RetryFailedOpt,
    RunIdArg,
    SorterOpt,
    SpotOpt,
    StackOpt,
    StreamOpt,
    VersionOpt,
    build_request,
    deployed_stack,
    domain_errors,
    err,
    out,
    recording_sizes,
)
from spikebatch.cli.queues import print_budget, print_unsubscribed
from spikebatch.contract import DEFAULT_DANDI_API_URL
from spikebatch.control import campaign, records
from spikebatch.control.cancel import cancel_job, cancel_reason
from spikebatch.control.dandi_assets import resolve_request_assets
from spikebatch.control.job_status import TERMINAL
from spikebatch.control.stack_outputs import (
    DEFAULT_STACK_NAME,
)
from spikebatch.estimates import RecordingSize, estimate_runs


def submit(
    request_file: RequestOpt = None,
    dandiset: DandisetOpt = None,
    version: VersionOpt = None,
    asset: AssetOpt = None,
    glob: GlobOpt = None,
    input_uri: InputUriOpt = None,
    data_type: DataTypeOpt = None,
    stream: StreamOpt = None,
    sorter: SorterOpt = None,
    param: ParamOpt = None,
    spot: SpotOpt = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs per job (GPU sorters: ≥ 1).")] = None,
    vcpus: Annotated[int | None, typer.Option(help="vCPUs per job.")] = None,
    memory_gib: Annotated[float | None, typer.Option(help="Memory per job, GiB.")] = None,
    timeout_hours: Annotated[float | None, typer.Option(help="Per-attempt time limit.")] = None,
    max_duration_s: Annotated[
        float | None, typer.Option(help="Sort only the first N seconds (smoke runs).")
    ] = None,
    output_prefix: Annotated[
        str | None, typer.Option(help="Results go to s3://<bucket>/results/<prefix>/<run-id>/.")
    ] = None,
    max_cost: MaxCostOpt = None,
    max_concurrent_jobs: MaxConcurrentOpt = None,
    retry_failed: RetryFailedOpt = False,
    rerun: RerunOpt = False,
    max_attempts: MaxAttemptsOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (what is done, in flight, to run), the exact Batch requests "
            "(ARNs from the stack) and the estimate; submit nothing.",
        ),
    ] = False,
    duration_s: DurationOpt = None,
    channels: ChannelsOpt = 384,
    dandi_api_url: DandiUrlOpt = None,
    dandi_api_key: DandiKeyOpt = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Submit a request as a campaign: what is done or in flight is skipped, the rest goes
    out in Batch array jobs of at most 10,000 (docs/submit.md, 'Campaigns')."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        deployment = stack.deployment()
        request = build_request(
            request_file,
            dandiset=dandiset,
            version=version,
            assets=asset,
            glob=glob,
            input_uri=input_uri,
            data_type=data_type,
            stream=stream,
            sorter=sorter,
            params=param,
            spot=spot,
            resources={
                "gpus": gpus,
                "vcpus": vcpus,
                "memory_gib": memory_gib,
                "timeout_hours": timeout_hours,
            },
            extra={
                "max_duration_s": max_duration_s,
                "output_prefix": output_prefix,
                "max_cost_usd": max_cost,
                "max_concurrent_jobs": max_concurrent_jobs,
                "retry_failed": retry_failed or None,
                "rerun": rerun or None,
                "max_attempts_per_input": max_attempts,
            },
            default_sorter=deployment.default_sorter,
        )
        if dandi_api_url:  # the flag also tells the job where to fetch from
            deployment = dataclasses.replace(deployment, dandi_api_url=dandi_api_url)
        inputs = campaign.resolve_inputs(
            request, api_url=deployment.dandi_api_url, token=dandi_api_key
        )
        plan, _ = campaign.submit_request(
            request,
            deployment,
            inputs,
            submitted_by="cli",
            table=stack.outputs.get("IdempotencyTableName"),
            channels=channels,
            duration_s=duration_s,
            dry_run=dry_run,
            on_plan=lambda plan: render.campaign_plan(out, plan),
            on_array=lambda array, job: render.submitted(out, array, job, stack.bucket),
        )
        if dry_run:
            named = {i.run.run_id: i for i in inputs}
            for array in plan.arrays:
                rows = None
                if len(array.runs) <= render.DETAIL_MAX:  # per recording, as `estimate`
                    sizes = [
                        RecordingSize(named[r.run_id].name, named[r.run_id].size, duration_s)
                        for r in array.runs
                    ]
                    rows = estimate_runs(request, sizes, channels)
                render.dry_run(out, array, rows)


def estimate(
    request_file: RequestOpt = None,
    dandiset: DandisetOpt = None,
    version: VersionOpt = None,
    asset: AssetOpt = None,
    glob: GlobOpt = None,
    input_uri: InputUriOpt = None,
    data_type: DataTypeOpt = None,
    stream: StreamOpt = None,
    sorter: SorterOpt = None,
    spot: SpotOpt = None,
    duration_s: DurationOpt = None,
    channels: ChannelsOpt = 384,
    dandi_api_url: DandiUrlOpt = None,
    dandi_api_key: DandiKeyOpt = None,
) -> None:
    """Cost and time of a request: recording size (DANDI), throughput model, instance price."""
    with domain_errors():
        request = build_request(
            request_file,
            dandiset=dandiset,
            version=version,
            assets=asset,
            glob=glob,
            input_uri=input_uri,
            data_type=data_type,
            stream=stream,
            sorter=sorter,
            params=None,
            spot=spot,
        )
        api_url = dandi_api_url or DEFAULT_DANDI_API_URL
        assets = resolve_request_assets(request, api_url=api_url, token=dandi_api_key)
        render.estimates(
            out, estimate_runs(request, recording_sizes(request, assets, duration_s), channels)
        )


def status(
    run_id: Annotated[str | None, typer.Argument(help="One run in detail; omit for all.")] = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Runs and their real state: the run records plus what AWS Batch says now."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        print_budget(out, stack)
        print_unsubscribed(out, stack)
        if run_id is None:
            found = records.load_runs(stack.bucket, records.list_run_ids(stack.bucket))
            listed = {r.run_id for r in found}
            for array in [r for r in found if r.children]:  # campaign children have no
                found += [  # record of their own until their first Batch event
                    c for c in records.load_children(stack.bucket, array) if c.run_id not in listed
                ]
            found.sort(key=lambda r: r.run_id)
            live = records.live_statuses([r.job_id for r in found if r.state not in TERMINAL])
            render.run_table(out, found, live)
            return
        record = records.load_run(stack.bucket, run_id)
        children = records.load_children(stack.bucket, record)
        live = records.live_statuses([r.job_id for r in [record, *children]])
        render.run_detail(out, record, children, live)


def _submitted_run(bucket: str, run_id: str) -> records.RunRecord:
    record = records.load_run(bucket, run_id)
    if record.job_id is None:
        raise ValueError(f"{run_id} has no Batch job: its submission did not go through")
    return record


def _log_targets(bucket: str, run_id: str) -> list[records.RunRecord]:
    record = records.load_run(bucket, run_id)
    if record.children:
        return records.load_children(bucket, record)
    return [record]


def logs(
    run_id: RunIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --follow.")] = 5.0,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """The job's CloudWatch log (each array child in turn)."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        targets = _log_targets(stack.bucket, run_id)
        tokens: dict[str, str | None] = {}
        while True:
            live = records.live_statuses([t.job_id for t in targets])
            for target in targets:
                summary = live.get(target.job_id) or target.status or {}
                stream = summary.get("log_stream") or (target.status or {}).get("log_stream")
                prefix = f"[{target.run_id}] " if len(targets) > 1 else ""
                if not stream:
                    if not follow:
                        err.print(f"{prefix}no log stream yet ({target.state})", markup=False)
                    continue
                tokens[target.run_id] = _print_log(
                    stack.log_group_name, stream, tokens.get(target.run_id), prefix
                )
            done = all(
                t.job_id is None or (live.get(t.job_id) or {}).get("status", t.state) in TERMINAL
                for t in targets
            )
            if not follow or done:
                return
            time.sleep(interval)


def _print_log(group: str, stream: str, token: str | None, prefix: str) -> str | None:
    logs_client = aws.client("logs")
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream}
        kwargs |= {"nextToken": token} if token else {"startFromHead": True}
        try:
            page = logs_client.get_log_events(**kwargs)
        except ClientError as exc:
            if aws.error_code(exc) == "ResourceNotFoundException":
                return token  # the stream appears once the container writes
            raise
        for event in page.get("events", []):
            out.print(f"{prefix}{event['message']}", markup=False)
        if page.get("nextForwardToken") in (None, token):
            return token
        token = page["nextForwardToken"]


def wait(
    run_id: RunIdArg,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 15.0,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 2).")
    ] = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Wait for a run to finish, with a progress display; exit 0 only if it SUCCEEDED."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        record = _submitted_run(stack.bucket, run_id)
        final = render.wait_progress(out, record, interval=interval, timeout=timeout)
        if final is None:
            err.print(f"error: {run_id} still running after {timeout:g} s", markup=False)
            raise typer.Exit(2)
        if final["status"] != "SUCCEEDED":
            reason = final.get("status_reason") or "no reason given"
            err.print(f"error: {run_id} {final['status']}: {reason}", markup=False)
            raise typer.Exit(1)
        out.print(f"{run_id} SUCCEEDED; results: spikebatch results {run_id}", markup=False)


def results(
    run_id: RunIdArg,
    download: Annotated[
        Path | None,
        typer.Option(
            "--download", file_okay=False, help="Download into DIR/<run-id>/ (else list)."
        ),
    ] = None,
    open_page: Annotated[
        bool,
        typer.Option(
            "--open",
            help="Open the run's page (an array: its summary) in a browser, downloaded into "
            "--download DIR (else a temp folder), or presigned with --presign.",
        ),
    ] = False,
    presign: Annotated[
        bool,
        typer.Option("--presign", help="With --open: a presigned HTTPS URL, no download."),
    ] = False,
    expires_hours: Annotated[
        float, typer.Option(help="With --presign: how long the URL works (at most 168).")
    ] = 12.0,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """List a run's outputs (run.json, sorting/, units.nwb, phy/, ...), download or open them."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        listed = download is not None or not open_page  # --open alone fetches the page only
        for target in _log_targets(stack.bucket, run_id) if listed else []:
            uri = str(target.submitted["results_uri"])
            objects = _list_objects(uri)
            if download is None:
                render.object_table(out, target.run_id, uri, objects)
            else:
                render.download(out, uri, objects, download / target.run_id)
        if open_page:
            from spikebatch.cli.open_results import open_results

            page = open_results(
                stack.bucket,
                run_id,
                dest=download,
                presign=presign,
                expires_s=round(expires_hours * 3600),
            )
            note = f" ({page.note})" if page.note else ""
            opened = "opened" if page.opened else "no browser here; open it yourself"
            out.print(f"page: {page.location}{note}\n{opened}", markup=False)


def _list_objects(uri: str) -> list[dict[str, Any]]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    found = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        found += [{"Bucket": bucket, **o} for o in page.get("Contents", [])]
    return found


def cancel(
    run_id: RunIdArg,
    reason: Annotated[
        str | None, typer.Option(help="Why; recorded in the job's status reason.")
    ] = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Cancel (or terminate, if running) a run's Batch job; for an array, every child."""
    with domain_errors():
        stack = deployed_stack(stack_name, region)
        record = _submitted_run(stack.bucket, run_id)
        status_reason = cancel_reason(reason)
        cancel_job(str(record.job_id), status_reason)
        out.print(f"cancelled {run_id} (job {record.job_id}): {status_reason}", markup=False)


def run_local(
    request_file: RequestOpt = None,
    input_uri: InputUriOpt = None,
    data_type: DataTypeOpt = None,
    stream: StreamOpt = None,
    dandiset: DandisetOpt = None,
    asset: AssetOpt = None,
    sorter: SorterOpt = None,
    param: ParamOpt = None,
    output: Annotated[
        Path, typer.Option("--output", file_okay=False, help="Results directory.")
    ] = Path("results"),
    output_uri: Annotated[
        str | None,
        typer.Option(
            "--output-uri",
            help="Write to s3://bucket/prefix (or file:///path) instead of --output.",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", help="RUN_ID: results go to OUTPUT/RUN_ID/ (default: derived, as on Batch)."
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Run this worker image (e.g. spikebatch-worker:kilosort4) on the local Docker "
            "engine, as Batch would, instead of in this process.",
        ),
    ] = None,
    scratch: Annotated[
        Path,
        typer.Option(
            "--scratch", file_okay=False, help="With --image: host folder mounted at /scratch."
        ),
    ] = Path(".scratch"),
    gpus: Annotated[
        bool | None,
        typer.Option(
            "--gpus/--no-gpus",
            help="With --image: ask for the GPU (default: if this host has one).",
        ),
    ] = None,
) -> None:
    """Run the worker on one recording, here: in-process, or in its container with --image."""
    with domain_errors():
        from spikebatch.cli.local import output_uri as resolve_output
        from spikebatch.cli.local import run_in_container, run_locally

        request = build_request(
            request_file,
            dandiset=dandiset,
            version=None,
            assets=asset,
            glob=None,
            input_uri=input_uri,
            data_type=data_type,
            stream=stream,
            sorter=sorter,
            params=param,
            spot=None,
        )
        destination = resolve_output(output, output_uri)
        if image is None:
            raise typer.Exit(run_locally(request, destination, run_id=run_id))
        raise typer.Exit(
            run_in_container(
                request, destination, image=image, scratch=scratch, gpus=gpus, run_id=run_id
            )
        )

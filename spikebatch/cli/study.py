"""``spikebatch study run|status|results SPEC``: thin commands over :mod:`spikebatch.study`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spikebatch.cli.common import (
    DandiUrlOpt,
    RegionOpt,
    StackOpt,
    deployed_stack,
    domain_errors,
    err,
    out,
)
from spikebatch.contract import DEFAULT_DANDI_API_URL, Env
from spikebatch.control.stack_outputs import DEFAULT_STACK_NAME
from spikebatch.control.submission import Deployment
from spikebatch.estimates import RecordingSize, estimate_runs
from spikebatch.pages import fmt_number, fmt_usd
from spikebatch.study.cases import Case, DigestCache, check_with_worker, make_cases
from spikebatch.study.cases import resolve_recordings as resolve
from spikebatch.study.spec import StudySpec, StudySpecError, load_spec
from spikebatch.study.state import CaseState, should_run

study_app = typer.Typer(
    help="Studies: a matrix of recordings x sorter entries, each a run, scored against ground "
    "truth and collected into one table and page (docs/studies.md).",
    no_args_is_help=True,
)

SpecArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, help="Study spec (YAML or JSON).")
]
LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Run (or read) the cases on this machine, in this process; without it: on the "
        "deployed stack's AWS Batch (one array job per sorter entry).",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", file_okay=False, help="Study folder [default: ./studies/<name>/]."),
]
DIGESTS = ".digests.json"


def study_dir(spec: StudySpec, out_dir: Path | None) -> Path:
    return (out_dir or Path("studies") / spec.name).resolve()


def runs_uri(folder: Path) -> str:
    """Where a local study's runs go: ``<study folder>/runs/<run-id>/``."""
    return (folder / "runs").as_uri()


def _cases(
    spec: StudySpec, folder: Path, api_url: str, only: Sequence[str] | None = None
) -> list[Case]:
    """The matrix, its DANDI recordings resolved on ``api_url`` (where the jobs will fetch)."""
    recordings = resolve(
        spec,
        api_url=api_url,
        token=os.environ.get(Env.DANDI_API_KEY.value),
        digests=DigestCache(folder / DIGESTS),
    )
    return make_cases(spec, recordings, only)


def _local_states(spec: StudySpec, cases: list[Case], folder: Path) -> list[CaseState]:
    from spikebatch.study.local import local_states

    return local_states(spec, cases, runs_uri(folder))


@dataclass(frozen=True, slots=True)
class _OnAws:
    """Where an AWS study's cases live: the stack's deployment and its results prefix."""

    deployment: Deployment
    region: str | None

    @property
    def output_uri(self) -> str:
        return self.deployment.output_uri(None)


def _on_aws(stack_name: str, region: str | None, dandi_api_url: str | None) -> _OnAws:
    """The deployed stack; its jobs fetch from ``dandi_api_url`` when given (else the stack's)."""
    deployment = deployed_stack(stack_name, region).deployment()
    if dandi_api_url:
        deployment = replace(deployment, dandi_api_url=dandi_api_url)
    return _OnAws(deployment, region)


def _api_url(dandi_api_url: str | None, where: _OnAws | None) -> str:
    """--dandi-api-url / DANDI_API_URL, else the stack's archive, else DANDI's."""
    if dandi_api_url:
        return dandi_api_url
    return where.deployment.dandi_api_url if where is not None else DEFAULT_DANDI_API_URL


def _aws_states(spec: StudySpec, cases: list[Case], where: _OnAws) -> list[CaseState]:
    from spikebatch.study.batch import aws_states

    return aws_states(spec, cases, where.output_uri, bucket=where.deployment.bucket)


def _state_text(state: CaseState, *, on_aws: bool = False) -> str:
    if state.status == "pending":
        return {
            "new": "to run",
            "interrupted": "to run (was stopped)",
            "running": "in flight" if on_aws else "to run (left running)",
            "stale": f"to run ({state.detail})",
        }.get(state.why or "new", "to run")
    if state.status == "succeeded":
        return "done"
    return f"{state.status.replace('_', ' ')} earlier"


def _print_matrix(
    spec: StudySpec,
    cases: list[Case],
    states: list[CaseState],
    *,
    accuracy: bool,
    on_aws: bool = False,
) -> None:
    labels = list(dict.fromkeys(c.label for c in cases))
    table = Table(title=f"study {spec.name}", show_lines=False)
    table.add_column("recording")
    table.add_column("study")
    for label in labels:
        table.add_column(label)
    rows: dict[str, dict[str, str]] = {}
    studies: dict[str, str] = {}
    for case, state in zip(cases, states, strict=True):
        text = _state_text(state, on_aws=on_aws) if not accuracy else state.status
        if accuracy and on_aws and state.why == "running":
            text = "in flight"
        summary = (
            ((state.record or {}).get("ground_truth") or {}).get("summary")
            if state.status == "succeeded"
            else None
        )
        if accuracy and summary and summary.get("accuracy") is not None:
            text += f" {fmt_number(summary['accuracy'])}"
        rows.setdefault(case.recording.name, {})[case.label] = text
        studies[case.recording.name] = case.recording.study
    for name, cells in rows.items():
        table.add_row(name, studies[name], *(cells.get(label, "") for label in labels))
    out.print(table)


def _estimate(cases: list[Case], run: list[bool], channels: int) -> None:
    usd, hours, unknown = 0.0, 0.0, 0
    for case, todo in zip(cases, run, strict=True):
        if not todo:
            continue
        size = RecordingSize(case.recording.name, case.recording.size, None)
        [row] = estimate_runs(case.request, [size], channels)
        if row.estimate is None:
            unknown += 1
            continue
        usd += row.estimate.usd
        hours += row.estimate.total_seconds / 3600.0
    note = f" ({unknown} without an estimate)" if unknown else ""
    out.print(
        f"estimate for the {sum(run)} case(s) to run, on AWS Batch: {fmt_usd(usd)}, "
        f"{hours:.2f} instance-hours{note} (spikebatch.cost; --channels {channels})",
        markup=False,
    )


@study_app.command("run")
def run(
    spec_file: SpecArg,
    local: LocalOpt = False,
    out_dir: OutOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the matrix and an estimate; run nothing.")
    ] = False,
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Run every case again, done or not.")
    ] = False,
    rerun_failed: Annotated[
        bool, typer.Option("--rerun-failed", help="Also run the cases that failed or timed out.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Only this sorter label; repeat for several.")
    ] = None,
    channels: Annotated[
        int, typer.Option("--channels", min=1, help="Channels per recording, for the estimate.")
    ] = 384,
    dandi_api_url: DandiUrlOpt = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Run every case without a result (content-cached: an unchanged study runs nothing).

    Without --local: submit them to the deployed stack, one Batch array job per sorter
    entry; cases in flight (submitted, not ended) are not submitted again."""
    with domain_errors():
        spec = load_spec(spec_file)
        folder = study_dir(spec, out_dir)
        if not local:
            _run_on_aws(
                spec,
                folder,
                _on_aws(stack_name, region, dandi_api_url),
                only=only,
                dry_run=dry_run,
                rerun=rerun,
                rerun_failed=rerun_failed,
                channels=channels,
            )
            return
        cases = _cases(spec, folder, _api_url(dandi_api_url, None), only)
        check_with_worker(spec, cases)
        states = _local_states(spec, cases, folder)
        todo = [should_run(s, rerun=rerun, rerun_failed=rerun_failed) for s in states]
        if dry_run:
            _print_matrix(spec, cases, states, accuracy=False)
            _estimate(cases, todo, channels)
            return
        if not any(todo):
            out.print(
                f"nothing to run: all {len(cases)} case(s) of {spec.name} have a result (--rerun, --rerun-failed to run them again)",
                markup=False,
            )
            return
        _run_local(spec, cases, states, folder, rerun=rerun, rerun_failed=rerun_failed)


def _run_on_aws(
    spec: StudySpec,
    folder: Path,
    where: _OnAws,
    *,
    only: Sequence[str] | None,
    dry_run: bool,
    rerun: bool,
    rerun_failed: bool,
    channels: int,
) -> None:
    from spikebatch.study.batch import describe_plan, plan_study, should_submit, submit_study

    cases = _cases(spec, folder, where.deployment.dandi_api_url, only)
    check_with_worker(spec, cases)
    states = _aws_states(spec, cases, where)
    todo = [should_submit(s, rerun=rerun, rerun_failed=rerun_failed) for s in states]
    in_flight = sum(1 for s, t in zip(states, todo, strict=True) if not t and s.why == "running")
    plans = plan_study(spec, cases, todo, where.deployment)
    if dry_run:
        _print_matrix(spec, cases, states, accuracy=False, on_aws=True)
        _estimate(cases, todo, channels)
        for plan in plans:
            job = describe_plan(plan)
            out.print(
                f"would submit {job['run_id']}: {job['children']} case(s) on "
                f"{job['job_queue']} ({job['job_definition']}), timeout {job['timeout_s']} s",
                markup=False,
            )
        return
    if not plans:
        out.print(
            f"nothing to submit: of {len(cases)} case(s) of {spec.name}, {in_flight} in flight, "
            "the others have a result (--rerun, --rerun-failed to run them again)",
            markup=False,
        )
        return
    jobs = submit_study(plans, where.deployment, region=where.region)
    for plan, job in zip(plans, jobs, strict=True):
        kind = f"array job of {len(plan.runs)}" if plan.is_array else "job"
        out.print(f"Submitted {plan.run_id} ({kind}): Batch job {job.job_id}", markup=False)
    out.print(
        f"{sum(todo)} of {len(cases)} case(s) submitted ({in_flight} in flight left alone), "
        f"results under {where.output_uri}/. Follow: spikebatch study status SPEC",
        markup=False,
    )


def _run_local(
    spec: StudySpec,
    cases: list[Case],
    states: list[CaseState],
    folder: Path,
    *,
    rerun: bool,
    rerun_failed: bool,
) -> None:
    from spikebatch.study.local import CaseOutcome, StudyInterrupted, run_locally

    todo = sum(should_run(s, rerun=rerun, rerun_failed=rerun_failed) for s in states)
    out.print(f"{spec.name}: {todo} of {len(cases)} case(s) to run -> {folder}", markup=False)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("study", total=todo)

        def started(case: Case, i: int, n: int) -> None:
            progress.update(task, description=f"{case.recording.name} x {case.label}")

        def done(outcome: CaseOutcome) -> None:
            progress.advance(task)
            state = outcome.state
            text = (
                state.status if state.status != "pending" else f"not run (exit {outcome.exit_code})"
            )
            progress.console.print(
                f"{outcome.case.recording.name} x {outcome.case.label}: {text} {state.detail}".rstrip(),
                markup=False,
            )

        try:
            result = run_locally(
                spec,
                cases,
                runs_uri(folder),
                rerun=rerun,
                rerun_failed=rerun_failed,
                states=states,
                on_start=started,
                on_done=done,
                logs=folder,
            )
        except StudyInterrupted as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(130) from None
    failed = [o for o in result.ran if o.state.status != "succeeded"]
    out.print(
        f"ran {len(result.ran)} case(s), skipped {len(result.skipped)} with a result; {len(failed)} did not succeed. Next: spikebatch study results {spec_file_hint(folder)}",
        markup=False,
    )


def spec_file_hint(folder: Path) -> str:
    return f"SPEC --local --out {folder}"


@study_app.command("status")
def status(
    spec_file: SpecArg,
    local: LocalOpt = False,
    out_dir: OutOpt = None,
    dandi_api_url: DandiUrlOpt = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """The matrix: a row per recording, a column per sorter label, state and accuracy."""
    with domain_errors():
        spec = load_spec(spec_file)
        folder = study_dir(spec, out_dir)
        where = None if local else _on_aws(stack_name, region, dandi_api_url)
        cases = _cases(spec, folder, _api_url(dandi_api_url, where))
        if where is not None:
            states = _aws_states(spec, cases, where)
            _print_matrix(spec, cases, states, accuracy=True, on_aws=True)
            return
        _print_matrix(spec, cases, _local_states(spec, cases, folder), accuracy=True)


@study_app.command("results")
def results(
    spec_file: SpecArg,
    local: LocalOpt = False,
    out_dir: OutOpt = None,
    dandi_api_url: DandiUrlOpt = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Collect what has finished into DIR/study.json, DIR/units.csv and DIR/index.html
    (without --local: from the stack's results bucket)."""
    with domain_errors():
        from spikebatch.study.local import log_path
        from spikebatch.study.results import collect, write_results

        spec = load_spec(spec_file)
        folder = study_dir(spec, out_dir)
        # the region, before any S3
        where = None if local else _on_aws(stack_name, region, dandi_api_url)
        cases = _cases(spec, folder, _api_url(dandi_api_url, where))
        if where is None:
            states = _local_states(spec, cases, folder)
            uri = runs_uri(folder)

            def log_uri(case: Case) -> str | None:
                path = log_path(folder, case)
                return path.as_uri() if path.is_file() else None

            collected = collect(spec, cases, states, uri, log_uri=log_uri)
            page = write_results(collected, folder, links_relative_to=uri)
        else:
            states = _aws_states(spec, cases, where)
            collected = collect(spec, cases, states, where.output_uri)
            page = write_results(collected, folder, links_relative_to=None)
        finished = sum(1 for c in collected.cases if c["status"] != "pending")
        out.print(
            f"{finished} of {len(cases)} case(s) finished -> {folder}/study.json, units.csv, {page}",
            markup=False,
        )
        for label, standing in collected.as_json()["labels"].items():
            if standing["worst_shortfall"] is not None:
                out.print(
                    f"{label}: mean accuracy {standing['mean_accuracy']:.3f}; worst shortfall "
                    f"from the best {standing['worst_shortfall']:.3f} "
                    f"({standing['worst_recording']}, of {standing['recordings_compared']})",
                    markup=False,
                )


__all__ = ["StudySpecError", "study_app"]

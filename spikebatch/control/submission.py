"""Turn a validated :class:`~spikebatch.control.request.JobRequest` into AWS Batch jobs.

Planning (run ids, env overrides, queue and job definition, array manifest) is a pure
function so the CLI's ``--dry-run`` prints exactly what :func:`submit` sends. Several
assets become one Batch array job: child *i* applies entry *i* of a manifest written to
``manifests/`` before the job exists (``spikebatch.contract.apply_array_child``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spikebatch import aws, scratch
from spikebatch.contract import (
    DEFAULT_DANDI_API_URL,
    MANIFESTS_PREFIX,
    RESULTS_PREFIX,
    RUN_ID_TAG,
    Env,
    dandi_source,
    derive_run_id,
    run_results_uri,
)
from spikebatch.control.idempotency import Claim
from spikebatch.control.records import now, put_records
from spikebatch.control.request import (
    MAX_ARRAY_SIZE,
    FieldError,
    JobRequest,
    RequestError,
    ResourceLimits,
    parse_request,
)
from spikebatch.sorters import DEFAULT_SORTER

log = logging.getLogger(__name__)


CLAIM_TAG = "spikebatch:claim"
"""Batch job tag naming the claim (one upload or request version) a job was submitted under.
SubmitJob takes no idempotency token, so this tag is how an invocation that takes over a
dead one's claim finds the job the dead one may have created (:func:`find_claimed_job`)."""


class DeploymentConfigError(RuntimeError):
    """A required setting of the deployed stack is missing (names the variable)."""


class JobMayExist(RuntimeError):
    """A submission failed after SubmitJob may have created the job: never resubmit it
    blindly. Under a claim, keep the claim: whoever takes it over looks the job up."""


class SubmitOutcomeUnknown(JobMayExist):
    """SubmitJob failed without an answer (a read timeout, a dropped connection, a 5xx)."""


class RecordsIncomplete(JobMayExist):
    """The job exists, but its run records could not be written with its id."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """The parts of the deployed stack a submission needs (stack outputs or Lambda env)."""

    bucket: str
    job_queue_arn: str
    priority_queue_arn: str
    gpu_job_definition_arn: str
    cpu_job_definition_arn: str
    limits: ResourceLimits | None = None
    default_sorter: str = DEFAULT_SORTER
    dandi_api_url: str = DEFAULT_DANDI_API_URL
    #: New work is refused beyond this month-to-date spend (:mod:`.budget`); None: no limit.
    monthly_budget_usd: float | None = None
    #: Where the submit Lambda says that it refused an upload over the budget.
    failure_topic_arn: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Deployment:
        """The submit Lambda's environment (set by ``stacks/``)."""
        required = {
            "bucket": "DATA_BUCKET",
            "job_queue_arn": "JOB_QUEUE_ARN",
            "priority_queue_arn": "PRIORITY_QUEUE_ARN",
            "gpu_job_definition_arn": "GPU_JOB_DEFINITION_ARN",
            "cpu_job_definition_arn": "CPU_JOB_DEFINITION_ARN",
        }
        missing = [var for var in required.values() if not env.get(var)]
        if missing:
            raise DeploymentConfigError(f"missing environment variables: {', '.join(missing)}")
        limits = None
        if env.get("RESOURCE_LIMITS"):
            try:
                limits = ResourceLimits.from_json(env["RESOURCE_LIMITS"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DeploymentConfigError(f"RESOURCE_LIMITS: not valid ({exc})") from None
        return cls(
            **{key: env[var] for key, var in required.items()},
            limits=limits,
            default_sorter=env.get("DEFAULT_SORTER") or DEFAULT_SORTER,
            dandi_api_url=env.get("DANDI_API_URL") or DEFAULT_DANDI_API_URL,
            monthly_budget_usd=_usd(env, "MONTHLY_BUDGET_USD"),
            failure_topic_arn=env.get("FAILURE_TOPIC_ARN") or None,
        )

    def output_uri(self, output_prefix: str | None) -> str:
        """``OUTPUT_URI`` for a request: ``s3://<bucket>/results[/<output_prefix>]``."""
        parts = [RESULTS_PREFIX.rstrip("/"), *([output_prefix] if output_prefix else [])]
        return f"s3://{self.bucket}/{'/'.join(parts)}"


def _usd(env: Mapping[str, str], var: str) -> float | None:
    if not env.get(var):
        return None
    try:
        return float(env[var])
    except ValueError:
        raise DeploymentConfigError(f"{var}: not a number ({env[var]!r})") from None


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One recording to sort: its run id, where it comes from, and its array slot."""

    run_id: str
    source: str
    input_env: dict[str, str]
    array_index: int | None = None


@dataclass(frozen=True, slots=True)
class SubmissionPlan:
    """Everything :func:`submit` will do, computed without touching AWS."""

    request: JobRequest
    run_id: str
    runs: list[PlannedRun]
    output_uri: str
    submit_job: dict[str, Any]
    manifest_key: str | None = None
    manifest: list[dict[str, str]] | None = None

    @property
    def is_array(self) -> bool:
        return self.manifest is not None


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    run_id: str
    job_id: str
    job_name: str
    job_queue: str
    runs: list[PlannedRun] = field(default_factory=list)
    adopted: bool = False
    """True when an earlier, interrupted invocation had submitted it (found, not submitted)."""

    def child_job_id(self, run: PlannedRun) -> str:
        """Batch names array children ``<parent-id>:<index>``."""
        return self.job_id if run.array_index is None else f"{self.job_id}:{run.array_index}"


def batch_job_name(run_id: str) -> str:
    """Batch job names allow ``[A-Za-z0-9_-]{1,128}``; run ids may also contain dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[:128]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def request_run_id(request: JobRequest, source: str, *, content: str | None = None) -> str:
    """The run id of ``request`` sorting ``source``: the one derivation for submissions and
    study cases (``content``, a recording's identity, keys a study's cache)."""
    return derive_run_id(
        source=source,
        sorter=request.sorter,
        sorter_params=request.sorter_params,
        preprocessing=request.preprocessing,
        max_duration_s=request.max_duration_s,
        electrical_series_path=request.electrical_series_path,
        sort_by_group=request.sort_by_group,
        content=content,
        data_type=request.data_type,
        read_recording_kwargs=(
            request.read_recording_kwargs.reader_kwargs() if request.read_recording_kwargs else None
        ),
    )


def _runs(request: JobRequest, assets: Sequence[str] | None) -> list[PlannedRun]:
    if request.input_uri is not None:
        env = {Env.INPUT_URI.value: request.input_uri}
        return [PlannedRun(request_run_id(request, request.input_uri), request.input_uri, env)]
    paths = list(request.assets or assets or [])
    if not paths:
        raise RequestError(
            [
                FieldError(
                    "asset_glob",
                    f"{request.asset_glob!r} matched no assets in dandiset "
                    f"{request.dandiset_id} ({request.version})",
                )
            ]
        )
    assert request.dandiset_id is not None  # the model guarantees it for DANDI inputs
    array = len(paths) > 1
    runs = []
    for index, path in enumerate(paths):
        source = dandi_source(request.dandiset_id, request.version, path)
        env = {Env.DANDI_ASSET_PATH.value: path}
        runs.append(
            PlannedRun(request_run_id(request, source), source, env, index if array else None)
        )
    return runs


def _common_env(request: JobRequest, dandi_api_url: str, output_uri: str) -> dict[str, str]:
    env = {
        Env.SORTER.value: request.sorter,
        Env.SORTER_PARAMS.value: _json(request.sorter_params),
        Env.OUTPUT_URI.value: output_uri,
    }
    if request.dandiset_id is not None:
        env[Env.DANDISET_ID.value] = request.dandiset_id
        env[Env.DANDISET_VERSION.value] = request.version
        env[Env.DANDI_API_URL.value] = dandi_api_url
    if request.preprocessing is not None:
        env[Env.PREPROCESSING.value] = _json(request.preprocessing)
    if request.max_duration_s is not None:
        env[Env.MAX_DURATION_S.value] = repr(request.max_duration_s)
    if request.electrical_series_path is not None:
        env[Env.ELECTRICAL_SERIES_PATH.value] = request.electrical_series_path
    if request.sort_by_group:
        env[Env.SORT_BY_GROUP.value] = "true"
    if request.data_type is not None:
        env[Env.DATA_TYPE.value] = request.data_type
    if request.read_recording_kwargs is not None:
        env[Env.READ_RECORDING_KWARGS.value] = _json(request.read_recording_kwargs.reader_kwargs())
    if request.quality_thresholds is not None:
        thresholds = request.quality_thresholds.model_dump(mode="json", exclude_defaults=True)
        env[Env.QUALITY_THRESHOLDS.value] = _json(thresholds)
    if not request.phy_pc_features:
        env[Env.PHY_PC_FEATURES.value] = "false"
    if request.publish_dandiset_id is not None:
        env[Env.PUBLISH_DANDISET_ID.value] = request.publish_dandiset_id
        env.setdefault(Env.DANDI_API_URL.value, dandi_api_url)  # the same archive, the same key
    return env


def _resources(request: JobRequest) -> list[dict[str, str]]:
    """Only what the request sets: the job definition (the stack's config) sizes the rest."""
    wanted = request.resources
    reqs = []
    if wanted.vcpus is not None:
        reqs.append({"type": "VCPU", "value": str(wanted.vcpus)})
    if wanted.memory_gib is not None:
        reqs.append({"type": "MEMORY", "value": str(int(wanted.memory_gib * 1024))})
    if wanted.gpus and request.needs_gpu:
        reqs.append({"type": "GPU", "value": str(wanted.gpus)})
    return reqs


def _array_run_id(request: JobRequest, runs: list[PlannedRun]) -> str:
    digest = hashlib.sha256("\n".join(r.source for r in runs).encode()).hexdigest()[:8]
    return request_run_id(request, f"dandiset-{request.dandiset_id}-{len(runs)}-assets-{digest}")


def _refuse_what_fits_nowhere(
    request: JobRequest,
    runs: list[PlannedRun],
    deployment: Deployment,
    input_sizes: Mapping[str, int],
) -> None:
    """A recording no instance type of the stack can hold on its scratch produces no job."""
    limits = deployment.limits
    capacity = scratch.largest_scratch_bytes(
        max_vcpus=limits.max_vcpus if limits else None,
        max_memory_gib=limits.max_memory_gib if limits else None,
    )
    errors = []

    @functools.cache  # a campaign's thousands of recordings have few distinct sizes
    def refusal(size: int) -> str | None:
        return scratch.refusal(
            size,
            request.sorter,
            capacity_bytes=capacity,
            sorter_params=request.sorter_params,
            max_duration_s=request.max_duration_s,
        )

    for run in runs:
        key = (
            run.input_env.get(Env.DANDI_ASSET_PATH.value)
            or run.input_env.get(Env.INPUT_URI.value)
            or request.input_uri
            or ""
        )
        size = input_sizes.get(key)
        why = size and refusal(size)
        if why:
            errors.append(
                FieldError("input_uri" if request.input_uri else "assets", f"{key}: {why}")
            )
    if errors:
        raise RequestError(errors)


def plan_submission(
    request: JobRequest,
    deployment: Deployment,
    *,
    assets: Sequence[str] | None = None,
    input_sizes: Mapping[str, int] | None = None,
) -> SubmissionPlan:
    """The exact Batch request for ``request``; ``assets`` are a resolved ``asset_glob``.

    ``input_sizes`` (asset path or input URI -> bytes, where known) lets it refuse a
    recording that no instance type of the stack can hold on its scratch volume.
    """
    request = _within_limits(request, deployment)
    if request.input_uri is not None and request.input_uri.startswith("file://"):
        raise RequestError([FieldError("input_uri", _FILE_URI)])
    runs = _runs(request, assets)
    if input_sizes:
        _refuse_what_fits_nowhere(request, runs, deployment, input_sizes)
    output_uri = deployment.output_uri(request.output_prefix)
    env = _common_env(request, deployment.dandi_api_url, output_uri)
    run_id = _array_run_id(request, runs) if len(runs) > 1 else runs[0].run_id
    return _plan(request, deployment, runs, env, run_id=run_id, output_uri=output_uri)


_FILE_URI = "a file:// URI is local; Batch jobs read s3:// or https://"
#: The variables that name a run's input; :func:`plan_runs` takes them from each run.
_SOURCE_VARS = (
    Env.INPUT_URI.value,
    Env.DANDISET_ID.value,
    Env.DANDISET_VERSION.value,
    Env.DANDI_ASSET_PATH.value,
)


def _within_limits(request: JobRequest, deployment: Deployment) -> JobRequest:
    if deployment.limits is None:
        return request
    # re-check: the request may come from a file or flags
    return parse_request(request.model_dump(exclude_unset=True), limits=deployment.limits)


def planned_run(
    request: JobRequest, *, run_id: str, extra_env: Mapping[str, str] | None = None
) -> PlannedRun:
    """The one recording of ``request`` as a run that carries its whole source (and
    ``extra_env``, e.g. GROUND_TRUTH) in its own environment, under ``run_id``: for
    :func:`plan_runs`, whose runs may come from different dandisets or URIs."""
    [run] = _runs(request, None)
    env = dict(run.input_env)
    if request.dandiset_id is not None:
        env[Env.DANDISET_ID.value] = request.dandiset_id
        env[Env.DANDISET_VERSION.value] = request.version
    return PlannedRun(run_id, run.source, env | dict(extra_env or {}))


def plan_runs(
    request: JobRequest,
    deployment: Deployment,
    runs: Sequence[PlannedRun],
    *,
    run_id: str,
    attempt_timeout_s: float | None = None,
    input_sizes: Mapping[str, int] | None = None,
) -> SubmissionPlan:
    """One job (several runs: one array job under ``run_id``) with ``request``'s sorter,
    settings and resources, where each run brings its own input and extra environment
    (:func:`planned_run`); ``request``'s own input is not used. Studies submit each sorter
    entry's recordings this way. ``attempt_timeout_s`` replaces ``resources.timeout_hours``.
    """
    request = _within_limits(request, deployment)
    if not runs:
        raise RequestError([FieldError("assets", "nothing to submit")])
    if len(runs) > MAX_ARRAY_SIZE:
        raise RequestError(
            [FieldError("assets", f"{len(runs)} runs; an array job holds {MAX_ARRAY_SIZE}")]
        )
    bad = [r.source for r in runs if r.input_env.get(Env.INPUT_URI.value, "").startswith("file:")]
    if bad:
        raise RequestError([FieldError("input_uri", f"{bad[0]}: {_FILE_URI}")])
    array = len(runs) > 1
    runs = [replace(r, array_index=i if array else None) for i, r in enumerate(runs)]
    if input_sizes:
        _refuse_what_fits_nowhere(request, runs, deployment, input_sizes)
    output_uri = deployment.output_uri(request.output_prefix)
    env = _common_env(request, deployment.dandi_api_url, output_uri)
    for var in _SOURCE_VARS:
        env.pop(var, None)
    if any(Env.DANDISET_ID.value in r.input_env for r in runs):
        env.setdefault(Env.DANDI_API_URL.value, deployment.dandi_api_url)
    return _plan(
        request,
        deployment,
        runs,
        env,
        run_id=run_id if array else runs[0].run_id,
        output_uri=output_uri,
        attempt_timeout_s=attempt_timeout_s,
    )


def _plan(
    request: JobRequest,
    deployment: Deployment,
    runs: list[PlannedRun],
    env: dict[str, str],
    *,
    run_id: str,
    output_uri: str,
    attempt_timeout_s: float | None = None,
) -> SubmissionPlan:
    """The SubmitJob request (and, for several runs, the array manifest)."""
    is_array = len(runs) > 1
    manifest_key = manifest = None
    if is_array:
        manifest = [{**run.input_env, Env.RUN_ID.value: run.run_id} for run in runs]
        manifest_key = f"{MANIFESTS_PREFIX}{run_id}.json"
        env[Env.ARRAY_MANIFEST_URI.value] = f"s3://{deployment.bucket}/{manifest_key}"
    else:
        env.update(runs[0].input_env)
        env[Env.RUN_ID.value] = run_id
    if attempt_timeout_s is None:
        attempt_timeout_s = request.resources.timeout_hours * 3600
    kwargs: dict[str, Any] = {
        "jobName": batch_job_name(run_id),
        "jobQueue": (
            deployment.job_queue_arn if request.resources.spot else deployment.priority_queue_arn
        ),
        "jobDefinition": (
            deployment.gpu_job_definition_arn
            if request.needs_gpu
            else deployment.cpu_job_definition_arn
        ),
        "containerOverrides": {
            "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
        },
        "timeout": {"attemptDurationSeconds": max(60, int(attempt_timeout_s))},
        "tags": {RUN_ID_TAG: run_id},
        "propagateTags": True,
    }
    if resources := _resources(request):
        kwargs["containerOverrides"]["resourceRequirements"] = resources
    if is_array:
        kwargs["arrayProperties"] = {"size": len(runs)}
    return SubmissionPlan(
        request=request,
        run_id=run_id,
        runs=runs,
        output_uri=output_uri,
        submit_job=kwargs,
        manifest_key=manifest_key,
        manifest=manifest,
    )


def local_environment(
    request: JobRequest, output_uri: str, *, dandi_api_url: str = DEFAULT_DANDI_API_URL
) -> dict[str, str]:
    """The environment a one-recording job would get, writing to ``output_uri`` instead."""
    runs = _runs(request, None)
    if len(runs) != 1:
        raise RequestError([FieldError("assets", "run-local sorts one recording at a time")])
    env = _common_env(request, dandi_api_url, output_uri) | runs[0].input_env
    return env | {Env.RUN_ID.value: runs[0].run_id}


def write_submitted(
    plan: SubmissionPlan,
    job: SubmittedJob | None,
    *,
    bucket: str,
    submitted_by: str,
    child_records: bool = True,
    extra: Mapping[str, Any] | None = None,
    attempts: Mapping[str, int] | None = None,
) -> None:
    """``runs/<run-id>/request.json`` for the job and, for arrays, for each child.

    Written once before SubmitJob (``job`` None: the run exists but has no Batch job yet)
    and again with the job id, so a failure in between never loses the request.
    ``child_records=False`` (campaigns) leaves the children's own records out: the array's
    record lists them (run id, index, source, attempt), which is what the run-record Lambda
    and :func:`~spikebatch.control.records.load_run` read, and it is one PUT instead of
    thousands. ``attempts`` (run id -> how many times submitted, this one included) and
    ``extra`` (e.g. the campaign id) go into the records.
    """
    request = plan.request.model_dump(mode="json", exclude_none=True)
    base = {
        "request": request,
        "job_queue": plan.submit_job["jobQueue"],
        "job_name": plan.submit_job["jobName"],
        "output_uri": plan.output_uri,
        "submitted_by": submitted_by,
        "submitted_at": now(),
        **(extra or {}),
    }
    attempts = attempts or {}
    records: list[dict[str, Any]] = []
    if plan.is_array:
        children = [
            {"run_id": r.run_id, "array_index": r.array_index, "source": r.source}
            | ({"attempt": attempts[r.run_id]} if r.run_id in attempts else {})
            for r in plan.runs
        ]
        records.append(
            {
                **base,
                "run_id": plan.run_id,
                "job_id": job.job_id if job else None,
                "children": children,
            }
        )
    for run in plan.runs if child_records or not plan.is_array else []:
        record = {
            **base,
            "run_id": run.run_id,
            "source": run.source,
            "job_id": job.child_job_id(run) if job else None,
            "results_uri": run_results_uri(plan.output_uri, run.run_id),
        }
        if run.run_id in attempts:
            record["attempt"] = attempts[run.run_id]
        if run.array_index is not None:
            record |= {"parent_run_id": plan.run_id, "array_index": run.array_index}
        records.append(record)
    # An array of thousands must fit the submit Lambda's time limit: PUTs in parallel.
    put_records(bucket, records, "request.json")


def find_claimed_job(
    job_queue: str, job_name: str, claim_tag: str, *, region: str | None = None
) -> dict[str, Any] | None:
    """The job called ``job_name`` in ``job_queue`` tagged with ``claim_tag`` (the oldest, if
    several), as DescribeJobs describes it; None if there is none.

    ListJobs with a JOB_NAME filter sees every status. It is eventually consistent, which
    is why it is only asked about jobs submitted at least the lease margin (10 s) ago.
    """
    batch = aws.client("batch", region=region)
    ids: list[str] = []
    pages = batch.get_paginator("list_jobs").paginate(
        jobQueue=job_queue, filters=[{"name": "JOB_NAME", "values": [job_name]}]
    )
    for page in pages:
        # Array children ("<parent-id>:<index>") share the parent's name but are never
        # what was submitted (moto lists them; Batch lists them only under arrayJobId).
        ids += [s["jobId"] for s in page.get("jobSummaryList", []) if ":" not in s["jobId"]]
    found = []
    for start in range(0, len(ids), 100):
        jobs = batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]
        found += [j for j in jobs if (j.get("tags") or {}).get(CLAIM_TAG) == claim_tag]
    return min(found, key=lambda j: (j.get("createdAt", 0), j["jobId"]), default=None)


def _adopt(plan: SubmissionPlan, claim: Claim, region: str | None) -> SubmittedJob | None:
    """The job a dead holder of ``claim`` submitted, if it got as far as SubmitJob."""
    name, queue = claim.replaced.get("job_name"), claim.replaced.get("job_queue")
    if not name or not queue:
        return None  # it never reached SubmitJob: nothing to find
    found = find_claimed_job(queue, name, claim.tag, region=region)
    if found is None:
        return None
    if found["jobName"] != plan.submit_job["jobName"]:
        log.warning("adopted job %s is named %s, not %s", found["jobId"], found["jobName"], name)
    log.info("job %s was submitted by an interrupted invocation; adopting it", found["jobId"])
    return SubmittedJob(
        run_id=plan.run_id,
        job_id=found["jobId"],
        job_name=found["jobName"],
        job_queue=found["jobQueue"],
        runs=plan.runs,
        adopted=True,
    )


def submit(
    plan: SubmissionPlan,
    deployment: Deployment,
    *,
    submitted_by: str,
    region: str | None = None,
    claim: Claim | None = None,
    child_records: bool = True,
    extra: Mapping[str, Any] | None = None,
    attempts: Mapping[str, int] | None = None,
) -> SubmittedJob:
    """Records and manifest first, then SubmitJob, then the records again with the job id.

    A SubmitJob that failed without an answer raises :class:`SubmitOutcomeUnknown`.

    Under a ``claim`` (the S3 trigger), the job carries the claim's tag and the claim notes
    the job's name and queue just before SubmitJob; a holder that takes the claim over
    from a dead one looks for that job first and adopts it instead of submitting again.
    So once the job exists, a failure to write its id into the records raises
    :class:`RecordsIncomplete`: Lambda's retry adopts the job and completes the records.
    Without a claim (the CLI) that failure is logged instead, since a retry would submit
    a second job (the run-record Lambda still maps the job to the run through its tag).
    ``child_records``, ``extra`` and ``attempts`` are :func:`write_submitted`'s.
    """
    s3 = aws.client("s3", region=region)
    records = functools.partial(
        write_submitted,
        plan,
        bucket=deployment.bucket,
        submitted_by=submitted_by,
        child_records=child_records,
        extra=extra,
        attempts=attempts,
    )
    job = _adopt(plan, claim, region) if claim is not None else None
    if job is None:
        records(None)
        if plan.manifest_key is not None:
            s3.put_object(
                Bucket=deployment.bucket,
                Key=plan.manifest_key,
                Body=json.dumps(plan.manifest, indent=1).encode(),
                ContentType="application/json",
            )
        request = plan.submit_job
        if claim is not None:
            request = {**request, "tags": {**request["tags"], CLAIM_TAG: claim.tag}}
            claim.note(job_name=request["jobName"], job_queue=request["jobQueue"])
        try:
            response = aws.client("batch", region=region).submit_job(**request)
        except (ClientError, BotoCoreError) as exc:
            if aws.outcome_unknown(exc):
                raise SubmitOutcomeUnknown(
                    f"SubmitJob got no answer ({exc}); job {request['jobName']} may exist:"
                    f" check `spikebatch status {plan.run_id}` before submitting again"
                ) from exc
            raise
        job = SubmittedJob(
            run_id=plan.run_id,
            job_id=response["jobId"],
            job_name=response["jobName"],
            job_queue=request["jobQueue"],
            runs=plan.runs,
        )
    try:
        records(job)
    except (ClientError, BotoCoreError) as exc:
        if claim is not None:
            raise RecordsIncomplete(f"job {job.job_id} exists; its records lack its id") from exc
        log.exception("job %s submitted, but its run records lack the job id", job.job_id)
    return job

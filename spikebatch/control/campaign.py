"""Campaigns: one request of any size, planned, budgeted, split into arrays, resumable.

A campaign is what one job request asks for, however many recordings it resolves to
(DESIGN.md, "Units of work"). Its id is derived from the request like a run id (the inputs
and the sorter settings; not the pacing, cap or retry knobs), so submitting the same
request again is the same campaign, and it picks up where the last submission stopped:

1. :func:`resolve_inputs`: every recording, each with its run id (``request_run_id``).
2. :func:`classify`: each run id against the run records (listed, then read in parallel):
   succeeded, in flight, failed (under or over ``max_attempts_per_input``), or to run.
3. :func:`plan_campaign`: what is to run, in arrays of at most ``MAX_ARRAY_SIZE`` (or
   ``max_concurrent_jobs``) children, priced with :mod:`spikebatch.estimates`;
   :func:`check_budget` refuses it whole when the estimate exceeds ``max_cost_usd``.
4. :func:`submit_campaign`: array after array, each depending on the one before (Batch
   ``dependsOn``), each noted in ``campaigns/<id>/campaign.json`` before its SubmitJob and
   again with its job id, so that a submission killed anywhere is resumed by submitting
   the same request again: a noted array without a job id is looked up in Batch (name and
   claim tag, as the S3 trigger adopts jobs) and adopted, or planned again.

Arrays write one run record (with the children listed) instead of one per child: at
12,000 children that is the difference between seconds and minutes of PUTs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spikebatch import aws
from spikebatch.contract import (
    CAMPAIGNS_PREFIX,
    CONTINUATIONS_PREFIX,
    RUN_ID_TAG,
    RUNS_PREFIX,
    Env,
    dandi_source,
)
from spikebatch.control import budget, idempotency, s3_inputs
from spikebatch.control.dandi_assets import resolve_selections
from spikebatch.control.idempotency import Claim, acquire, release_quietly
from spikebatch.control.job_status import TERMINAL
from spikebatch.control.records import get_json, now, put_json, record_key, update_json
from spikebatch.control.request import (
    MAX_ARRAY_SIZE,
    FieldError,
    JobRequest,
    RequestError,
)
from spikebatch.control.submission import (
    CLAIM_TAG,
    Deployment,
    PlannedRun,
    RecordsIncomplete,
    SubmissionPlan,
    SubmittedJob,
    find_claimed_job,
    plan_runs,
    request_run_id,
    submit,
)
from spikebatch.cost import NEUROPIXELS_CHANNELS
from spikebatch.estimates import RecordingSize, estimate_runs

log = logging.getLogger(__name__)

#: ListJobs is eventually consistent: a noted array is looked up only this long after it was
#: noted (the claim protocol's lease margin, idempotency.LEASE_S - HANDLER_TIMEOUT_S).
ADOPT_AFTER_S = 10.0
#: Array run ids start with this (a campaign's arrays are listed in its record).
ARRAY_PREFIX = "array-"
#: The submit Lambda stops starting arrays when less than this (or twice the slowest array
#: so far) is left of its time limit, and carries on in a follow-up invocation.
TIME_MARGIN_S = 10.0
READERS = 32


# -- inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignInput:
    """One recording of the campaign: its run (full source in its env) and size, if known."""

    run: PlannedRun
    name: str
    size: int | None = None


def campaign_id(request: JobRequest) -> str:
    """Deterministic, like a run id: the inputs and the settings that enter run ids."""
    inputs = {
        "dandisets": [s.model_dump(mode="json") for s in request.selections()],
        "input_uri": request.input_uri,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    label = "-".join(s.dandiset_id for s in request.selections()[:3]) or "uri"
    return request_run_id(request, f"campaign/{digest}/campaign-{label}")


def resolve_inputs(
    request: JobRequest, *, api_url: str, token: str | None = None
) -> list[CampaignInput]:
    """Every recording the request names (DANDI listings, and S3 listings of an
    ``input_uri`` glob, read a page of 1000 at a time)."""
    if s3_inputs.is_s3_glob(request.input_uri):
        return _glob_inputs(request)
    if request.input_uri is not None:
        env = {Env.INPUT_URI.value: request.input_uri}
        run = PlannedRun(request_run_id(request, request.input_uri), request.input_uri, env)
        size = s3_inputs.recording_bytes(request.input_uri)
        return [CampaignInput(run, request.input_uri, size)]
    found: dict[str, CampaignInput] = {}
    for selection, assets in resolve_selections(request, api_url=api_url, token=token):
        for asset in assets:
            source = dandi_source(selection.dandiset_id, selection.version, asset.path)
            env = {
                Env.DANDISET_ID.value: selection.dandiset_id,
                Env.DANDISET_VERSION.value: selection.version,
                Env.DANDI_ASSET_PATH.value: asset.path,
            }
            run = PlannedRun(request_run_id(request, source), source, env)
            found.setdefault(run.run_id, CampaignInput(run, asset.path, asset.size))
    if not found:
        what = "; ".join(
            f"{', '.join(map(repr, s.globs))} matched no assets in dandiset {s.dandiset_id}"
            f" ({s.version})"
            for s in request.selections()
        )
        raise RequestError([FieldError("asset_glob", what)])
    return sorted(found.values(), key=lambda i: i.run.source)


def _glob_inputs(request: JobRequest) -> list[CampaignInput]:
    """One run per recording an s3:// glob matches, each under its own URI's run id."""
    assert request.input_uri is not None
    inputs = []
    for match in s3_inputs.expand(request.input_uri):
        env = {Env.INPUT_URI.value: match.uri}
        run = PlannedRun(request_run_id(request, match.uri), match.uri, env)
        inputs.append(CampaignInput(run, match.uri, match.size))
    return inputs


# -- what the records say ---------------------------------------------------------------


DONE, IN_FLIGHT, FAILED, OVER_CAP, TO_RUN = "done", "in flight", "failed", "over the cap", "to run"


@dataclass
class Classification:
    """Each input's state, and how often each was submitted before (the attempt counter)."""

    states: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def of(self, state: str) -> list[str]:
        return [run_id for run_id, s in self.states.items() if s == state]

    @property
    def counts(self) -> dict[str, int]:
        counted = {s: 0 for s in (TO_RUN, DONE, IN_FLIGHT, FAILED, OVER_CAP)}
        for state in self.states.values():
            counted[state] += 1
        return counted


def _list_keys(bucket: str, prefixes: Sequence[str]) -> set[str]:
    """Every key under ``prefixes`` (listed in parallel, 1000 keys a page)."""
    paginator = aws.client("s3").get_paginator("list_objects_v2")

    def one(prefix: str) -> list[str]:
        keys = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {key for keys in pool.map(one, prefixes) for key in keys}


def _shards(run_ids: Sequence[str]) -> list[str]:
    """``runs/`` prefixes that cover ``run_ids`` and little else: their common prefix split
    by the next character (run ids start with the recording's name, e.g. ``sub-``)."""
    if not run_ids:
        return []
    first, last = min(run_ids), max(run_ids)
    pairs = enumerate(zip(first, last, strict=False))
    common = next((i for i, (a, b) in pairs if a != b), min(len(first), len(last)))
    stem = first[:common]
    return sorted({f"{RUNS_PREFIX}{stem}{r[common : common + 1]}" for r in run_ids})


def _read_all(bucket: str, keys: Sequence[str]) -> dict[str, Any]:
    """GETs in parallel (boto3 clients are thread-safe): key -> JSON document."""
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        return dict(zip(keys, pool.map(lambda k: get_json(bucket, k), keys), strict=True))


def _run_id_of(key: str) -> str:
    return key.removeprefix(RUNS_PREFIX).split("/", 1)[0]


@dataclass
class _Records:
    """What the records say about a set of run ids (and every array still in flight)."""

    statuses: dict[str, dict[str, Any]]
    requests: dict[str, dict[str, Any]]
    #: run id -> (array record, child entry) for every array whose job is not finished
    memberships: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]
    #: the campaign's arrays that were submitted (run id -> job id), from their records
    submitted: dict[str, str] = field(default_factory=dict)


def _read_records(
    bucket: str,
    run_ids: Sequence[str],
    arrays: Sequence[str],
    adopt: Callable[[dict[str, Any]], dict[str, Any]],
) -> _Records:
    """One listing of the inputs' ``runs/`` keys, then GETs only of what exists (a fresh
    campaign of 12,000 costs a few LISTs, not 36,000 GETs), and of the campaign's own
    arrays' records (their children have no records of their own) unless they finished."""
    keys = _list_keys(bucket, _shards(run_ids))
    wanted = set(run_ids)
    by_run: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        by_run[_run_id_of(key)].add(key.rsplit("/", 1)[-1])
    status_keys = [record_key(r, "status.json") for r in wanted if "status.json" in by_run[r]]
    status_keys += [record_key(a, "status.json") for a in arrays if a not in wanted]
    request_keys = [record_key(r, "request.json") for r in wanted if "request.json" in by_run[r]]
    statuses = {_run_id_of(k): v for k, v in _read_all(bucket, status_keys).items() if v}
    live = [a for a in arrays if str((statuses.get(a) or {}).get("status")) not in TERMINAL]
    live = [a for a in live if a not in wanted]  # a one-input "array" is a run's own record
    documents = _read_all(bucket, request_keys + [record_key(a, "request.json") for a in live])
    requests = {_run_id_of(k): v for k, v in documents.items() if v}
    memberships: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    submitted: dict[str, str] = {}
    for array_id in live:
        record = requests.pop(array_id, None)
        if record is None or not record.get("children"):
            continue
        if not record.get("job_id"):
            record = adopt(record)
        if not record.get("job_id"):
            continue  # never submitted: its children are not in flight
        submitted[array_id] = str(record["job_id"])
        for child in record["children"]:
            if child.get("run_id") in wanted:
                memberships[str(child["run_id"])].append((record, child))
    return _Records(statuses, requests, memberships, submitted)


def _status_state(status: Mapping[str, Any]) -> str | None:
    """done / failed / in flight from a status.json; None for a failure that never ran
    (Batch fails the arrays chained after a failed one: "Dependent Job failed")."""
    value = str(status.get("status"))
    if value == "SUCCEEDED":
        return DONE
    if value == "FAILED":
        reason = str(status.get("status_reason") or "").lower()
        return None if "dependent job" in reason else FAILED
    return IN_FLIGHT


def _state(
    run_id: str, records: _Records, find_single: Callable[[dict[str, Any]], bool]
) -> str | None:
    """The run's state from its records; None when nothing (live) says anything about it.

    Its newest submission counts (an array's child entry, or its own record): the
    status.json of that job decides; a job whose events have not come yet is in flight.
    """
    status = records.statuses.get(run_id)
    # (submitted at, attempt, job id): timestamps are to the second, so two submissions in
    # one second are told apart by the attempt counter, never by the job ids' random order.
    submissions: list[tuple[str, int, str | None]] = [
        (
            str(array.get("submitted_at") or ""),
            int(child.get("attempt") or 1),
            f"{array['job_id']}:{child.get('array_index')}",
        )
        for array, child in records.memberships.get(run_id, [])
    ]
    own = records.requests.get(run_id)
    if own is not None and not own.get("children"):
        job_id = own.get("job_id")
        if not job_id and own.get("parent_run_id") is None and find_single(own):
            job_id = "found in Batch"  # submitted, but its record never got the id
        submissions.append(
            (str(own.get("submitted_at") or ""), int(own.get("attempt") or 1), job_id or None)
        )
    latest = max(submissions, key=lambda s: s[:2], default=None)
    if latest is None or latest[2] is None:
        return _status_state(status) if status is not None else None
    if status is not None and status.get("job_id") == latest[2]:
        return _status_state(status)
    return IN_FLIGHT


def _attempts(run_id: str, records: _Records, bucket: str, parents: dict[str, Any]) -> int:
    """How often the run was submitted: the highest counter its records hold (a record
    from before counters existed counts once)."""
    counts = [int(child.get("attempt") or 1) for _, child in records.memberships.get(run_id, [])]
    own = records.requests.get(run_id)
    if own is not None:
        counts.append(int(own.get("attempt") or 1))
    parent_id = (records.statuses.get(run_id) or {}).get("parent_run_id")
    if parent_id:
        if parent_id not in parents:
            parents[parent_id] = get_json(bucket, record_key(parent_id, "request.json")) or {}
        for child in parents[parent_id].get("children") or []:
            if child.get("run_id") == run_id:
                counts.append(int(child.get("attempt") or 1))
    if not counts and run_id in records.statuses:
        counts.append(1)
    return max(counts, default=0)


def classify(
    request: JobRequest, inputs: Sequence[CampaignInput], deployment: Deployment
) -> Classification:
    """Each input against the run records: what is done, in flight, failed, or to run."""
    bucket = deployment.bucket

    def adopt(array: dict[str, Any]) -> dict[str, Any]:
        return _adopt_array(array, bucket)

    def find_single(record: dict[str, Any]) -> bool:
        return _job_exists(record, RUN_ID_TAG, str(record["run_id"]))

    noted = (load_campaign(bucket, campaign_id(request)) or {}).get("arrays") or []
    arrays = [str(a["run_id"]) for a in noted]
    records = _read_records(bucket, [i.run.run_id for i in inputs], arrays, adopt)
    for entry in noted:  # killed between an array's records and its note in the campaign's
        job_id = records.submitted.get(str(entry["run_id"]))
        if job_id and not entry.get("job_id"):
            _note_array(bucket, campaign_id(request), str(entry["run_id"]), job_id=job_id)
    result = Classification()
    parents: dict[str, Any] = {}
    for item in inputs:
        run_id = item.run.run_id
        state = _state(run_id, records, find_single) or TO_RUN
        known = run_id in records.statuses or run_id in records.requests
        known = known or run_id in records.memberships
        attempts = _attempts(run_id, records, bucket, parents) if known else 0
        if state == FAILED and attempts >= request.max_attempts_per_input and not request.rerun:
            state = OVER_CAP
        elif (state == FAILED and (request.retry_failed or request.rerun)) or (
            state == DONE and request.rerun
        ):
            state = TO_RUN
        result.states[run_id] = state
        result.attempts[run_id] = attempts
    return result


def _job_exists(record: Mapping[str, Any], tag: str, value: str) -> bool:
    """Whether the job a record was written for (before its SubmitJob) exists after all."""
    name, queue = record.get("job_name"), record.get("job_queue")
    if not name or not queue:
        return False
    _settle(record)
    return _find(str(queue), str(name), tag, value) is not None


def _settle(record: Mapping[str, Any]) -> None:
    """Wait until the record is ADOPT_AFTER_S old: ListJobs is eventually consistent.
    (The claim module's clock, which the fault-injection tests drive.)"""
    written = record.get("submitted_at")
    if not written:
        return
    age = idempotency.time.time() - datetime.fromisoformat(str(written)).timestamp()
    if age < ADOPT_AFTER_S:
        idempotency.time.sleep(ADOPT_AFTER_S - age)


def _find(queue: str, name: str, tag: str, value: str) -> dict[str, Any] | None:
    if tag == CLAIM_TAG:
        return find_claimed_job(queue, name, value)
    batch = aws.client("batch")
    pages = batch.get_paginator("list_jobs").paginate(
        jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
    )
    ids = [s["jobId"] for page in pages for s in page.get("jobSummaryList", [])]
    ids = [i for i in ids if ":" not in i]  # array children: never the job submitted
    for start in range(0, len(ids), 100):
        for job in batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]:
            if (job.get("tags") or {}).get(tag) == value:
                return job
    return None


def array_tag(campaign: str, array_run_id: str) -> str:
    """The claim tag of one campaign array: how a resumed submission recognises its job."""
    return hashlib.sha256(f"campaign#{campaign}#{array_run_id}".encode()).hexdigest()[:32]


def _adopt_array(array: dict[str, Any], bucket: str) -> dict[str, Any]:
    """An array noted before its SubmitJob: the job, if it was created, completes its
    records (the array's and the campaign's); else the array stays unsubmitted."""
    campaign = array.get("campaign_id")
    if not campaign or not array.get("job_name") or not array.get("job_queue"):
        return array
    _settle(array)
    tag = array_tag(str(campaign), str(array["run_id"]))
    found = _find(str(array["job_queue"]), str(array["job_name"]), CLAIM_TAG, tag)
    if found is None:
        return array
    log.info("array %s had been submitted as job %s; adopting it", array["run_id"], found["jobId"])
    adopted = {**array, "job_id": found["jobId"]}
    put_json(bucket, record_key(str(array["run_id"]), "request.json"), adopted)
    _note_array(bucket, str(campaign), str(array["run_id"]), job_id=found["jobId"])
    return adopted


# -- the plan ---------------------------------------------------------------------------


class CostCapExceeded(RequestError):
    """The estimate of what would run is over ``max_cost_usd``: nothing is submitted."""


@dataclass
class CampaignPlan:
    """What :func:`submit_campaign` will do, and what it will cost (nothing sent yet)."""

    campaign_id: str
    request: JobRequest
    classification: Classification
    arrays: list[SubmissionPlan]
    estimate_usd: float
    unpriced: int  # recordings to run whose cost is unknown (no size, or no type holds them)
    #: Run id -> USD for the monthly budget's ledger: the estimate, or for an unpriced run
    #: its time limit on the cheapest type it fits (what it can cost at most).
    run_estimates: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return self.classification.counts

    @property
    def to_run(self) -> int:
        return sum(len(a.runs) for a in self.arrays)


def _estimate(
    request: JobRequest, inputs: Sequence[CampaignInput], channels: int, duration_s: float | None
) -> tuple[float, int, dict[str, float]]:
    """Total USD (``spikebatch estimate``'s numbers), how many have none, and each run's
    figure for the budget's ledger; one estimate per distinct size, since recordings of one
    size cost the same."""
    by_size: dict[int | None, list[CampaignInput]] = defaultdict(list)
    for item in inputs:
        by_size[item.size].append(item)
    total, unpriced, per_run = 0.0, 0, {}
    ceiling: float | None = None
    for size, items in by_size.items():
        [row] = estimate_runs(request, [RecordingSize("input", size, duration_s)], channels)
        if row.estimate is None:
            unpriced += len(items)
            if ceiling is None:
                ceiling = budget.ceiling_usd(request)
            usd = ceiling
        else:
            total += row.estimate.usd * len(items)
            usd = row.estimate.usd
        per_run |= {item.run.run_id: round(usd, 4) for item in items}
    return total, unpriced, per_run


def _array_run_id(request: JobRequest, campaign: str, runs: Sequence[PlannedRun]) -> str:
    digest = hashlib.sha256("\n".join(r.run_id for r in runs).encode()).hexdigest()[:8]
    return request_run_id(request, f"campaign/{campaign}/{ARRAY_PREFIX}{digest}-{len(runs)}")


def plan_campaign(
    request: JobRequest,
    deployment: Deployment,
    inputs: Sequence[CampaignInput],
    classification: Classification,
    *,
    channels: int = NEUROPIXELS_CHANNELS,
    duration_s: float | None = None,
) -> CampaignPlan:
    """The arrays to submit (what is to run, in order), each a plan of its own."""
    cid = campaign_id(request)
    todo = [i for i in inputs if classification.states.get(i.run.run_id) == TO_RUN]
    chunk = min(MAX_ARRAY_SIZE, request.max_concurrent_jobs or MAX_ARRAY_SIZE)
    arrays = []
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        runs = [i.run for i in part]
        sizes = {
            key: i.size
            for i in part
            if i.size
            and (
                key := i.run.input_env.get(Env.DANDI_ASSET_PATH.value)
                or i.run.input_env.get(Env.INPUT_URI.value)
            )
        }
        arrays.append(
            plan_runs(
                request,
                deployment,
                runs,
                run_id=_array_run_id(request, cid, runs),
                input_sizes=sizes,
            )
        )
    usd, unpriced, per_run = _estimate(request, todo, channels, duration_s)
    return CampaignPlan(cid, request, classification, arrays, usd, unpriced, per_run)


def check_budget(plan: CampaignPlan) -> None:
    """Refuse the whole submission (one line) when its estimate is over the cap."""
    cap = plan.request.max_cost_usd
    if cap is None or plan.estimate_usd <= cap:
        return
    raise CostCapExceeded(
        [
            FieldError(
                "max_cost_usd",
                f"the estimate for {plan.to_run:,} runs is ${plan.estimate_usd:,.2f}, over the"
                f" cap of ${cap:,.2f}: nothing submitted",
            )
        ]
    )


# -- the campaign record ----------------------------------------------------------------


def campaign_key(campaign: str) -> str:
    return f"{CAMPAIGNS_PREFIX}{campaign}/campaign.json"


def load_campaign(bucket: str, campaign: str) -> dict[str, Any] | None:
    return get_json(bucket, campaign_key(campaign))


def _write_plan(bucket: str, plan: CampaignPlan, submitted_by: str) -> dict[str, Any]:
    """The campaign record with this submission's plan (its arrays are kept); returns it."""
    request = plan.request.model_dump(mode="json", exclude_none=True)

    def change(old: dict[str, Any] | None) -> dict[str, Any]:
        old = old or {}
        return {
            **old,
            "campaign_id": plan.campaign_id,
            "created_at": old.get("created_at") or now(),
            "updated_at": now(),
            "submitted_by": submitted_by,
            "request": request,
            "max_cost_usd": plan.request.max_cost_usd,
            "max_concurrent_jobs": plan.request.max_concurrent_jobs,
            "estimate_usd": round(plan.estimate_usd, 2),
            "unpriced": plan.unpriced,
            "counts": plan.counts,
            "arrays": list(old.get("arrays") or []),
        }

    stored, _ = update_json(bucket, campaign_key(plan.campaign_id), change)
    return stored or {}


def _note_array(bucket: str, campaign: str, run_id: str, **fields: Any) -> None:
    """Add or update one array's entry in the campaign record (a conditional write)."""

    def change(old: dict[str, Any] | None) -> dict[str, Any]:
        old = old or {"campaign_id": campaign, "created_at": now(), "arrays": []}
        arrays = list(old.get("arrays") or [])
        mine = [i for i, a in enumerate(arrays) if a.get("run_id") == run_id]
        if mine:
            arrays[mine[0]] = {**arrays[mine[0]], **fields}
        else:
            arrays.append({"run_id": run_id, **fields})
        return {**old, "arrays": arrays, "updated_at": now()}

    update_json(bucket, campaign_key(campaign), change)


# -- submission ---------------------------------------------------------------------------


@dataclass
class CampaignResult:
    """What one submission did: the jobs it created, and whether it stopped early."""

    campaign_id: str
    jobs: list[tuple[SubmissionPlan, SubmittedJob]] = field(default_factory=list)
    remaining: int = 0  # arrays left for a follow-up (the Lambda's time ran short)
    continuation: str | None = None  # where the follow-up request was written


def _last_job(record: Mapping[str, Any]) -> str | None:
    """The campaign's newest array, if Batch still has it queued or running: a resumed
    submission's first array waits for it. Not a finished one: a failed dependency would
    fail the new array at once (and Batch forgets old jobs)."""
    arrays = record.get("arrays") or []
    submitted = [a for a in arrays if a.get("job_id")]
    if not submitted:
        return None
    job_id = str(submitted[-1]["job_id"])
    jobs = aws.client("batch").describe_jobs(jobs=[job_id])["jobs"]
    return job_id if jobs and jobs[0].get("status") not in TERMINAL else None


@contextlib.contextmanager
def campaign_claim(table: str | None, campaign: str) -> Iterator[Claim | None]:
    """One submission of a campaign at a time (CLI and Lambda alike), under a leased claim
    (:mod:`.idempotency`) that :func:`submit_campaign` renews after each array. Another
    holder raises ClaimBusy; the claim is freed at the end, for the next submission."""
    if table is None:
        yield None
        return
    claim = acquire(table, f"campaign#{campaign}")
    if not isinstance(claim, Claim):  # never settled by us; a foreign item: do not work under it
        raise idempotency.ClaimBusy(f"campaign#{campaign} is marked {claim}")
    try:
        yield claim
    finally:
        release_quietly(claim)


def submit_campaign(
    plan: CampaignPlan,
    deployment: Deployment,
    *,
    submitted_by: str,
    deadline: float | None = None,
    claim: Claim | None = None,
    on_array: Callable[[SubmissionPlan, SubmittedJob], None] | None = None,
    request_claim: Claim | None = None,
) -> CampaignResult:
    """Submit the plan's arrays in order, each depending on the previous one.

    ``deadline`` (``time.monotonic()`` seconds, the Lambda's): after the first array (so
    that every invocation makes progress), no array is started when less than
    :data:`TIME_MARGIN_S` (or twice the slowest array so far) is left; the caller carries
    on with :func:`write_continuation`. An invocation killed anyway is resumed like any
    other. ``claim`` (the campaign's) is renewed after each array. ``request_claim`` (the
    S3 trigger's, on the request object) notes each array's job name, queue and tag before
    its SubmitJob, as single jobs are noted: a retry that can no longer read the request
    still finds the job (``upload_trigger``).
    """
    bucket = deployment.bucket
    cid = plan.campaign_id
    record = _write_plan(bucket, plan, submitted_by)
    result = CampaignResult(cid)
    previous = _last_job(record) if plan.arrays else None
    slowest = 0.0
    for index, array in enumerate(plan.arrays):
        left = None if deadline is None or index == 0 else deadline - time.monotonic()
        if left is not None and left < max(TIME_MARGIN_S, 2 * slowest):
            result.remaining = len(plan.arrays) - index
            log.info("campaign %s: %d arrays left for a follow-up", cid, result.remaining)
            break
        started = time.monotonic()
        job = _submit_array(array, deployment, plan, previous, submitted_by, request_claim)
        result.jobs.append((array, job))
        previous = job.job_id
        if claim is not None:
            claim.note(campaign_id=cid, arrays_submitted=str(len(result.jobs)))
        if on_array is not None:
            on_array(array, job)
        slowest = max(slowest, time.monotonic() - started)
    return result


def _submit_array(
    array: SubmissionPlan,
    deployment: Deployment,
    plan: CampaignPlan,
    depends_on: str | None,
    submitted_by: str,
    request_claim: Claim | None = None,
) -> SubmittedJob:
    """Note the array in the campaign record, submit it (records, manifest, SubmitJob,
    records again), then note its job id."""
    bucket, cid = deployment.bucket, plan.campaign_id
    request = dict(array.submit_job)
    request["tags"] = {**request["tags"], CLAIM_TAG: array_tag(cid, array.run_id)}
    if depends_on:
        request["dependsOn"] = [{"jobId": depends_on}]
    array = replace(array, submit_job=request)
    attempts = {r.run_id: plan.classification.attempts.get(r.run_id, 0) + 1 for r in array.runs}
    entry = {
        "size": len(array.runs),
        "manifest_key": array.manifest_key,
        "depends_on": depends_on,
        "job_id": None,
        "job_name": request["jobName"],
        "job_queue": request["jobQueue"],
        "noted_at": now(),
    }
    _note_array(bucket, cid, array.run_id, **entry)
    if request_claim is not None:
        tag = request["tags"][CLAIM_TAG]
        request_claim.note(job_name=request["jobName"], job_queue=request["jobQueue"], job_tag=tag)
    job = submit(
        array,
        deployment,
        submitted_by=submitted_by,
        child_records=False,
        extra={"campaign_id": cid},
        attempts=attempts,
    )
    try:
        _note_array(bucket, cid, array.run_id, job_id=job.job_id, submitted_at=now())
    except (ClientError, BotoCoreError) as exc:
        # The job exists and its array record names it; a resumed submission adopts it.
        raise RecordsIncomplete(f"job {job.job_id} exists; the campaign record lacks it") from exc
    return job


def write_continuation(bucket: str, plan: CampaignPlan, result: CampaignResult) -> str:
    """The request again under ``requests/continue/``: its S3 event starts a follow-up
    invocation that resumes the campaign (skipping what this one submitted)."""
    key = f"{CONTINUATIONS_PREFIX}{plan.campaign_id}-{len(result.jobs)}-of-{len(plan.arrays)}.json"
    document = plan.request.model_dump(mode="json", exclude_none=True)
    put_json(bucket, key, document)
    result.continuation = f"s3://{bucket}/{key}"
    return result.continuation


def submit_request(
    request: JobRequest,
    deployment: Deployment,
    inputs: Sequence[CampaignInput],
    *,
    submitted_by: str,
    table: str | None,
    channels: int = NEUROPIXELS_CHANNELS,
    duration_s: float | None = None,
    dry_run: bool = False,
    deadline: float | None = None,
    on_plan: Callable[[CampaignPlan], None] | None = None,
    on_array: Callable[[SubmissionPlan, SubmittedJob], None] | None = None,
    request_claim: Claim | None = None,
) -> tuple[CampaignPlan, CampaignResult | None]:
    """The whole submission, for the CLI and the submit Lambda alike: under the campaign's
    claim, classify, plan (``on_plan`` shows it before anything is sent), keep to the cost
    cap, submit; a follow-up request carries on what ``deadline`` left."""
    with campaign_claim(None if dry_run else table, campaign_id(request)) as held:
        classification = classify(request, inputs, deployment)
        plan = plan_campaign(
            request, deployment, inputs, classification, channels=channels, duration_s=duration_s
        )
        if on_plan is not None:
            on_plan(plan)
        if dry_run:
            return plan, None
        check_budget(plan)
        # The month's budget (and its brake): refused here, or the estimates are entered in
        # the ledger, and taken back if the submission fails before any job can exist.
        entered = budget.check_monthly_budget(
            deployment.bucket, plan.run_estimates, deployment.monthly_budget_usd
        )
        with entered.kept_if_submitted():
            result = submit_campaign(
                plan,
                deployment,
                submitted_by=submitted_by,
                deadline=deadline,
                claim=held,
                on_array=on_array,
                request_claim=request_claim,
            )
        if result.remaining:
            write_continuation(deployment.bucket, plan, result)
    return plan, result

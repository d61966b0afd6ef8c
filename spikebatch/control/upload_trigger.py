"""S3 upload → Batch: what the submit Lambda does with one S3 event, as plain functions.

``requests/**.json`` is a job-request file; ``uploads/**.nwb`` is a recording to sort with
the stack's default sorter, and so is ``uploads/**.ap.meta``: one SpikeGLX probe, whose
``.meta`` SpikeGLX (and the user) writes after its ``.bin``. A bad request, an upload that
is not a complete NWB (HDF5) file, or a ``.meta`` whose ``.bin`` is missing or of the wrong
size, starts no job and leaves ``errors/<name>.json`` saying what is wrong, field by
field. Malformed events never raise: each yields an outcome with an error object.

Exactly one job per object version, whatever instant the Lambda dies at (README, "Uploads
under faults"): each version is claimed in DynamoDB under a lease that outlives any
invocation (:mod:`.idempotency`); a claim whose work failed before SubmitJob is released
and the error re-raised so that Lambda's retry tries again; a retry that takes over a dead
invocation's claim first looks for the job that invocation may have submitted
(:func:`~spikebatch.control.submission.submit` under a claim).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, S3Event
from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.contract import ERRORS_PREFIX, REQUESTS_PREFIX, UPLOADS_PREFIX
from spikebatch.control import budget, campaign
from spikebatch.control.dandi_assets import (
    DandiLookupError,
    DandiUnavailableError,
    resolve_request_assets,
)
from spikebatch.control.idempotency import (
    DONE,
    REJECTED,
    Claim,
    acquire,
    release_quietly,
    settle_quietly,
)
from spikebatch.control.nwb_check import HEAD_BYTES, NotAnNwbError, check_head
from spikebatch.control.request import (
    MAX_REQUEST_BYTES,
    FieldError,
    JobRequest,
    RequestError,
    parse_request,
)
from spikebatch.control.submission import (
    Deployment,
    JobMayExist,
    find_claimed_job,
    plan_submission,
    submit,
)
from spikebatch.input_format import spikeglx_ap_part, spikeglx_pair_problem

log = logging.getLogger(__name__)

MAX_META_BYTES = 1024 * 1024
"""A SpikeGLX ``.meta`` is a few KiB of ``key=value`` lines; a larger upload is refused unread."""


@dataclass(frozen=True, slots=True)
class S3Object:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    sequencer: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def idempotency_key(self) -> str:
        """One per upload: the version id (the data bucket is versioned), else the ETag and
        S3's per-PUT ``sequencer``, so that uploading the same bytes again is a new upload
        while a redelivered event is not."""
        if self.version_id:
            return f"{self.uri}#{self.version_id}"
        return f"{self.uri}#{self.etag or 'no-etag'}#{self.sequencer or 'no-sequencer'}"


@dataclass
class Outcome:
    """What happened to one S3 object (or to an event that named none)."""

    status: str  # submitted | recovered | skipped | rejected | duplicate | ignored
    object: str | None = None
    run_ids: list[str] = field(default_factory=list)
    job_id: str | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    error_file: str | None = None
    #: A request is a campaign: its id, the plan's counts, every job it submitted, and
    #: the follow-up request when the time limit left arrays for another invocation.
    campaign_id: str | None = None
    counts: dict[str, int] | None = None
    job_ids: list[str] = field(default_factory=list)
    continuation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


class EventShapeError(ValueError):
    pass


_SHAPE_ERRORS = (EventShapeError, KeyError, TypeError, AttributeError, ValueError)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _s3_object(
    bucket: Any, key: Any, version_id: Any, etag: Any, size: Any, sequencer: Any = None
) -> S3Object:
    """An S3Object from event fields, refusing anything S3 itself could not have sent."""
    if not isinstance(bucket, str) or not isinstance(key, str) or not key:
        raise EventShapeError("bucket name and object key must be non-empty strings")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise EventShapeError("the object key is not valid Unicode") from None
    if len(encoded) > 1024:
        raise EventShapeError("the object key is longer than S3 allows (1024 bytes)")
    if isinstance(etag, str) and not (etag.isascii() and etag.isprintable()):
        # It becomes an If-Match header, which cannot carry it; S3 ETags are hex digits.
        raise EventShapeError("the ETag is not one S3 could have sent")
    return S3Object(
        bucket=bucket,
        key=key,
        version_id=_text(version_id),
        etag=_text(etag),
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        sequencer=_text(sequencer),
    )


def _s3_objects(event: Any) -> list[S3Object | Outcome]:
    """S3 notifications (Records[]) and EventBridge "Object Created" events, via Powertools.

    Each record becomes an :class:`S3Object`, or a rejected :class:`Outcome` saying why not.
    """
    if not isinstance(event, Mapping):
        raise EventShapeError(f"an event is a JSON object, got {type(event).__name__}")
    if "detail-type" in event:
        bridge = EventBridgeEvent(dict(event))
        if bridge.detail_type != "Object Created":
            raise EventShapeError(f"unexpected EventBridge event {bridge.detail_type!r}")
        detail, obj = bridge.detail, bridge.detail["object"]
        return [
            _s3_object(
                detail["bucket"]["name"],
                obj["key"],
                obj.get("version-id"),
                obj.get("etag"),
                obj.get("size"),
                obj.get("sequencer"),
            )
        ]
    raw_records = event.get("Records")
    if not isinstance(raw_records, list) or not raw_records:
        raise EventShapeError("no Records list")
    found: list[S3Object | Outcome] = []
    for record in S3Event(dict(event)).records:
        try:
            if not str(record.event_name).startswith("ObjectCreated:"):
                raise EventShapeError(f"not an object creation: {record.event_name!r}")
            raw = record.s3.get_object.raw_event
            key = raw["key"]
            found.append(
                _s3_object(
                    record.s3.bucket.name,
                    unquote_plus(key) if isinstance(key, str) else key,  # S3 URL-encodes keys
                    raw.get("versionId"),
                    raw.get("eTag"),
                    raw.get("size"),
                    raw.get("sequencer"),
                )
            )
        except _SHAPE_ERRORS as exc:
            found.append(_bad_event(exc))
    return found


def _bad_event(exc: Exception) -> Outcome:
    detail = exc.args[0] if isinstance(exc, EventShapeError) and exc.args else f"bad field {exc}"
    message = f"not an S3 object-created event: {detail}"
    return Outcome("rejected", errors=[{"field": "event", "message": message}])


def handle_event(
    event: Any, deployment: Deployment, *, table: str, deadline: float | None = None
) -> dict[str, Any]:
    """Process every object an S3 event names; never raises for a malformed event.

    ``deadline`` (``time.monotonic()`` seconds) is when the Lambda's time runs out."""
    try:
        objects = _s3_objects(event)
    except _SHAPE_ERRORS as exc:
        objects = [_bad_event(exc)]
    results = []
    for item in objects:
        if isinstance(item, Outcome):
            results.append(_logged(item).to_json())
        else:
            outcome = handle_object(item, deployment, table=table, deadline=deadline)
            results.append(outcome.to_json())
    return {"results": results}


def handle_object(
    obj: S3Object, deployment: Deployment, *, table: str, deadline: float | None = None
) -> Outcome:
    """Route one created object: a request file, an upload, or something to ignore."""
    if obj.bucket != deployment.bucket:
        return _logged(Outcome("ignored", obj.uri, errors=[_err("bucket", "not the data bucket")]))
    work = _work_for(obj.key)
    if work is None:
        return _logged(Outcome("ignored", obj.uri, errors=[_err("key", EXPECTED_KEYS)]))
    claim = acquire(table, obj.idempotency_key, object=obj.uri)  # ClaimBusy: retry later
    if not isinstance(claim, Claim):
        return _logged(Outcome("duplicate", obj.uri))
    try:
        outcome = _submit(obj, deployment, work, claim, table=table, deadline=deadline)
    except JobMayExist:
        raise  # keep the claim: whoever takes it over after the lease adopts the job
    except BaseException:
        release_quietly(claim)  # nothing was submitted: let Lambda's retry claim it again
        raise
    # If this fails, the job still exists: whoever takes the claim over adopts it.
    state = REJECTED if outcome.status == "rejected" else DONE
    settle_quietly(claim, state, **({"job_id": outcome.job_id} if outcome.job_id else {}))
    return _logged(outcome)


EXPECTED_KEYS = "expected requests/**.json, uploads/**.nwb or uploads/**.ap.meta (SpikeGLX)"
#: Reads the object an event names: the request to submit, and the recording's bytes.
Work = Callable[[S3Object, Deployment], tuple[JobRequest, int | None]]


def _work_for(key: str) -> Work | None:
    """What a created key is: a request file, an NWB or SpikeGLX upload, or (None) neither
    (an uploaded ``.ap.bin``, LF and NI streams wait for, or are not, a ``.ap.meta``)."""
    if key.startswith(REQUESTS_PREFIX) and key.endswith(".json"):
        return _request_from_file
    if not key.startswith(UPLOADS_PREFIX):
        return None
    if key.lower().endswith(".nwb"):
        return _request_from_upload
    if spikeglx_ap_part(key) == "meta":
        return _request_from_spikeglx
    return None


def _err(field_name: str, message: str) -> dict[str, str]:
    return {"field": field_name, "message": message}


def _logged(outcome: Outcome) -> Outcome:
    level = logging.INFO if outcome.status in _ROUTINE else logging.WARNING
    log.log(
        level, f"{outcome.status} {outcome.object or 'event'}", extra={"outcome": outcome.to_json()}
    )
    return outcome


_ROUTINE = ("submitted", "recovered", "duplicate", "skipped")
#: Above this many runs, an outcome lists the arrays' run ids instead of every child's.
OUTCOME_RUN_IDS = 1000


def _submit(
    obj: S3Object,
    deployment: Deployment,
    work: Work,
    claim: Claim,
    *,
    table: str,
    deadline: float | None,
) -> Outcome:
    try:
        request, size = work(obj, deployment)
        if work is _request_from_file:
            return _submit_campaign(obj, request, deployment, claim, table=table, deadline=deadline)
        assets = resolve_request_assets(request, api_url=deployment.dandi_api_url)
        sizes = {a.path: a.size for a in assets}
        if request.input_uri is not None and size:  # an upload: the recording's bytes
            sizes[request.input_uri] = size
        plan = plan_submission(
            request, deployment, assets=[a.path for a in assets] or None, input_sizes=sizes
        )
        estimates = budget.plan_estimates(plan, sizes)
        entered = budget.check_monthly_budget(
            deployment.bucket, estimates, deployment.monthly_budget_usd
        )
    except budget.BudgetRefusal as exc:
        outcome = _reject_unless_submitted(obj, deployment, claim, exc.errors)
        if outcome.status == "rejected":
            budget.notify_refusal(deployment.failure_topic_arn, obj.uri, exc)
        return outcome
    except RequestError as exc:
        return _reject_unless_submitted(obj, deployment, claim, exc.errors)
    except DandiUnavailableError:
        raise  # the archive may answer a minute from now: Lambda retries
    except DandiLookupError as exc:
        return _reject_unless_submitted(obj, deployment, claim, [FieldError(exc.field, str(exc))])
    with entered.kept_if_submitted():
        job = submit(plan, deployment, submitted_by=obj.uri, claim=claim)
    status = "recovered" if job.adopted else "submitted"
    return Outcome(status, obj.uri, [r.run_id for r in plan.runs], job.job_id)


def _submit_campaign(
    obj: S3Object,
    request: JobRequest,
    deployment: Deployment,
    claim: Claim,
    *,
    table: str,
    deadline: float | None,
) -> Outcome:
    """A request file is a campaign: skip what is done or in flight, keep to the cost cap,
    submit the rest in arrays; what the time limit leaves goes on in a follow-up."""
    inputs = campaign.resolve_inputs(request, api_url=deployment.dandi_api_url)
    plan, result = campaign.submit_request(
        request,
        deployment,
        inputs,
        submitted_by=obj.uri,
        table=table,
        deadline=deadline,
        request_claim=claim,
    )
    assert result is not None  # not a dry run
    runs = [r.run_id for array, _ in result.jobs for r in array.runs]
    if len(runs) > OUTCOME_RUN_IDS:
        runs = [array.run_id for array, _ in result.jobs]
    status, job_id = "submitted" if result.jobs else "skipped", None
    if not result.jobs:  # a retry of an invocation that died after its SubmitJob(s)?
        name, queue = claim.replaced.get("job_name"), claim.replaced.get("job_queue")
        tag = claim.replaced.get("job_tag")
        found = find_claimed_job(queue, name, tag) if name and queue and tag else None
        if found is not None:
            status, job_id = "recovered", found["jobId"]
    return Outcome(
        status,
        obj.uri,
        runs,
        result.jobs[0][1].job_id if result.jobs else job_id,
        campaign_id=plan.campaign_id,
        counts=plan.counts,
        job_ids=[job.job_id for _, job in result.jobs],
        continuation=result.continuation,
    )


def _reject_unless_submitted(
    obj: S3Object, deployment: Deployment, claim: Claim, errors: list[FieldError]
) -> Outcome:
    """Reject, unless an interrupted invocation had already submitted the job (and the
    object, or DANDI, changed since): that job stands, and the upload is not rejected."""
    name, queue = claim.replaced.get("job_name"), claim.replaced.get("job_queue")
    tag = claim.replaced.get("job_tag") or claim.tag  # a campaign's array: its own tag
    found = find_claimed_job(queue, name, tag) if name and queue else None
    if found is None:
        return _reject(obj, deployment, errors)
    log.warning("%s no longer plans (%s); job %s had been submitted", obj.uri, errors, name)
    return Outcome(
        "recovered", obj.uri, job_id=found["jobId"], errors=[e.to_json() for e in errors]
    )


def _request_from_file(obj: S3Object, deployment: Deployment) -> tuple[JobRequest, None]:
    if obj.size is not None and obj.size > MAX_REQUEST_BYTES:
        raise RequestError(
            [FieldError("request", f"{obj.size} bytes; a request is at most {MAX_REQUEST_BYTES}")]
        )
    body = _read(obj)["Body"].read(MAX_REQUEST_BYTES + 1)
    request = parse_request(
        body, limits=deployment.limits, default_sorter=deployment.default_sorter
    )
    return request, None


def _read(obj: S3Object, *, first_bytes: int | None = None) -> Any:
    """GetObject of exactly the version the event announced (only its first bytes if asked)."""
    extra = {"VersionId": obj.version_id} if obj.version_id else {}
    if not extra and obj.etag:
        extra = {"IfMatch": f'"{obj.etag.strip(chr(34))}"'}
    if first_bytes is not None:
        extra["Range"] = f"bytes=0-{first_bytes - 1}"
    field_name = "request" if first_bytes is None else "upload"
    try:
        return aws.client("s3").get_object(Bucket=obj.bucket, Key=obj.key, **extra)
    except ClientError as exc:
        code = aws.error_code(exc)
        # Without s3:ListBucket, S3 answers 403 (not 404) for a key that does not exist.
        if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "403", "AccessDenied"}:
            raise RequestError(
                [FieldError(field_name, f"the object is gone or unreadable ({code})")]
            ) from None
        if code in {"PreconditionFailed", "412"}:
            raise RequestError(
                [FieldError(field_name, "replaced since this event; the newer upload counts")]
            ) from None
        if code == "InvalidRange":  # a ranged GET of an empty object
            raise RequestError([FieldError(field_name, "the upload is empty (0 bytes)")]) from None
        raise


def _object_size(answer: Mapping[str, Any]) -> int:
    """The whole object's size from a (ranged) GetObject's answer."""
    total = str(answer.get("ContentRange", "")).rpartition("/")[2]
    return int(total) if total.isdigit() else int(answer.get("ContentLength", 0))


def _request_from_upload(obj: S3Object, deployment: Deployment) -> tuple[JobRequest, int]:
    """An upload is sorted only if its first bytes start a complete NWB (HDF5) file."""
    answer = _read(obj, first_bytes=HEAD_BYTES)
    head = answer["Body"].read(HEAD_BYTES)
    size = _object_size(answer)
    try:
        check_head(head, size)
    except NotAnNwbError as exc:
        raise RequestError([FieldError("upload", str(exc))]) from None
    return parse_request({"input_uri": obj.uri, "sorter": deployment.default_sorter}), size


def _request_from_spikeglx(obj: S3Object, deployment: Deployment) -> tuple[JobRequest, int]:
    """A probe's ``.ap.meta`` is sorted only if the ``.bin`` beside it is complete (the
    size the ``.meta`` declares, whole int16 samples): a GPU never waits for a half upload."""
    name = PurePosixPath(obj.key).name
    answer = _read(obj, first_bytes=MAX_META_BYTES)
    if _object_size(answer) > MAX_META_BYTES:
        message = f"{name}: {_object_size(answer)} bytes; a SpikeGLX .meta is at most"
        raise RequestError([FieldError("upload", f"{message} {MAX_META_BYTES}")])
    text = answer["Body"].read(MAX_META_BYTES).decode("utf-8", errors="replace")
    bin_size = _size_of(obj.bucket, obj.key.removesuffix(".meta") + ".bin")
    problem = spikeglx_pair_problem(name, text, bin_size)
    if problem is not None or bin_size is None:
        raise RequestError([FieldError("upload", problem or f"{name}: no .bin")])
    request = parse_request(
        {"input_uri": obj.uri, "data_type": "spikeglx", "sorter": deployment.default_sorter}
    )
    return request, bin_size


def _size_of(bucket: str, key: str) -> int | None:
    """HeadObject's size of ``key``; None when there is none (the role lists uploads/, so a
    missing key is a 404, not a 403)."""
    try:
        return int(aws.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        code = aws.error_code(exc)
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        if code in {"403", "AccessDenied"}:
            name = PurePosixPath(key).name
            raise RequestError([FieldError("upload", f"{name}: unreadable ({code})")]) from None
        raise


def _error_key(obj: S3Object) -> str:
    name = obj.key.removeprefix(REQUESTS_PREFIX).removesuffix(".json")
    return f"{ERRORS_PREFIX}{name}.json"


def _what_to_do(obj: S3Object, errors: list[FieldError]) -> str:
    if any(e.field == "budget" for e in errors):
        return "upload it again when the monthly budget allows (README: Budgets)"
    if _work_for(obj.key) is _request_from_spikeglx:
        return "upload the complete .bin, then its .meta again (README: Uploading instead)"
    if obj.key.startswith(UPLOADS_PREFIX):
        return "upload the complete NWB file again (README: Uploading instead)"
    return "fix the fields above and upload the request again (README: Submit)"


def _reject(obj: S3Object, deployment: Deployment, errors: list[FieldError]) -> Outcome:
    key = _error_key(obj)
    document = {
        "object": obj.uri,
        "version_id": obj.version_id,
        "etag": obj.etag,
        "errors": [e.to_json() for e in errors],
        "rejected_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "what_to_do": _what_to_do(obj, errors),
    }
    aws.client("s3").put_object(
        Bucket=deployment.bucket,
        Key=key,
        Body=json.dumps(document, indent=1, ensure_ascii=False).encode(),
        ContentType="application/json",
    )
    return Outcome(
        "rejected",
        obj.uri,
        errors=document["errors"],
        error_file=f"s3://{deployment.bucket}/{key}",
    )


def handle(event: Any, env: Mapping[str, str], *, deadline: float | None = None) -> dict[str, Any]:
    """The submit Lambda's whole job: settings from its environment, then the event."""
    table = env.get("IDEMPOTENCY_TABLE")
    if not table:
        raise RuntimeError("missing environment variable: IDEMPOTENCY_TABLE")
    return handle_event(event, Deployment.from_env(env), table=table, deadline=deadline)

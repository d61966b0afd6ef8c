"""Month-to-date spend and the monthly budget: what refuses new work (README, "Budgets").

AWS Budgets' own figures lag the spending by 8-12 hours, so submissions are refused on
spikebatch's figure instead: a per-month ledger in the data bucket. A submission enters
each run's estimate (:func:`check_monthly_budget`); the run-record Lambda replaces it with
the run's actual cost when the run ends (:func:`record_finished`). Month-to-date spend is
the finished runs' actual cost plus the estimates of the submitted and running ones.

The ledger of a month is ``spend/<YYYY-MM>/<shard>.json``, SHARDS objects chosen by a hash
of the run id, so that reading it is SHARDS GETs however many runs there are, and that
thousands of runs ending at once (an array cancelled) do not all rewrite one object (those
that still collide wait a random while and try again, :data:`CONFLICT_PATIENCE_S`). Each
change is :func:`~spikebatch.control.records.update_json`'s conditional read-modify-write,
and each is idempotent: a finished job is counted once however often its event arrives,
and entering a run again (Lambda's retry) replaces its estimate instead of adding to it.

A run counts in the month its job was created (Batch's ``createdAt``; at submission, the
current UTC month): a run started on the last evening of a month stays in that month.
The check is not a lock across shards: submissions racing within the same instant can
each pass, overshooting by at most their own estimates (the brake still stands behind).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spikebatch import aws, cost
from spikebatch.contract import BRAKE_KEY, SPEND_PREFIX, Env
from spikebatch.control.records import UpdateConflict, get_json, now, update_json
from spikebatch.control.request import FieldError, JobRequest, RequestError
from spikebatch.estimates import RecordingSize, estimate_runs, fitting_instance_types

if TYPE_CHECKING:
    from spikebatch.control.submission import SubmissionPlan

log = logging.getLogger(__name__)

SHARDS = 8
#: A ledger shard that other writers keep changing is retried after a random pause, for
#: this long in all (well inside the Lambdas' timeout), before the event fails and retries.
CONFLICT_PATIENCE_S = 8.0
#: A finished run keeps this many of its finished job ids (reruns of one run id add more).
_JOBS_KEPT = 20


def _update(bucket: str, key: str, change: Callable[[Any], Any]) -> tuple[Any, bool]:
    """:func:`update_json`, patient: thousands of runs ending at once (an array cancelled)
    contend for SHARDS objects, so a conflict waits a random while and tries again."""
    deadline = time.monotonic() + CONFLICT_PATIENCE_S
    while True:
        try:
            return update_json(bucket, key, change)
        except UpdateConflict:
            if time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.05, 0.5))


def month_of(when: datetime | None = None) -> str:
    """``YYYY-MM`` of ``when`` (default: now), in UTC like AWS billing."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m")


def shard_key(month: str, run_id: str) -> str:
    shard = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) % SHARDS
    return f"{SPEND_PREFIX}{month}/{shard:02d}.json"


def _shard_keys(month: str) -> list[str]:
    return [f"{SPEND_PREFIX}{month}/{shard:02d}.json" for shard in range(SHARDS)]


@dataclass(frozen=True, slots=True)
class MonthToDate:
    """One month's ledger, summed: the finished runs' cost and the others' estimates."""

    month: str
    actual_usd: float
    estimated_usd: float
    runs: int

    @property
    def total_usd(self) -> float:
        return self.actual_usd + self.estimated_usd


def month_to_date(
    bucket: str, month: str | None = None, *, entering: Collection[str] = ()
) -> MonthToDate:
    """The month's spend; the estimates of the runs in ``entering`` (about to be entered
    again) are left out so that a retried submission does not count itself twice."""
    month = month or month_of()
    with ThreadPoolExecutor(max_workers=SHARDS) as pool:
        shards = list(pool.map(lambda key: get_json(bucket, key), _shard_keys(month)))
    actual = estimated = 0.0
    runs = 0
    for shard in shards:
        for run_id, entry in ((shard or {}).get("runs") or {}).items():
            runs += 1
            actual += float(entry.get("actual_usd") or 0)
            if run_id not in entering:
                estimated += float(entry.get("estimated_usd") or 0)
    return MonthToDate(month, round(actual, 4), round(estimated, 4), runs)


class BudgetRefusal(RequestError):
    """New work refused for the budget's sake; the one error says why (field ``budget``)."""


class Braked(BudgetRefusal):
    """The budget brake holds (``brake.json``): the job queues take no work until
    ``spikebatch queues enable``, so nothing is submitted."""

    def __init__(self, record: Mapping[str, Any]):
        self.record = dict(record)
        message = (
            f"the budget brake holds since {record.get('braked_at')}: {record.get('reason')};"
            " the job queues take no work until `spikebatch queues enable`; nothing was"
            " submitted"
        )
        super().__init__([FieldError("budget", message)])


class BudgetExceeded(BudgetRefusal):
    """New work refused: month-to-date spend plus its estimate would exceed the budget."""

    def __init__(self, spent: MonthToDate, new_estimate_usd: float, monthly_budget_usd: float):
        self.month_to_date = spent
        self.new_estimate_usd = new_estimate_usd
        self.monthly_budget_usd = monthly_budget_usd
        message = (
            f"monthly budget reached: month-to-date spend ${spent.total_usd:.2f}"
            f" (finished runs ${spent.actual_usd:.2f} + estimates of unfinished runs"
            f" ${spent.estimated_usd:.2f}, {spent.month}) + this submission's estimate"
            f" ${new_estimate_usd:.2f} exceeds the monthly budget ${monthly_budget_usd:.2f};"
            " nothing was submitted (raise monthly_budget_usd, or wait for next month)"
        )
        super().__init__([FieldError("budget", message)])


@dataclass(frozen=True, slots=True)
class Entered:
    """Estimates entered in a month's ledger by :func:`check_monthly_budget`."""

    bucket: str
    month: str
    estimates: dict[str, float]
    #: The month's spend before them; None without a budget (nothing to compare, not read).
    before: MonthToDate | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def kept_if_submitted(self) -> Iterator[None]:
        """Take the estimates out again if the submission in the block fails before a job
        can exist (a job that may exist keeps them: it may run)."""
        from spikebatch.control.submission import JobMayExist

        try:
            yield
        except JobMayExist:
            raise
        except BaseException:
            try:
                _set_estimates(self.bucket, self.month, dict.fromkeys(self.estimates, 0.0))
            except Exception:
                log.warning("could not take back the estimates of %s", list(self.estimates))
            raise


def check_monthly_budget(
    bucket: str,
    estimates: Mapping[str, float],
    monthly_budget_usd: float | None,
    *,
    when: datetime | None = None,
) -> Entered:
    """Refuse with :class:`Braked` while the brake holds, and with :class:`BudgetExceeded`
    when month-to-date spend plus ``estimates`` (run id -> USD) would exceed
    ``monthly_budget_usd``; otherwise enter the estimates in this month's ledger, so that
    the next submission counts them. Without a budget (None) the month is not read, and the
    estimates are entered all the same: the figure is whole when a budget is set later."""
    brake = get_json(bucket, BRAKE_KEY)
    if brake is not None:
        raise Braked(brake)
    month = month_of(when)
    before = None
    if monthly_budget_usd is not None:
        before = month_to_date(bucket, month, entering=estimates)
        new = round(sum(estimates.values()), 4)
        if before.total_usd + new > monthly_budget_usd:
            raise BudgetExceeded(before, new, monthly_budget_usd)
    _set_estimates(bucket, month, estimates)
    return Entered(bucket, month, dict(estimates), before)


def _set_estimates(bucket: str, month: str, estimates: Mapping[str, float]) -> None:
    by_key: dict[str, dict[str, float]] = {}
    for run_id, usd in estimates.items():
        by_key.setdefault(shard_key(month, run_id), {})[run_id] = round(usd, 4)

    def update(key: str) -> None:
        def change(old: Any) -> Any:
            doc = old or {"month": month, "runs": {}}
            runs = dict(doc.get("runs") or {})
            for run_id, usd in by_key[key].items():
                entry = runs.get(run_id) or {"actual_usd": 0.0, "finished_jobs": []}
                runs[run_id] = {**entry, "estimated_usd": usd}
            return {**doc, "runs": runs, "updated_at": now()}

        _update(bucket, key, change)

    with ThreadPoolExecutor(max_workers=SHARDS) as pool:
        list(pool.map(update, by_key))


def record_finished(
    bucket: str,
    *,
    run_id: str,
    job_id: str,
    created_at_ms: int | None,
    actual_usd: float | None,
    started: bool,
) -> bool:
    """Replace a run's estimate with what its job cost; True if this call counted it.

    ``actual_usd`` is run.json's cost (instance price x wall time). Without one, a job that
    never started cost nothing, and one that started keeps its estimate as its cost.
    """
    created = datetime.fromtimestamp(created_at_ms / 1000, UTC) if created_at_ms else None
    month = month_of(created)

    def change(old: Any) -> Any:
        doc = old or {"month": month, "runs": {}}
        entry = (doc.get("runs") or {}).get(run_id) or {
            "estimated_usd": 0.0,
            "actual_usd": 0.0,
            "finished_jobs": [],
        }
        if job_id in entry.get("finished_jobs", []):
            return None  # a redelivered event: already counted
        if actual_usd is not None:
            spent = actual_usd
        else:
            spent = float(entry.get("estimated_usd") or 0) if started else 0.0
        entry = {
            "estimated_usd": 0.0,
            "actual_usd": round(float(entry.get("actual_usd") or 0) + spent, 4),
            "finished_jobs": [*entry.get("finished_jobs", []), job_id][-_JOBS_KEPT:],
        }
        return {**doc, "runs": {**(doc.get("runs") or {}), run_id: entry}, "updated_at": now()}

    _, wrote = _update(bucket, shard_key(month, run_id), change)
    return wrote


# -- what a submission is expected to cost --------------------------------------------------


def ceiling_usd(request: JobRequest) -> float:
    """A run whose length is unknown (an input of unknown size): its time limit on the
    cheapest instance type it fits, what one attempt can cost at most there."""
    prices = [
        cost.instance_price_per_hour(name, request.resources.spot)
        for name in fitting_instance_types(request)
    ]
    return min(p for p in prices if p is not None) * request.resources.timeout_hours


def plan_estimates(
    plan: SubmissionPlan,
    input_sizes: Mapping[str, int] | None = None,
    *,
    channels: int = cost.NEUROPIXELS_CHANNELS,
    duration_s: float | None = None,
) -> dict[str, float]:
    """Run id -> estimated USD for every run of ``plan``: :func:`spikebatch.estimates.
    estimate_runs` from the input's size (``input_sizes``, by asset path or input URI) or
    ``duration_s``; the time-limit ceiling where neither is known."""
    request = plan.request
    sizes = []
    for run in plan.runs:
        name = (
            run.input_env.get(Env.DANDI_ASSET_PATH.value)
            or run.input_env.get(Env.INPUT_URI.value)
            or request.input_uri
            or run.source
        )
        sizes.append(RecordingSize(name, (input_sizes or {}).get(name), duration_s))
    try:
        rows = estimate_runs(request, sizes, channels)
        ceiling = ceiling_usd(request)
    except ValueError as exc:
        raise RequestError([FieldError("resources", str(exc))]) from None
    return {
        run.run_id: round(row.estimate.usd if row.estimate else ceiling, 4)
        for run, row in zip(plan.runs, rows, strict=True)
    }


def notify_refusal(topic_arn: str | None, what: str, exc: BudgetRefusal) -> None:
    """One SNS message (the failure topic) saying that ``what`` was refused, and why."""
    if not topic_arn:
        return
    why = "the budget brake holds" if isinstance(exc, Braked) else "monthly budget reached"
    aws.client("sns").publish(
        TopicArn=topic_arn,
        Subject=f"spikebatch: submission refused, {why}",
        Message=f"{what} was not submitted.\n{exc.errors[0].message}",
    )

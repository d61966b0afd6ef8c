"""Following a campaign: how its children stand, what they cost, how fast they finish.

A campaign (``campaigns/<id>/campaign.json``, written by its submission) is several Batch
array jobs of up to 10,000 children each. A display that refreshes cannot read 12,000
children's records, so each question has one cheap source:

- **counts by state**: Batch's own, DescribeJobs on the array *parents* (100 per call),
  whose ``arrayProperties.statusSummary`` counts the children by state; for an array Batch
  no longer knows, the last count the run-record Lambda recorded in its ``status.json``;
- **cost and finish times**: the campaign's progress shards,
  ``campaigns/<id>/progress/<array-run-id>/<index % 16>.json``. When a child ends, the
  run-record Lambda adds its entry (state, actual cost from run.json, finish time, failure
  kind and reason) with S3 conditional writes (:func:`records.update_json`). An entry is
  keyed by the child, so a redelivered event or a retried invocation writes it again
  unchanged; 16 shards per array keep concurrent writers (a burst of failures) mostly out
  of each other's way and each object small. Reading a whole campaign is 16 GETs per
  array, in parallel.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from spikebatch.contract import CAMPAIGNS_PREFIX
from spikebatch.control.array_summary import child_row
from spikebatch.control.cancel import cancel_job, cancel_reason
from spikebatch.control.records import (
    get_json,
    live_statuses,
    now,
    put_json,
    record_key,
    update_json,
)

log = logging.getLogger(__name__)

#: Progress shards per array: a child's entry goes to shard ``array_index % SHARDS``.
SHARDS = 16
#: A failure's reason is kept to this many characters in its entry (the run's own records
#: keep all of it).
REASON_CHARS = 300
#: Throughput is measured over this window (or since the campaign began, if sooner).
RATE_WINDOW_S = 3600.0
#: Batch's states of an array child, in the order a display lists them.
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
NOT_SUBMITTED = "NOT SUBMITTED"
UNKNOWN = "UNKNOWN"


class CampaignNotFoundError(LookupError):
    """No ``campaigns/<id>/campaign.json`` in the bucket."""


def campaign_key(campaign_id: str, name: str) -> str:
    return f"{CAMPAIGNS_PREFIX}{campaign_id}/{name}"


def shard_key(campaign_id: str, array_run_id: str, shard: int) -> str:
    return campaign_key(campaign_id, f"progress/{array_run_id}/{shard}.json")


def load_campaign(bucket: str, campaign_id: str) -> dict[str, Any]:
    campaign = get_json(bucket, campaign_key(campaign_id, "campaign.json"))
    if campaign is None:
        raise CampaignNotFoundError(
            f"no campaign {campaign_id!r} in s3://{bucket}/{CAMPAIGNS_PREFIX}"
        )
    return dict(campaign)


@dataclass(frozen=True, slots=True)
class ArrayRef:
    """One array of the campaign, as campaign.json lists it."""

    run_id: str
    job_id: str | None
    size: int

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> ArrayRef:
        job_id = entry.get("job_id")
        return cls(str(entry["run_id"]), str(job_id) if job_id else None, int(entry["size"]))


def arrays_of(campaign: Mapping[str, Any]) -> list[ArrayRef]:
    return [ArrayRef.of(entry) for entry in campaign.get("arrays") or []]


# -- what the run-record Lambda adds when a child ends -----------------------------------


def finished_entry(
    child: Mapping[str, Any],
    status: Mapping[str, Any],
    run_json: Mapping[str, Any] | None,
    *,
    finished_at: float,
) -> dict[str, Any]:
    """A finished child's entry in its progress shard: the array summary's reading of its
    records (:func:`~.array_summary.child_row`: the worker decides success, Batch the
    failures the worker never saw), reduced to what a campaign's totals and page need."""
    row = child_row(child, status, run_json)
    kind = status.get("failure_kind")
    if row.status == "FAILED" and not kind:
        kind = "worker-error" if (run_json or {}).get("error") else "unclassified"
    return {
        "state": row.status,
        "usd": row.cost_usd,
        "at": round(finished_at),
        "kind": kind if row.status == "FAILED" else None,
        "reason": row.reason[:REASON_CHARS],
        "page": row.has_page,
        "job_id": status.get("job_id"),
        "created_at": status.get("created_at"),
    }


def with_entry(
    shard: Mapping[str, Any] | None, index: int, entry: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The shard with child ``index``'s entry set; None when that changes nothing (the same
    entry again) or when the shard already holds a newer job's outcome for that child (a
    run resubmitted under the same array: the older job's late event loses)."""
    children = dict((shard or {}).get("children") or {})
    old = children.get(str(index))
    if old == entry:
        return None
    newer = old and int(old.get("created_at") or 0) > int(entry.get("created_at") or 0)
    if newer and old.get("job_id") != entry.get("job_id"):
        return None
    children[str(index)] = dict(entry)
    return {**(shard or {}), "children": children}


def record_finished(
    bucket: str, campaign_id: str, array_run_id: str, index: int, entry: Mapping[str, Any]
) -> bool:
    """Put a finished child's entry into its shard (conditional read-modify-write); True
    when this call wrote it. Raises :class:`~.records.UpdateConflict` after repeated
    conflicts, so that the event is retried rather than the child left out."""
    key = shard_key(campaign_id, array_run_id, index % SHARDS)
    _, wrote = update_json(bucket, key, lambda old: with_entry(old, index, entry))
    return wrote


def load_entries(
    bucket: str, campaign_id: str, arrays: Sequence[ArrayRef]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every finished child's entry, per array run id then array index (GETs in parallel)."""
    keys = [(a.run_id, shard) for a in arrays for shard in range(SHARDS)]

    def one(item: tuple[str, int]) -> dict[str, Any] | None:
        return get_json(bucket, shard_key(campaign_id, *item))

    with ThreadPoolExecutor(max_workers=16) as pool:
        shards = list(pool.map(one, keys))
    out: dict[str, dict[int, dict[str, Any]]] = {a.run_id: {} for a in arrays}
    for (run_id, _), shard in zip(keys, shards, strict=True):
        for index, entry in ((shard or {}).get("children") or {}).items():
            out[run_id][int(index)] = entry
    return out


# -- where the campaign stands -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArrayState:
    """One array: Batch's counts of its children by state, and where they came from."""

    run_id: str
    job_id: str | None
    size: int
    status: str
    counts: dict[str, int]
    source: str  # "batch", "record" (the Lambda's last count), "entries" or "campaign"

    @property
    def finished(self) -> int:
        return self.counts.get("SUCCEEDED", 0) + self.counts.get("FAILED", 0)


def _complete(summary: Mapping[str, Any], size: int) -> dict[str, int]:
    """statusSummary's counts; children Batch has not counted yet show as SUBMITTED."""
    counts = {s: int(summary.get(s) or 0) for s in STATES}
    counts["SUBMITTED"] += max(0, size - sum(counts.values()))
    return {s: n for s, n in counts.items() if n}


def array_state(
    array: ArrayRef,
    live: Mapping[str, Any] | None,
    recorded: Mapping[str, Any] | None,
    entries: Mapping[int, Mapping[str, Any]],
) -> ArrayState:
    """Batch's live count if it still knows the parent, else the run-record Lambda's last
    one, else what the progress entries tell (finished children only)."""
    if array.job_id is None:
        return ArrayState(
            array.run_id, None, array.size, NOT_SUBMITTED, {NOT_SUBMITTED: array.size}, "campaign"
        )
    if live and live.get("array") is not None:
        counts = _complete(live["array"], array.size)
        return ArrayState(
            array.run_id, array.job_id, array.size, str(live["status"]), counts, "batch"
        )
    if recorded and recorded.get("array_summary") is not None:
        counts = _complete(recorded["array_summary"], array.size)
        return ArrayState(
            array.run_id, array.job_id, array.size, str(recorded["status"]), counts, "record"
        )
    counts = dict(Counter(str(e.get("state")) for e in entries.values()))
    if array.size > sum(counts.values()):
        counts[UNKNOWN] = array.size - sum(counts.values())
    return ArrayState(array.run_id, array.job_id, array.size, UNKNOWN, counts, "entries")


@dataclass(frozen=True)
class CampaignProgress:
    """Where a campaign stands, from Batch's counts and the progress entries."""

    campaign_id: str
    campaign: dict[str, Any]
    arrays: list[ArrayState]
    entries: dict[str, dict[int, dict[str, Any]]] = field(repr=False)
    now: float
    cancelled: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        return sum(a.size for a in self.arrays)

    @property
    def counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for array in self.arrays:
            total.update(array.counts)
        return dict(total)

    @property
    def finished(self) -> int:
        return sum(a.finished for a in self.arrays)

    @property
    def remaining(self) -> int:
        return self.total - self.finished

    @property
    def done(self) -> bool:
        """Every child of every submitted array has ended, and no array is left to submit
        (or the campaign was cancelled, so none will be)."""
        ended = all(a.finished >= a.size for a in self.arrays if a.job_id)
        waiting = any(a.job_id is None for a in self.arrays)
        return ended and (not waiting or self.cancelled is not None)

    def _finished_entries(self) -> list[dict[str, Any]]:
        return [e for by_index in self.entries.values() for e in by_index.values()]

    @property
    def recorded(self) -> int:
        """Finished children whose entry has reached the progress shards."""
        return sum(len(by_index) for by_index in self.entries.values())

    @property
    def spent_usd(self) -> float:
        """The actual cost (run.json's ``cost.actual_usd``) of the finished children."""
        return sum(float(e["usd"]) for e in self._finished_entries() if e.get("usd") is not None)

    @property
    def without_cost(self) -> int:
        """Finished children with no actual cost on record: killed by Batch before the
        worker wrote it, or whose entry has not arrived yet."""
        priced = sum(1 for e in self._finished_entries() if e.get("usd") is not None)
        return max(0, self.finished - priced)

    @property
    def estimate_usd(self) -> float | None:
        value = self.campaign.get("estimate_usd")
        return float(value) if value is not None else None

    @property
    def still_estimated_usd(self) -> float | None:
        """The submission's estimate for the children that have not finished: its
        per-child average times the children left."""
        if self.estimate_usd is None or not self.total:
            return None
        return self.estimate_usd * self.remaining / self.total

    @property
    def max_cost_usd(self) -> float | None:
        value = self.campaign.get("max_cost_usd")
        return float(value) if value is not None else None

    @property
    def window_s(self) -> float:
        """The last hour, or the time since the campaign was created if that is shorter."""
        started = epoch_s(self.campaign.get("created_at"))
        if started is None:
            return RATE_WINDOW_S
        return max(60.0, min(RATE_WINDOW_S, self.now - started))

    @property
    def finished_in_window(self) -> int:
        since = self.now - self.window_s
        return sum(1 for e in self._finished_entries() if float(e.get("at") or 0) >= since)

    @property
    def per_hour(self) -> float:
        """Children finished per hour, over :attr:`window_s`."""
        return self.finished_in_window * 3600.0 / self.window_s

    @property
    def eta_s(self) -> float | None:
        """Seconds until the rest finish at the current rate; None with no rate to go by."""
        if self.remaining == 0:
            return 0.0
        if self.per_hour <= 0:
            return None
        return self.remaining / self.per_hour * 3600.0


def epoch_s(value: Any) -> float | None:
    """An ISO-8601 time or epoch seconds/milliseconds as epoch seconds; None if neither."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value) / (1000.0 if value > 1e11 else 1.0)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def follow(bucket: str, campaign_id: str, *, at: float | None = None) -> CampaignProgress:
    """The campaign as it stands: one DescribeJobs per 100 arrays, 16 GETs per array."""
    campaign = load_campaign(bucket, campaign_id)
    arrays = arrays_of(campaign)
    entries = load_entries(bucket, campaign_id, arrays)
    live = live_statuses([a.job_id for a in arrays])
    unknown = [a for a in arrays if a.job_id and a.job_id not in live]
    with ThreadPoolExecutor(max_workers=16) as pool:
        recorded = dict(
            zip(
                [a.run_id for a in unknown],
                pool.map(lambda a: get_json(bucket, record_key(a.run_id, "status.json")), unknown),
                strict=True,
            )
        )
    states = [
        array_state(a, live.get(a.job_id or ""), recorded.get(a.run_id), entries.get(a.run_id, {}))
        for a in arrays
    ]
    return CampaignProgress(
        campaign_id=campaign_id,
        campaign=campaign,
        arrays=states,
        entries=entries,
        now=time.time() if at is None else at,
        cancelled=get_json(bucket, campaign_key(campaign_id, "cancel.json")),
    )


# -- cancelling --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    reason: str
    cancelled: list[tuple[str, str]]  # (array run id, job id)
    not_submitted: list[str]  # array run ids with no Batch job (yet)


def cancel_campaign(bucket: str, campaign_id: str, reason: str | None = None) -> CancelOutcome:
    """Cancel every array of the campaign (running children are terminated), then record
    the cancellation in ``campaigns/<id>/cancel.json``, which ``campaign status`` shows."""
    arrays = arrays_of(load_campaign(bucket, campaign_id))
    status_reason = cancel_reason(reason)
    cancelled = []
    for array in arrays:
        if array.job_id:
            cancel_job(array.job_id, status_reason)
            cancelled.append((array.run_id, array.job_id))
    not_submitted = [a.run_id for a in arrays if not a.job_id]
    put_json(
        bucket,
        campaign_key(campaign_id, "cancel.json"),
        {
            "campaign_id": campaign_id,
            "cancelled_at": now(),
            "reason": status_reason,
            "jobs": [{"run_id": r, "job_id": j} for r, j in cancelled],
            "not_submitted": not_submitted,
        },
    )
    return CancelOutcome(status_reason, cancelled, not_submitted)

"""The summary page of an array run: one row per child, each linking to the child's page.

Rendered from what the children left: their run records (``runs/<child>/status.json``,
Batch's word, which also covers jobs that never started) and their ``run.json`` (the
worker's word: units, labels, timings, cost, error). Pure Python on boto3, so the
run-record Lambda can write it when the array finishes, and the CLI can render it fresh.

The page lives at ``<output_uri>/<parent-run-id>/report/index.html``; every child page at
``<output_uri>/<child-run-id>/report/index.html``, so the links are relative
(``../../<child>/report/index.html``) and work in S3 and after ``spikebatch results
--download DIR`` alike.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from spikebatch import aws
from spikebatch.contract import RUN_PAGE, run_results_uri
from spikebatch.control.records import get_json, load_run, read_run_json, record_key
from spikebatch.pages import (
    Raw,
    badge,
    card,
    esc,
    fmt_seconds,
    fmt_usd,
    join,
    link,
    page,
    section,
    table,
    tag,
)

log = logging.getLogger(__name__)


def page_href(child_run_id: str) -> str:
    """The child's page, relative to the summary page (both under the same output URI)."""
    return f"../../{child_run_id}/{RUN_PAGE}"


@dataclass(frozen=True, slots=True)
class ChildRow:
    """One child of the array, as the summary shows it."""

    run_id: str
    index: int | None
    source: str
    status: str
    units: int | None = None
    good_units: int | None = None
    recording_s: float | None = None
    wall_s: float | None = None
    cost_usd: float | None = None
    reason: str = ""
    has_page: bool = False
    publish: str | None = None
    results_uri: str | None = None


#: run.json states that decide a child's row on their own (the worker writes them last).
_WORKER_DECIDES = ("SUCCEEDED", "FAILED")


def child_row(
    child: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    run_json: Mapping[str, Any] | None,
    *,
    results_uri: str | None = None,
) -> ChildRow:
    """Merge the parent's entry for a child, its Batch status and its run.json.

    The worker's run.json decides success (it is written last); Batch decides failures the
    worker never saw (out of memory, timeout, spot reclaim, a job that never started).
    """
    run = dict(run_json or {})
    batch = dict(status or {})
    worker_status = str(run.get("status") or "").upper()
    batch_status = str(batch.get("status") or "").upper()
    if worker_status in _WORKER_DECIDES:
        state = worker_status
    elif batch_status:
        state = batch_status
    elif worker_status:
        state = worker_status
    else:
        state = "SUBMITTED"
    reason = ""
    if state == "FAILED":
        error = run.get("error") or {}
        if error.get("message"):
            reason = f"{error.get('stage', '?')}: {error['message']}"
        elif batch.get("status_reason") or batch.get("failure_kind"):
            reason = ": ".join(
                str(x) for x in (batch.get("failure_kind"), batch.get("status_reason")) if x
            )
    units = run.get("units") or {}
    counts = (run.get("labels") or {}).get("counts") or units.get("labels") or {}
    cost = run.get("cost") or {}
    publication = run.get("publish") or {}
    return ChildRow(
        run_id=str(child.get("run_id")),
        index=child.get("array_index"),
        source=str(child.get("source") or (run.get("input") or {}).get("source") or ""),
        status=state,
        units=units.get("count"),
        good_units=counts.get("good") if counts else None,
        recording_s=(run.get("input") or {}).get("sorted_duration_s"),
        wall_s=cost.get("wall_s"),
        cost_usd=cost.get("actual_usd"),
        reason=reason,
        has_page=RUN_PAGE in (run.get("outputs") or []),
        publish=publication.get("status"),
        results_uri=results_uri,
    )


def _total(values: Sequence[float | int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def render_array_summary(
    parent_run_id: str,
    rows: Sequence[ChildRow],
    *,
    source: str | None = None,
    href: Callable[[str], str] = page_href,
) -> str:
    """The summary page. ``href`` maps a child run id to its page's link (relative by
    default; the CLI passes presigned URLs for a page that is shared)."""
    states = Counter(row.status for row in rows)
    finished = states["SUCCEEDED"] + states["FAILED"]
    subtitle = join(
        [
            f"{len(rows)} runs: ",
            join(join([badge(s.lower()), f" {n}  "]) for s, n in sorted(states.items())),
            f" · {source}" if source else "",
        ]
    )
    cost = _total([r.cost_usd for r in rows])
    cards = tag(
        "div",
        join(
            [
                card("runs", len(rows), f"{finished} finished"),
                card("succeeded", states["SUCCEEDED"], f"{states['FAILED']} failed"),
                card(
                    "good units",
                    _total([r.good_units for r in rows]) or 0,
                    f"of {_total([r.units for r in rows]) or 0} units",
                ),
                card("recording sorted", fmt_seconds(_total([r.recording_s for r in rows])) or "—"),
                card("cost", fmt_usd(cost) or "—", "actual, finished runs"),
            ]
        ),
        class_="cards",
    )
    has_publish = any(r.publish for r in rows)
    body = [
        _row(row, href, with_publish=has_publish)
        for row in sorted(
            rows, key=lambda r: (r.index if r.index is not None else 1 << 30, r.run_id)
        )
    ]
    headers = ["#", "run", "status", "units", "good", "recording", "run time", "cost", "reason"]
    if has_publish:
        headers.insert(8, "DANDI")
    content = join(
        [
            cards,
            section(
                "Runs",
                join(
                    [
                        table(headers, body, numeric={0, 3, 4, 5, 6, 7}),
                        tag(
                            "p",
                            "Each run id opens that run's page (input, sorter, timings, QC "
                            "table, figures; for a failed run, where and why). A run without "
                            "a link has no page: it has not finished, or Batch stopped it "
                            "before the worker could write one (memory, time, spot reclaim).",
                            class_="sub",
                        ),
                    ]
                ),
                id="runs",
            ),
        ]
    )
    return page(
        f"spikebatch array {parent_run_id}",
        content,
        heading=join(["spikebatch array ", tag("code", parent_run_id)]),
        subtitle=subtitle,
    )


def _row(row: ChildRow, href: Callable[[str], str], *, with_publish: bool) -> list[Any]:
    name = link(href(row.run_id), row.run_id) if row.has_page else esc(row.run_id)
    cells: list[Any] = [
        row.index,
        join([tag("code", name), Raw("<br>"), tag("span", row.source, class_="sub")]),
        badge(row.status.lower()),
        row.units,
        row.good_units,
        fmt_seconds(row.recording_s),
        fmt_seconds(row.wall_s),
        fmt_usd(row.cost_usd),
        row.reason,
    ]
    if with_publish:
        cells.insert(8, badge(row.publish) if row.publish else None)
    return cells


# -- reading the children, writing the page ---------------------------------------------


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def load_rows(bucket: str, parent_run_id: str) -> tuple[list[ChildRow], dict[str, Any]]:
    """Every child's row (S3 reads in parallel) and the parent's submission record.

    One read per child that finished in the worker (its run.json decides); a second, of
    its Batch status, only for the others (not started, running, or killed by Batch).
    """
    parent = load_run(bucket, parent_run_id)
    children = parent.children
    if not children:
        raise ValueError(f"{parent_run_id} is not an array run (it has no children)")
    output_uri = str(parent.submitted.get("output_uri") or "")

    def one(child: Mapping[str, Any]) -> ChildRow:
        run_id = str(child["run_id"])
        results_uri = run_results_uri(output_uri, run_id) if output_uri else None
        run = read_run_json(results_uri)
        status = None
        if str((run or {}).get("status") or "").upper() not in _WORKER_DECIDES:
            status = get_json(bucket, record_key(run_id, "status.json"))
        return child_row(child, status, run, results_uri=results_uri)

    with ThreadPoolExecutor(max_workers=16) as pool:
        rows = list(pool.map(one, children))
    return rows, parent.submitted


def summary_uri(parent_submitted: Mapping[str, Any], parent_run_id: str) -> str:
    """``<output_uri>/<parent-run-id>/report/index.html``."""
    return run_results_uri(str(parent_submitted["output_uri"]), parent_run_id) + RUN_PAGE


def write_array_summary(bucket: str, parent_run_id: str) -> str:
    """Render the summary from S3 and put it beside the children's results; returns its URI."""
    rows, submitted = load_rows(bucket, parent_run_id)
    request = submitted.get("request") or {}
    source = None
    if request.get("dandiset_id"):
        source = f"dandiset {request['dandiset_id']}/{request.get('version', 'draft')}"
        if request.get("asset_glob"):
            source += f" {request['asset_glob']}"
    html = render_array_summary(parent_run_id, rows, source=source)
    uri = summary_uri(submitted, parent_run_id)
    target_bucket, key = _split(uri)
    aws.client("s3").put_object(
        Bucket=target_bucket,
        Key=key,
        Body=html.encode("utf-8"),
        ContentType="text/html; charset=utf-8",
    )
    return uri

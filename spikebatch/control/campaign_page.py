"""A campaign's page: its counts, cost, failures grouped by kind, and its runs, paginated.

The array summary (:mod:`.array_summary`) is one row per child, read from each child's
records: right for an array of dozens, not for a campaign of 12,000. This page is built
from what :func:`~.campaign_progress.follow` already gathered (Batch's counts per array,
the progress shards' entries) plus each array's own record (its children's run ids and
sources), so it costs the same few dozen reads at any size. The front page stays small:
cards, failures grouped by kind (with what to do, the commonest reasons, a few example
runs), one row per dandiset, per array, and per page of runs. The runs themselves are on
pages of :data:`RUNS_PER_PAGE`, sorted by dandiset and subject.

Every page is a ``report/index.html`` under ``<output_uri>/campaigns/<campaign-id>/``
(the front page) and ``.../runs-<n>/`` (the runs pages), beside the children's results,
so the links to the children's pages are relative and work in S3 and after a download.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from spikebatch import aws
from spikebatch.contract import RUN_PAGE
from spikebatch.control.campaign_progress import NOT_SUBMITTED, CampaignProgress, follow
from spikebatch.control.job_status import FAILURE_KINDS
from spikebatch.control.records import get_json, record_key
from spikebatch.pages import (
    Raw,
    badge,
    bar,
    card,
    fmt_seconds,
    fmt_usd,
    join,
    link,
    page,
    section,
    table,
    tag,
)

#: Runs per runs page: 12,000 children make 24 pages of a few hundred kB each.
RUNS_PER_PAGE = 500
#: Per failure kind: the commonest distinct reasons, and example runs, on the front page.
TOP_REASONS = 5
EXAMPLES = 8
#: What to do about failures no declared kind matched.
UNCLASSIFIED_HINT = "read the run's page or `spikebatch status RUN_ID` for Batch's reasons"
_HINTS = {kind.name: kind.hint for kind in FAILURE_KINDS}
#: Parts of a reason that differ between otherwise identical failures (instance, task and
#: job ids), so that such failures group as one reason.
_IDS = re.compile(r"\bi-[0-9a-f]{8,17}\b|\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b")


def campaign_dir(output_uri: str, campaign_id: str) -> str:
    return f"{output_uri.rstrip('/')}/campaigns/{campaign_id}/"


def page_uri(output_uri: str, campaign_id: str, runs_page: int | None = None) -> str:
    """The front page, or runs page ``runs_page`` (1-based)."""
    part = f"runs-{runs_page}/" if runs_page else ""
    return campaign_dir(output_uri, campaign_id) + part + RUN_PAGE


@dataclass(frozen=True, slots=True)
class CampaignRun:
    """One child of the campaign: where it comes from and, once finished, its entry."""

    run_id: str
    array_run_id: str
    index: int
    dandiset: str
    group: str
    name: str
    entry: Mapping[str, Any] | None

    @property
    def state(self) -> str:
        return str(self.entry["state"]) if self.entry else "NOT FINISHED"

    @property
    def usd(self) -> float | None:
        return self.entry.get("usd") if self.entry else None


def source_parts(source: str) -> tuple[str, str, str]:
    """(dandiset, group, name) of a run's source: a DANDI asset's dandiset, subject folder
    and path; another URI's folder (as both dandiset and group) and file name."""
    if source.startswith("dandi:"):
        dandiset, _, rest = source.removeprefix("dandi:").partition("/")
        path = rest.partition("/")[2]
        subject = path.split("/", 1)[0] if "/" in path else "(top level)"
        return dandiset, subject, path
    folder, _, name = source.rpartition("/")
    return folder or "(other)", folder or "(other)", name or source


def campaign_runs(bucket: str, progress: CampaignProgress) -> tuple[list[CampaignRun], str]:
    """Every child of every array (from the arrays' own records, read in parallel) with its
    entry, sorted by dandiset, subject and path; and the campaign's output URI."""
    arrays = [a.run_id for a in progress.arrays]
    with ThreadPoolExecutor(max_workers=16) as pool:
        submitted = list(
            pool.map(lambda r: get_json(bucket, record_key(r, "request.json")), arrays)
        )
    runs: list[CampaignRun] = []
    output_uri = ""
    for array_run_id, record in zip(arrays, submitted, strict=True):
        record = record or {}
        output_uri = output_uri or str(record.get("output_uri") or "")
        entries = progress.entries.get(array_run_id, {})
        for child in record.get("children") or []:
            index = int(child["array_index"])
            dandiset, group, name = source_parts(str(child.get("source") or ""))
            runs.append(
                CampaignRun(
                    str(child["run_id"]),
                    array_run_id,
                    index,
                    dandiset,
                    group,
                    name,
                    entries.get(index),
                )
            )
    runs.sort(key=lambda r: (r.dandiset, r.group, r.name, r.run_id))
    return runs, output_uri


# -- rendering ---------------------------------------------------------------------------


def _child_link(run: CampaignRun, up: str) -> Raw:
    """The run id, linking to its page when it has one (``up`` climbs to the output URI)."""
    if run.entry and run.entry.get("page"):
        return tag("code", link(f"{up}{run.run_id}/{RUN_PAGE}", run.run_id))
    return tag("code", run.run_id)


def _tally(runs: Iterable[CampaignRun]) -> tuple[int, int, int, int, float | None]:
    """(runs, succeeded, failed, not finished, actual cost) of ``runs``."""
    states: Counter[str] = Counter()
    usd: list[float] = []
    for run in runs:
        states[run.state] += 1
        if run.usd is not None:
            usd.append(float(run.usd))
    total = sum(states.values())
    done = states["SUCCEEDED"] + states["FAILED"]
    return total, states["SUCCEEDED"], states["FAILED"], total - done, sum(usd) if usd else None


def _failures(runs: Sequence[CampaignRun]) -> Raw:
    failed: dict[str, list[CampaignRun]] = defaultdict(list)
    for run in runs:
        if run.state == "FAILED":
            failed[str(run.entry.get("kind") if run.entry else None)].append(run)
    if not failed:
        return tag("p", "No run has failed.", class_="sub")
    rows = []
    for kind, group in sorted(failed.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        reasons = Counter(_IDS.sub("…", str(r.entry.get("reason") or "")) for r in group if r.entry)
        common = join(
            join(
                [tag("span", f"{n} x", class_="sub"), " ", reason or "no reason given", Raw("<br>")]
            )
            for reason, n in reasons.most_common(TOP_REASONS)
        )
        if len(reasons) > TOP_REASONS:
            common = join(
                [common, tag("span", f"and {len(reasons) - TOP_REASONS} more", class_="sub")]
            )
        examples = join(join([_child_link(r, "../../../"), " "]) for r in group[:EXAMPLES])
        rows.append(
            [
                badge(kind, "failed"),
                len(group),
                _HINTS.get(kind, UNCLASSIFIED_HINT),
                common,
                examples,
            ]
        )
    return table(["kind", "runs", "what to do", "commonest reasons", "examples"], rows, numeric={1})


def _cards(progress: CampaignProgress) -> Raw:
    counts = progress.counts
    running = counts.get("RUNNING", 0) + counts.get("STARTING", 0)
    waiting = sum(counts.get(s, 0) for s in ("SUBMITTED", "PENDING", "RUNNABLE", NOT_SUBMITTED))
    budget = progress.max_cost_usd
    eta = progress.eta_s
    return tag(
        "div",
        join(
            [
                card("runs", f"{progress.total:,}", f"{len(progress.arrays)} array jobs"),
                card(
                    "succeeded",
                    f"{counts.get('SUCCEEDED', 0):,}",
                    f"{counts.get('FAILED', 0):,} failed",
                ),
                card("in flight", f"{running:,}", f"{waiting:,} waiting"),
                card(
                    "spent",
                    fmt_usd(progress.spent_usd) or "$0",
                    f"budget {fmt_usd(budget)}" if budget is not None else "actual, finished runs",
                ),
                card(
                    "still estimated",
                    fmt_usd(progress.still_estimated_usd) or "—",
                    f"of {fmt_usd(progress.estimate_usd)} estimated in all"
                    if progress.estimate_usd is not None
                    else "no estimate recorded",
                ),
                card(
                    "throughput",
                    f"{progress.per_hour:,.0f} / h",
                    ("done" if eta == 0 else f"ETA {fmt_seconds(eta)}")
                    if eta is not None
                    else "no ETA: nothing finished lately",
                ),
            ]
        ),
        class_="cards",
    )


def _subtitle(progress: CampaignProgress) -> Raw:
    request = progress.campaign.get("request") or {}
    what = []
    if request.get("dandiset_id"):
        what.append(f"dandiset {request['dandiset_id']}/{request.get('version', 'draft')}")
        if request.get("asset_glob"):
            what.append(str(request["asset_glob"]))
    if request.get("sorter"):
        what.append(str(request["sorter"]))
    if progress.campaign.get("created_at"):
        what.append(f"created {progress.campaign['created_at']}")
    parts: list[Any] = [" · ".join(what)]
    if progress.cancelled:
        parts += [" · ", badge("cancelled", "failed"), f" {progress.cancelled.get('cancelled_at')}"]
    return join(parts)


def render_front_page(
    progress: CampaignProgress, runs: Sequence[CampaignRun], *, per_page: int = RUNS_PER_PAGE
) -> str:
    """The campaign's front page: bounded by the number of kinds, dandisets, arrays and
    runs pages, never by the number of runs."""
    finished = progress.finished
    fraction = finished / progress.total if progress.total else 0.0
    overall = join(
        [
            bar(fraction),
            tag(
                "p",
                f"{finished:,} of {progress.total:,} runs finished ({fraction:.1%}); "
                f"{progress.finished_in_window:,} in the last "
                f"{fmt_seconds(progress.window_s)}; actual cost known for "
                f"{finished - progress.without_cost:,}.",
                class_="sub",
            ),
        ]
    )
    by_dandiset: dict[str, list[CampaignRun]] = defaultdict(list)
    for run in runs:
        by_dandiset[run.dandiset].append(run)
    dandisets = [[d, *_fmt_tally(_tally(rs))] for d, rs in sorted(by_dandiset.items())]
    arrays = [
        [
            tag("code", a.run_id),
            tag("code", a.job_id or "—"),
            a.size,
            badge(a.status.lower()),
            a.counts.get("SUCCEEDED", 0),
            a.counts.get("FAILED", 0),
            a.counts.get("RUNNING", 0) + a.counts.get("STARTING", 0),
            a.size - a.finished - a.counts.get("RUNNING", 0) - a.counts.get("STARTING", 0),
        ]
        for a in progress.arrays
    ]
    pages = []
    for number, chunk in enumerate(_chunks(runs, per_page), start=1):
        first, last = chunk[0], chunk[-1]
        span = first.group if first.group == last.group else f"{first.group} … {last.group}"
        pages.append(
            [
                link(f"../runs-{number}/{RUN_PAGE}", f"page {number}"),
                span,
                *_fmt_tally(_tally(chunk)),
            ]
        )
    content = join(
        [
            _cards(progress),
            section("Progress", overall),
            section("Failures by kind", _failures(runs), id="failures"),
            section(
                "By dandiset",
                table(
                    ["dandiset", "runs", "succeeded", "failed", "not finished", "cost"],
                    dandisets,
                    numeric={1, 2, 3, 4, 5},
                ),
            ),
            section(
                "Array jobs",
                table(
                    [
                        "array run",
                        "Batch job",
                        "size",
                        "status",
                        "succeeded",
                        "failed",
                        "running",
                        "waiting",
                    ],
                    arrays,
                    numeric={2, 4, 5, 6, 7},
                ),
            ),
            section(
                "Runs",
                join(
                    [
                        table(
                            [
                                "page",
                                "subjects",
                                "runs",
                                "succeeded",
                                "failed",
                                "not finished",
                                "cost",
                            ],
                            pages,
                            numeric={2, 3, 4, 5, 6},
                        ),
                        tag(
                            "p",
                            f"{per_page} runs per page, by dandiset, subject and path; each "
                            "run id opens that run's page once it has one.",
                            class_="sub",
                        ),
                    ]
                ),
                id="runs",
            ),
        ]
    )
    return page(
        f"spikebatch campaign {progress.campaign_id}",
        content,
        heading=join(["spikebatch campaign ", tag("code", progress.campaign_id)]),
        subtitle=_subtitle(progress),
    )


def _fmt_tally(tally: tuple[int, int, int, int, float | None]) -> list[Any]:
    runs, succeeded, failed, waiting, usd = tally
    return [runs, succeeded, failed, waiting, fmt_usd(usd)]


def _chunks(runs: Sequence[CampaignRun], size: int) -> list[Sequence[CampaignRun]]:
    return [runs[i : i + size] for i in range(0, len(runs), size)]


def render_runs_page(
    campaign_id: str, number: int, pages: int, runs: Sequence[CampaignRun], *, first: int
) -> str:
    """Runs page ``number`` of ``pages``: one row per run (``first`` is the first's rank)."""
    nav = [link(f"../../{RUN_PAGE}", "campaign")]
    if number > 1:
        nav += [" · ", link(f"../runs-{number - 1}/{RUN_PAGE}", "previous")]
    if number < pages:
        nav += [" · ", link(f"../runs-{number + 1}/{RUN_PAGE}", "next")]
    badges = {state: badge(state.lower()) for state in {run.state for run in runs}}
    badges["NOT FINISHED"] = badge("not finished", "pending")
    rows = [
        [
            first + offset,
            join(
                [_child_link(run, "../../../../"), Raw("<br>"), tag("span", run.name, class_="sub")]
            ),
            run.group,
            badges[run.state],
            fmt_usd(run.usd),
            (run.entry or {}).get("reason") or "",
        ]
        for offset, run in enumerate(runs)
    ]
    content = join(
        [
            tag("p", join(nav)),
            table(["#", "run", "subject", "status", "cost", "reason"], rows, numeric={0, 4}),
        ]
    )
    return page(
        f"spikebatch campaign {campaign_id}: runs page {number}",
        content,
        heading=join(["spikebatch campaign ", tag("code", campaign_id)]),
        subtitle=f"runs {first:,} to {first + len(runs) - 1:,}, page {number} of {pages}",
    )


def render_pages(
    progress: CampaignProgress, runs: Sequence[CampaignRun], *, per_page: int = RUNS_PER_PAGE
) -> dict[int, str]:
    """Every page of the campaign: 0 the front page, then the runs pages from 1."""
    chunks = _chunks(runs, per_page)
    pages = {0: render_front_page(progress, runs, per_page=per_page)}
    for number, chunk in enumerate(chunks, start=1):
        pages[number] = render_runs_page(
            progress.campaign_id, number, len(chunks), chunk, first=(number - 1) * per_page + 1
        )
    return pages


def write_campaign_pages(
    bucket: str, campaign_id: str, *, progress: CampaignProgress | None = None
) -> str:
    """Render the campaign's pages (from ``progress``, else fresh) and put them beside its
    runs' results (PUTs in parallel); returns the front page's URI."""
    progress = progress or follow(bucket, campaign_id)
    runs, output_uri = campaign_runs(bucket, progress)
    if not output_uri:
        raise ValueError(f"campaign {campaign_id} has no submitted array records yet")
    pages = render_pages(progress, runs)
    s3 = aws.client("s3")

    def put(item: tuple[int, str]) -> None:
        number, html = item
        target_bucket, _, key = (
            page_uri(output_uri, campaign_id, number).removeprefix("s3://").partition("/")
        )
        s3.put_object(
            Bucket=target_bucket,
            Key=key,
            Body=html.encode("utf-8"),
            ContentType="text/html; charset=utf-8",
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, pages.items()))
    return page_uri(output_uri, campaign_id)

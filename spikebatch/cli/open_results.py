"""``spikebatch results RUN --open``: the run's page in a browser, downloaded or presigned.

A run's page (``report/index.html``) is self-contained, so one object is all a browser
needs: downloaded next to the other results (default), or read straight from S3 through a
presigned URL (``--presign``; anyone holding the URL may open it until it expires). An
array run opens its summary, rendered here from the children's records and run.json (so
it is current even while children still run), with links to the children's pages:
relative links to the pages downloaded beside it, or presigned URLs of them.
"""

from __future__ import annotations

import tempfile
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.contract import RUN_PAGE
from spikebatch.control import array_summary, records

#: Where pages go when no --download folder is given.
DEFAULT_DIR = Path(tempfile.gettempdir()) / "spikebatch-results"
#: SigV4 presigned URLs last at most 7 days.
MAX_EXPIRES_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class OpenedPage:
    """What was opened: a file path or URL, and whether a browser took it."""

    location: str
    opened: bool
    note: str = ""


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _page_object(results_uri: str) -> tuple[str, str]:
    return _split(results_uri.rstrip("/") + "/" + RUN_PAGE)


def _exists(bucket: str, key: str) -> bool:
    try:
        aws.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


def _presigned(bucket: str, key: str, expires_s: int) -> str:
    return aws.presigned_get_url(
        bucket, key, expires_s=expires_s, ResponseContentType="text/html; charset=utf-8"
    )


def _download_page(results_uri: str, dest: Path) -> Path:
    bucket, key = _page_object(results_uri)
    target = dest / RUN_PAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    aws.client("s3").download_file(bucket, key, str(target))
    return target


def open_results(
    bucket: str,
    run_id: str,
    *,
    dest: Path | None = None,
    presign: bool = False,
    expires_s: int = 12 * 3600,
    opener: Callable[[str], Any] | None = None,
) -> OpenedPage:
    """Open ``run_id``'s page (an array's summary); raises ValueError when there is none yet."""
    if not 1 <= expires_s <= MAX_EXPIRES_S:
        raise ValueError(f"--expires-hours: at most {MAX_EXPIRES_S // 3600} (S3's limit)")
    dest = (dest or DEFAULT_DIR).expanduser().resolve()
    record = records.load_run(bucket, run_id)
    if record.children:
        location, note = _array(bucket, run_id, dest, presign=presign, expires_s=expires_s)
    else:
        location, note = _single(record, dest, presign=presign, expires_s=expires_s)
    return OpenedPage(location, bool((opener or webbrowser.open)(location)), note)


def _single(
    record: records.RunRecord, dest: Path, *, presign: bool, expires_s: int
) -> tuple[str, str]:
    results_uri = str(record.submitted.get("results_uri") or "")
    if not results_uri.startswith("s3://"):
        raise ValueError(f"{record.run_id} has no results in S3 (results_uri {results_uri!r})")
    bucket, key = _page_object(results_uri)
    if not _exists(bucket, key):
        raise ValueError(
            f"{record.run_id} has no page yet ({record.state}): it is written when the run "
            "finishes; see `spikebatch status " + record.run_id + "`"
        )
    if presign:
        return _presigned(bucket, key, expires_s), f"valid for {expires_s / 3600:g} h"
    return _download_page(results_uri, dest / record.run_id).as_uri(), ""


def _array(
    bucket: str, run_id: str, dest: Path, *, presign: bool, expires_s: int
) -> tuple[str, str]:
    rows, submitted = array_summary.load_rows(bucket, run_id)
    links: dict[str, str] = {}
    for row in rows:
        results_uri = row.results_uri or ""
        if not row.has_page or not results_uri.startswith("s3://"):
            continue
        if presign:
            links[row.run_id] = _presigned(*_page_object(results_uri), expires_s)
        else:
            _download_page(results_uri, dest / row.run_id)
            links[row.run_id] = array_summary.page_href(row.run_id)
    rows = [r if r.run_id in links else _without_page(r) for r in rows]
    request = submitted.get("request") or {}
    source = f"dandiset {request['dandiset_id']}" if request.get("dandiset_id") else None
    html = array_summary.render_array_summary(
        run_id, rows, source=source, href=lambda child: links[child]
    )
    page = dest / run_id / RUN_PAGE
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(html, encoding="utf-8")
    note = (
        f"its links are presigned URLs, valid for {expires_s / 3600:g} h: the file can be "
        "shared as is"
        if presign
        else ""
    )
    return page.as_uri(), note


def _without_page(row: array_summary.ChildRow) -> array_summary.ChildRow:
    from dataclasses import replace

    return replace(row, has_page=False)

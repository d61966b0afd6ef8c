"""``spikebatch results RUN --open``: the page downloaded and opened, or presigned."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from spikebatch.cli.app import app
from spikebatch.contract import RUN_PAGE
from tests.results.arrays import make_array
from tests.submission.conftest import BUCKET, FakeStack, client
from tests.support import browser


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the CLI asked the browser to open (no browser is started)."""
    seen: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: seen.append(url) or True)
    return seen


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _single_run(stack: FakeStack, finished_run) -> str:
    """A submitted single run whose results (run.json, page) are in the bucket."""
    result = cli(
        "submit", "--input-uri", "s3://inputs-bucket/sub-sim01.nwb", "--sorter", "kilosort4"
    )
    assert result.exit_code == 0, result.output
    run_id = stack.jobs()[0]["tags"]["spikebatch:run-id"]
    prefix = f"results/{run_id}/"
    client("s3").put_object(
        Bucket=BUCKET, Key=prefix + "run.json", Body=json.dumps(finished_run.record).encode()
    )
    client("s3").put_object(
        Bucket=BUCKET,
        Key=prefix + RUN_PAGE,
        Body=finished_run.page.read_bytes(),
        ContentType="text/html",
    )
    return run_id


def _page_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("page: ")).split()[1]


def test_open_downloads_the_page_and_opens_it(stack, finished_run, opened, tmp_path):
    run_id = _single_run(stack, finished_run)

    result = cli("results", run_id, "--open", "--download", str(tmp_path))

    assert result.exit_code == 0, result.output
    page = tmp_path / run_id / "report" / "index.html"
    assert opened == [page.as_uri()] and _page_line(result.output) == page.as_uri()
    assert page.read_bytes() == finished_run.page.read_bytes()
    assert (tmp_path / run_id / "run.json").is_file()  # --download still fetched everything


def test_presign_gives_a_url_that_serves_the_page(stack, finished_run, opened):
    run_id = _single_run(stack, finished_run)

    result = cli("results", run_id, "--open", "--presign", "--expires-hours", "2")

    assert result.exit_code == 0, result.output
    [url] = opened
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["7200"] and "X-Amz-Signature" in query
    assert urllib.parse.urlsplit(url).path.endswith(f"/results/{run_id}/report/index.html")
    response = requests.get(url, timeout=30)
    assert response.status_code == 200 and response.content == finished_run.page.read_bytes()
    assert response.headers["Content-Type"].startswith("text/html")
    assert "valid for 2 h" in result.output


def test_a_run_without_a_page_yet_is_one_line(stack, opened):
    result = cli(
        "submit", "--input-uri", "s3://inputs-bucket/sub-sim01.nwb", "--sorter", "kilosort4"
    )
    run_id = stack.jobs()[0]["tags"]["spikebatch:run-id"]

    result = cli("results", run_id, "--open")

    assert result.exit_code == 1 and opened == []
    assert result.stderr.strip().startswith(f"error: {run_id} has no page yet (SUBMITTED)")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_array_opens_its_summary_with_the_childrens_pages_beside_it(
    stack, finished_run, opened, tmp_path
):
    array = make_array(BUCKET, finished_run)

    result = cli("results", array.run_id, "--open", "--download", str(tmp_path))

    assert result.exit_code == 0, result.output
    summary = tmp_path / array.run_id / "report" / "index.html"
    assert opened == [summary.as_uri()]
    hrefs, _ = browser.links(summary.read_text())
    ok = array.children[0]
    assert hrefs == [f"../../{ok}/report/index.html"]
    child_page = (summary.parent / hrefs[0]).resolve()
    assert child_page == tmp_path / ok / "report" / "index.html" and child_page.is_file()
    assert ok in child_page.read_text()


def test_an_array_with_presign_links_its_children_by_url(stack, finished_run, opened, tmp_path):
    array = make_array(BUCKET, finished_run)

    result = cli("results", array.run_id, "--open", "--presign", "--download", str(tmp_path))

    assert result.exit_code == 0, result.output
    summary = Path(urllib.parse.urlsplit(opened[0]).path)
    hrefs, _ = browser.links(summary.read_text())
    assert len(hrefs) == 1 and hrefs[0].startswith("https://")
    response = requests.get(hrefs[0], timeout=30)
    assert response.status_code == 200 and array.children[0] in response.text
    assert "can be shared as is" in result.output

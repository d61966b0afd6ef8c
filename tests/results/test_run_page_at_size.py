"""The run page of a Neuropixels hour: 400 units stay one small file, every one reachable.

The run folder is generated (``tests/support/many_units.py``: a labelled metrics table and
report.py's figures from a synthetic analyzer of 400 units and a million spikes), since
sorting that many units takes far longer than a test may.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from spikebatch.worker import report, run_page
from tests.support import browser, many_units

needs_chromium = pytest.mark.skipif(not browser.available(), reason="no chromium")

MAX_PAGE_BYTES = 5_000_000
UNITS = 400


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-probe run with 400 units, as the worker leaves it; its page."""
    page, _ = many_units.write_run(tmp_path_factory.mktemp("np-hour") / "run", [(None, UNITS)])
    return page


def qc_unit_ids(html: str) -> list[str]:
    """The unit id of each QC table row (of every probe), in page order."""
    tables = re.findall(r"<table data-page-size=.*?</table>", html, flags=re.S)
    return [unit for table in tables for unit in re.findall(r"<tr><td>([^<]*)</td>", table)]


def png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def test_400_units_stay_one_small_self_contained_file(big_run):
    html = big_run.read_text()
    assert big_run.stat().st_size < MAX_PAGE_BYTES
    hrefs, sources = browser.links(html)
    assert hrefs == []
    assert len(sources) == len(run_page.FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|@import|url\(", html.replace(sources[0], ""))


def test_every_unit_has_a_row_and_none_is_hidden_without_javascript(big_run):
    html = big_run.read_text()
    ids = qc_unit_ids(html)
    assert sorted(ids, key=int) == [str(u) for u in range(UNITS)]
    assert "<tr hidden" not in html  # the script alone hides rows


def test_the_figures_stay_bounded_at_400_units(big_run):
    folder = big_run.parents[1] / "report"
    for name in report.FIGURES:
        data = (folder / name).read_bytes()
        width, height = png_size(data)
        assert width <= 2000 and height <= 1200, (name, width, height)
        assert len(data) < 500_000, (name, len(data))


def test_two_probes_of_200_units_stay_under_5_mb(big_run, tmp_path):
    """Each probe with the 400-unit probe's figures (as big as any: their size is bounded,
    not grown by units) and half its rows, as the worker renders a two-probe run."""
    probe = run_page.read_probe_results(big_run.parents[1])
    halves = [probe.metrics[:200], probe.metrics[200:]]
    record = many_units.record("two-probes", [("imec0", 200), ("imec1", 200)], {})
    html = run_page.render_run_page(
        record,
        [run_page.ProbeResults(f"imec{i}", rows, probe.figures) for i, rows in enumerate(halves)],
    )
    page = tmp_path / "index.html"
    page.write_text(html, encoding="utf-8")
    assert page.stat().st_size < MAX_PAGE_BYTES
    assert "<h3>probe imec0</h3>" in html and "<h3>probe imec1</h3>" in html
    assert html.count("data:image/png;base64,") == 2 * len(run_page.FIGURES)
    assert sorted(qc_unit_ids(html), key=int) == [str(u) for u in range(UNITS)]


#: Pages the QC table with its own controls, as a person would, and reports what it shows.
_BROWSE = """
const table = document.querySelector("table[data-page-size]");
const pager = document.querySelector(".pager");
const status = () => pager.querySelector("[aria-live]").textContent;
const shown = (col) => Array.from(table.tBodies[0].rows)
  .filter((r) => !r.hidden).map((r) => r.cells[col].textContent);
const pick = (select, value) => {
  select.value = value;
  select.dispatchEvent(new Event("change"));
};
const [labelled, perPage] = pager.querySelectorAll("select");
const out = {first: shown(0), firstStatus: status()};
pager.querySelector("[data-page=next]").click();
out.second = shown(0);
pager.querySelector("[data-page=last]").click();
out.last = shown(0);
out.lastStatus = status();
out.nextDisabled = pager.querySelector("[data-page=next]").disabled;
table.tHead.rows[0].cells[0].querySelector("button").click();
out.byUnit = shown(0);
out.sortedBy = table.tHead.rows[0].cells[0].getAttribute("aria-sort");
pick(labelled, "noise");
out.noise = shown(1);
out.noiseStatus = status();
pick(labelled, "");
pick(perPage, "0");
out.all = shown(0);
document.body.setAttribute("data-probe", JSON.stringify(out));
"""


@needs_chromium
def test_chromium_pages_and_sorts_the_units_table(big_run):
    ids = qc_unit_ids(big_run.read_text())
    seen = browser.probe(big_run, _BROWSE)
    page = run_page.QC_PAGE_SIZE
    pages = -(-UNITS // page)
    assert seen["first"] == ids[:page] and seen["second"] == ids[page : 2 * page]
    assert seen["firstStatus"].startswith(f"page 1 of {pages}")
    # the last unit of the table (the lowest-ranked one) is reached by the controls
    assert seen["last"] == ids[(pages - 1) * page :] and ids[-1] in seen["last"]
    assert seen["lastStatus"].startswith(f"page {pages} of {pages}")
    assert seen["nextDisabled"] is True
    # a numeric column sorts as numbers, highest first on the first click
    assert seen["sortedBy"] == "descending"
    assert seen["byUnit"] == [str(u) for u in range(UNITS - 1, UNITS - 1 - page, -1)]
    # the label filter: the noise units only, a page of them, all of them counted
    metrics = run_page.read_probe_results(big_run.parents[1]).metrics
    n_noise = sum(row["label"] == "noise" for row in metrics)
    assert seen["noise"] == ["noise"] * min(page, n_noise)
    assert seen["noiseStatus"].endswith(f" of {n_noise}")
    assert sorted(seen["all"], key=int) == [str(u) for u in range(UNITS)]

"""report/index.html: rendered from a real run, checked in headless Chromium, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikebatch.contract import RUN_PAGE
from spikebatch.worker import run_page
from tests.support import browser

needs_chromium = pytest.mark.skipif(not browser.available(), reason="no chromium")


def test_the_page_holds_what_a_person_checks_first(finished_run):
    html = finished_run.page.read_text()
    record = finished_run.record
    rec_input = record["input"]
    assert record["run_id"] in html
    assert rec_input["digest"]["value"] in html and "verified" in html
    assert record["sorter"]["name"] in html and record["sorter"]["version"] in html
    for stage in record["timings_s"]:
        assert f"<td>{stage}</td>" in html
    assert "g4dn.xlarge (spot)" in html or "g4dn.xlarge (on-demand)" in html
    for label, n in finished_run.labels.counts().items():
        assert f'<span class="badge {label}">{label}</span> {n}' in html
    # one QC row per unit, with its label
    assert html.count('<td class="num">') >= record["units"]["count"] * len(run_page.QC_COLUMNS)
    assert "phy template-gui params.py" in html
    assert f"spikebatch results {record['run_id']} --download ./results" in html


def test_the_page_needs_nothing_but_itself(finished_run, tmp_path):
    """Figures are data URIs; no script, stylesheet or image is fetched from anywhere."""
    alone = tmp_path / "mailed" / "index.html"
    alone.parent.mkdir()
    alone.write_bytes(finished_run.page.read_bytes())  # opened without the folder around it
    hrefs, sources = browser.links(alone.read_text())
    assert len(sources) == len(run_page.FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not [h for h in hrefs if not h.startswith(("http://", "https://"))]


@needs_chromium
def test_chromium_renders_the_page_and_every_figure(finished_run, tmp_path):
    page = tmp_path / "index.html"
    page.write_bytes(finished_run.page.read_bytes())
    images = browser.rendered_images(page)
    assert sorted(alt for alt, _, _ in images) == sorted(run_page.FIGURES)
    assert all(width > 300 and height > 200 for _, width, height in images), images
    dom = browser.dom_text(page)
    assert finished_run.record["run_id"] in dom and "Quality labels" in dom
    shot = browser.screenshot(page, tmp_path / "run-page.png", height=1400)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_values_from_the_record_cannot_inject_markup(finished_run):
    record = json.loads(json.dumps(finished_run.record))
    record["input"]["source"] = 'file:///x/<script>alert("x")</script>.nwb'
    record["sorter"]["params"]["evil"] = "<img src=x onerror=alert(1)>"
    html = run_page.render_run_page(record, [run_page.read_probe_results(finished_run.folder)])
    assert "<script>alert" not in html and "<img src=x" not in html
    assert html.count("<script") == 1  # the page's own table script, no other
    assert "&lt;script&gt;" in html


@needs_chromium
def test_a_failed_run_shows_where_and_why(finished_run, tmp_path):
    record = {
        **finished_run.record,
        "status": "failed",
        "error": {
            "stage": "sort",
            "message": "kilosort4 ran out of GPU memory",
            "type": "SorterError",
        },
        "units": None,
        "labels": None,
        "phy": None,
        "outputs": [],
    }
    page = tmp_path / "failed.html"
    page.write_text(run_page.render_run_page(record, []))
    dom = browser.dom_text(page)
    assert "Failed in stage sort:" in dom and "ran out of GPU memory" in dom
    assert 'class="badge failed"' in dom


def test_several_probes_get_a_table_and_figures_each(finished_run):
    probe = run_page.read_probe_results(finished_run.folder)
    html = run_page.render_run_page(
        finished_run.record,
        [
            run_page.ProbeResults("imec0", probe.metrics, probe.figures),
            run_page.ProbeResults("imec1", probe.metrics, probe.figures),
        ],
    )
    assert "<h3>probe imec0</h3>" in html and "<h3>probe imec1</h3>" in html
    assert html.count("data:image/png;base64,") == 2 * len(run_page.FIGURES)


def test_write_run_page_reads_the_files_the_worker_wrote(finished_run, tmp_path):
    import shutil

    folder = shutil.copytree(finished_run.folder, tmp_path / "run")
    (folder / RUN_PAGE).unlink()
    path = run_page.write_run_page(folder, finished_run.record)
    assert path == folder / "report" / "index.html"

    def without_timings(html: str) -> str:  # the worker renders it before its last write
        start, end = html.index('<h2 id="timings">'), html.index('<h2 id="cost">')
        return html[:start] + html[end:]

    assert without_timings(path.read_text()) == without_timings(finished_run.page.read_text())
    assert Path(path).stat().st_size > sum(
        (folder / "report" / f).stat().st_size for f in run_page.FIGURES
    )

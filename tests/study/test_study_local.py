"""``spikebatch study run --local`` / ``results`` / ``status`` on two tiny recordings.

GIVEN a spec of 2 generated recordings x 2 sorter entries (a stand-in sorter: see conftest)
WHEN the study runs in this process THEN every case is a real worker run under the study
folder, the results are collected into study.json, units.csv and index.html, and a rerun
runs only what has no result.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spikebatch.cli.app import app
from tests.study.conftest import spec_document, write_spec

runner = CliRunner()


def _study(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["study", *args])
    return result.exit_code, result.output


@pytest.fixture
def study(tmp_path, recordings):
    spec = write_spec(tmp_path / "tiny.yaml", spec_document(recordings))
    return spec, tmp_path / "out"


def test_a_local_study_runs_every_case_and_collects_them(study, stand_in):
    spec, out = study

    code, output = _study("run", str(spec), "--local", "--out", str(out))

    assert code == 0, output
    assert sorted(stand_in.sorted) == ["spykingcircus2"] * 2 + ["tridesclous2"] * 2
    code, output = _study("results", str(spec), "--local", "--out", str(out))
    assert code == 0, output
    document = json.loads((out / "study.json").read_text())
    assert document["name"] == "tiny" and len(document["cases"]) == 4
    for case in document["cases"]:
        assert case["status"] == "succeeded" and not case["errored"] and not case["timed_out"]
        assert case["run_time_s"] is not None and case["cpu_time_s"] is not None
        assert case["cost_usd"] is None  # no instance price locally
        assert case["num_units"] == (3 if case["label"] == "truth" else 2)
        assert case["log_uri"].startswith("file://") and case["results_uri"].startswith("file://")
        assert case["ground_truth_uri"] == case["recording_uri"]
        truth = case["ground_truth"]
        assert truth["num_true_units"] == 3
        assert truth["false_positive"] == 0
    units = list(csv.DictReader((out / "units.csv").open()))
    assert len(units) == 4 * 3
    assert list(units[0]) == [
        "recording", "sorter", "label", "true_unit_id", "snr", "accuracy", "precision",
        "recall", "best_match_unit_id",
    ]
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert "runs/" in page and "report/index.html" in page

"""``spikebatch study run --local`` / ``results`` / ``status`` on two tiny recordings.

GIVEN a spec of 2 generated recordings x 2 sorter entries (a stand-in sorter: see conftest)
WHEN the study runs in this process THEN every case is a real worker run under the study
folder, the results are collected into study.json, units.csv and index.html, and a rerun
runs only what has no result. One study run is shared by the module (each takes ~15 s of
worker time per case on this CPU); the timeout and stop tests run their own small ones.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from spikebatch.cli.app import app
from tests.study.conftest import patched_sorter, spec_document, write_spec

runner = CliRunner()


def _study(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["study", *args])
    return result.exit_code, result.output


def _cases(out: Path) -> dict[tuple[str, str], dict]:
    document = json.loads((out / "study.json").read_text())
    return {(c["recording"], c["label"]): c for c in document["cases"]}


@pytest.fixture(scope="module")
def ran(tmp_path_factory, recordings):
    """The study, run once: (spec path, study folder, what the stand-in sorted)."""
    tmp = tmp_path_factory.mktemp("study")
    spec = write_spec(tmp / "tiny.yaml", spec_document(recordings))
    out = tmp / "out"
    with patched_sorter() as stand_in:
        code, output = _study("run", str(spec), "--local", "--out", str(out))
    assert code == 0, output
    # study.json for every test of the module, whichever worker (xdist) runs it
    code, output = _study("results", str(spec), "--local", "--out", str(out))
    assert code == 0, output
    return spec, out, list(stand_in.sorted)


def test_every_case_runs_once_and_is_collected_with_every_field(ran):
    spec, out, sorted_ = ran
    assert sorted(sorted_) == ["spykingcircus2"] * 2 + ["tridesclous2"] * 2

    code, output = _study("results", str(spec), "--local", "--out", str(out))

    assert code == 0, output
    assert "4 of 4 case(s) finished" in output
    cases = _cases(out)
    assert set(cases) == {(r, lab) for r in ("rec1", "rec2") for lab in ("truth", "drops-one")}
    for (_recording, label), case in cases.items():
        assert case["study"] == "synth"
        assert case["sorter"] == {"truth": "tridesclous2", "drops-one": "spykingcircus2"}[label]
        assert case["params"] == {}
        assert case["status"] == "succeeded" and not case["errored"] and not case["timed_out"]
        assert case["start_time"] <= case["end_time"]
        assert case["run_time_s"] >= 0 and case["cpu_time_s"] >= 0
        assert case["cost_usd"] is None  # no instance price on this machine
        assert case["num_units"] == (3 if label == "truth" else 2)
        assert case["results_uri"].startswith((out / "runs").as_uri())
        assert Path(case["log_uri"].removeprefix("file://")).read_text()
        assert case["recording_uri"].endswith(".nwb")
        assert case["ground_truth_uri"] == case["recording_uri"]  # ground_truth: units
        assert set(case["ground_truth"]) == {
            "num_true_units",
            "num_true_units_above_snr",
            "well_detected",
            "false_positive",
            "redundant",
            "overmerged",
            "accuracy",
            "precision",
            "recall",
        }
        assert case["ground_truth"]["num_true_units"] == 3
    units = list(csv.DictReader((out / "units.csv").open()))
    assert len(units) == 4 * 3
    assert list(units[0]) == [
        "recording",
        "sorter",
        "label",
        "true_unit_id",
        "snr",
        "accuracy",
        "precision",
        "recall",
        "best_match_unit_id",
    ]
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 5  # 3 rates, the counts, the run time
    for case in cases.values():
        href = "runs/" + case["run_id"] + "/report/index.html"
        assert href in page and (out / href).is_file()


def test_accuracies_equal_a_recomputation_from_each_cases_own_sorting(ran, recordings):
    import spikeinterface as si
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.extractors import read_nwb_sorting

    spec, out, _ = ran
    _study("results", str(spec), "--local", "--out", str(out))
    units = list(csv.DictReader((out / "units.csv").open()))
    for (recording, _label), case in _cases(out).items():
        files = recordings[int(recording[-1]) - 1]
        truth = read_nwb_sorting(str(files.nwb), sampling_frequency=30_000.0, t_start=0.0)
        sorting = si.load(Path(case["results_uri"].removeprefix("file://")) / "sorting")
        performance = compare_sorter_to_ground_truth(
            truth, sorting, exhaustive_gt=True
        ).get_performance()
        snr = {
            u["true_unit_id"]: float(u["snr"])
            for u in units
            if (u["recording"], u["label"]) == (recording, case["label"])
        }
        above = [unit for unit in truth.unit_ids if snr[str(unit)] >= 5.0]
        expected = float(np.mean([performance.loc[unit, "accuracy"] for unit in above]))
        assert case["ground_truth"]["accuracy"] == pytest.approx(expected, abs=0.01)
    assert {c["label"]: c["ground_truth"]["accuracy"] for c in _cases(out).values()}["truth"] == 1.0


def test_an_unchanged_study_runs_nothing_and_says_so(ran):
    spec, out, _ = ran
    with patched_sorter() as stand_in:
        code, output = _study("run", str(spec), "--local", "--out", str(out))
    assert code == 0, output
    assert "nothing to run: all 4 case(s) of tiny have a result" in output
    assert stand_in.sorted == []


def test_dry_run_and_status_print_the_matrix(ran):
    spec, out, _ = ran
    code, output = _study("run", str(spec), "--local", "--out", str(out), "--dry-run")
    assert code == 0, output
    assert output.count("done") == 4 and "estimate for the 0 case(s) to run" in output
    code, output = _study("run", str(spec), "--local", "--out", str(out), "--dry-run", "--rerun")
    assert "estimate for the 4 case(s) to run" in output and "$" in output
    code, output = _study("status", str(spec), "--local", "--out", str(out))
    assert code == 0, output
    assert "rec1" in output and "drops-one" in output and "succeeded 1" in output


def test_a_case_whose_results_are_gone_or_whose_recording_changed_runs_again(ran, tmp_path):
    spec, out, _ = ran
    # Work on a copy: the module's study stays as it was for the other tests.
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    gone = _cases(out)[("rec2", "truth")]
    shutil.rmtree(copy / "runs" / gone["run_id"])

    with patched_sorter() as stand_in:
        code, output = _study("run", str(spec), "--local", "--out", str(copy))

    assert code == 0, output
    assert stand_in.sorted == ["tridesclous2"]
    assert "ran 1 case(s), skipped 3" in output


def test_a_changed_recording_gets_a_new_run_id(ran, recordings, tmp_path):
    from spikebatch.study.cases import DigestCache, make_cases, resolve_recordings
    from spikebatch.study.spec import load_spec

    spec_path, _, _ = ran
    spec = load_spec(spec_path)
    before = make_cases(spec, resolve_recordings(spec))
    copy = tmp_path / "rec1.nwb"
    shutil.copy(recordings[0].nwb, copy)
    document = spec_document(recordings)
    document["recordings"][0]["input_uri"] = copy.as_uri()
    moved = make_cases(
        spec.model_validate(document), resolve_recordings(spec.model_validate(document))
    )
    copy.write_bytes(copy.read_bytes() + b"\0")  # other bytes, same path
    cache = DigestCache(tmp_path / "digests.json")
    changed = make_cases(spec, resolve_recordings(spec.model_validate(document), digests=cache))
    assert before[0].run_id != moved[0].run_id  # another path: another source
    assert moved[0].run_id != changed[0].run_id  # same path, other bytes
    assert moved[2].run_id == changed[2].run_id  # rec2 untouched


def test_a_case_over_its_timeout_is_timed_out_and_the_study_goes_on(tmp_path, recordings):
    document = spec_document(recordings[:1])
    document["sorters"][0]["timeout_minutes"] = 0.02  # 1.2 s
    spec = write_spec(tmp_path / "t.yaml", document)
    out = tmp_path / "out"
    with patched_sorter() as stand_in:
        stand_in.sleep["tridesclous2"] = 60.0
        stand_in.fail.add("spykingcircus2")  # an errored case beside it
        code, output = _study("run", str(spec), "--local", "--out", str(out))

    assert code == 0, output
    assert "rec1 x truth: timed_out" in output and "rec1 x drops-one: failed" in output
    record = json.loads(next((out / "runs").glob("*tridesclous2*/run.json")).read_text())
    assert record["status"] == "failed" and record["stop"]["kind"] == "timeout"
    assert "timed out after 0.02 min" in record["error"]["message"]
    _study("results", str(spec), "--local", "--out", str(out))
    cases = _cases(out)
    timed_out, failed = cases[("rec1", "truth")], cases[("rec1", "drops-one")]
    assert (timed_out["status"], timed_out["timed_out"], timed_out["errored"]) == (
        "timed_out",
        True,
        False,
    )
    assert (failed["status"], failed["timed_out"], failed["errored"]) == ("failed", False, True)
    # Failed and timed-out cases have a result: only --rerun-failed runs them again.
    with patched_sorter() as stand_in:
        assert "nothing to run" in _study("run", str(spec), "--local", "--out", str(out))[1]
        code, output = _study(
            "run", str(spec), "--local", "--out", str(out), "--rerun-failed", "--only", "drops-one"
        )
    assert code == 0, output
    assert stand_in.sorted == ["spykingcircus2"]


def test_a_study_stopped_midway_finishes_exactly_the_rest_on_rerun(tmp_path, recordings):
    document = spec_document(recordings[:1])
    spec = write_spec(tmp_path / "s.yaml", document)
    out = tmp_path / "out"
    with patched_sorter() as stand_in:
        stand_in.stop.add("spykingcircus2")  # Ctrl-C during the second case
        code, output = _study("run", str(spec), "--local", "--out", str(out))
    assert code == 130, output
    assert stand_in.sorted == ["tridesclous2", "spykingcircus2"]

    with patched_sorter() as stand_in:
        code, output = _study("run", str(spec), "--local", "--out", str(out))

    assert code == 0, output
    assert stand_in.sorted == ["spykingcircus2"]
    _study("results", str(spec), "--local", "--out", str(out))
    assert {c["status"] for c in _cases(out).values()} == {"succeeded"}

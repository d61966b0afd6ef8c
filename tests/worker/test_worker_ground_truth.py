"""``GROUND_TRUTH``: the sort scored against known spike trains, read and checked before it.

GIVEN a recording with known spikes (its own units table, another NWB, or a SpikeInterface
sorting folder) WHEN the worker runs with ``GROUND_TRUTH`` THEN each part is scored against
its own electrode groups' true units with SpikeInterface's comparison, and
``ground_truth_score.json`` (per part, plus a summary with several) and run.json's
``ground_truth`` hold the result; a truth that cannot be used fails in ``open``, before any
sort. Scoring mechanics use a sorter stand-in that returns the truth itself (accuracy 1 on
the right units, 0 on the wrong ones); ``test_..._kilosort4`` sorts for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spikebatch.worker import ground_truth, layout, recording
from spikebatch.worker.__main__ import main
from spikebatch.worker.settings import ConfigError, WorkerSettings
from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb
from tests.support.spikeforest import write_spikeforest_nwb

SMALL = GroundTruthSpec(duration_s=4.0, num_channels=8, num_units=3, seed=7)
BASE = {"INPUT_URI": "file:///data/rec.nwb", "OUTPUT_URI": "file:///results", "SORTER": "simple"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"GROUND_TRUTH": "unit"}, "GROUND_TRUTH: expected 'units'"),
        ({"GROUND_TRUTH": "ftp://host/truth.nwb"}, "GROUND_TRUTH: expected 'units'"),
        ({"GROUND_TRUTH": "file://truth.nwb"}, "GROUND_TRUTH: file:// URIs need an absolute"),
        ({"GROUND_TRUTH": "s3://"}, "GROUND_TRUTH: expected"),
        ({"GROUND_TRUTH_SNR_THRESHOLD": "3"}, "GROUND_TRUTH_SNR_THRESHOLD: only means"),
        (
            {"GROUND_TRUTH": "units", "GROUND_TRUTH_SNR_THRESHOLD": "-1"},
            "GROUND_TRUTH_SNR_THRESHOLD: must be a finite SNR >= 0",
        ),
        (
            {"GROUND_TRUTH": "units", "GROUND_TRUTH_MATCH_SCORE": "1.5"},
            "GROUND_TRUTH_MATCH_SCORE: must be an agreement score in (0, 1]",
        ),
        (
            {"GROUND_TRUTH": "units", "GROUND_TRUTH_WELL_DETECTED_SCORE": "high"},
            "GROUND_TRUTH_WELL_DETECTED_SCORE: expected a number",
        ),
        ({"PROBE": "NP9999"}, "PROBE: expected a probeinterface JSON"),
        ({"PROBE": "{not json"}, "PROBE: inline probeinterface JSON: not valid JSON"),
        ({"PROBE": '{"probes": 3}'}, "PROBE: inline probeinterface JSON: not a probeinterface"),
    ],
)
def test_bad_ground_truth_and_probe_values_are_one_line_errors(extra, message):
    with pytest.raises(ConfigError) as caught:
        WorkerSettings.from_env({**BASE, **extra})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_good_values_and_defaults():
    settings = WorkerSettings.from_env(
        {**BASE, "GROUND_TRUTH": "s3://bucket/gt/sorting/", "GROUND_TRUTH_SNR_THRESHOLD": "3"}
    )
    assert settings.ground_truth == "s3://bucket/gt/sorting"
    params = settings.score_params
    assert (params.snr_threshold, params.match_score, params.well_detected_score) == (3, 0.5, 0.8)
    assert WorkerSettings.from_env({**BASE, "PROBE": "neuropixels-1.0"}).probe_setting.value == (
        "NP1000"
    )
    # PROBE changes the sort, so the run id; GROUND_TRUTH does not.
    plain = WorkerSettings.from_env(BASE).effective_run_id
    assert WorkerSettings.from_env({**BASE, "GROUND_TRUTH": "units"}).effective_run_id == plain
    assert WorkerSettings.from_env({**BASE, "PROBE": "NP1000"}).effective_run_id != plain


def _parts(nwb: Path, by_group: bool = False) -> list:
    series = layout.choose(layout.local_series(nwb), None, nwb.name)
    return recording.plan_parts(nwb, series, by_group=by_group)


@pytest.mark.parametrize(
    "clock", [{"starting_time": 12.5}, {"timestamps": True, "starting_time": 3.0}]
)
def test_truth_is_aligned_to_a_recording_that_does_not_start_at_zero(tmp_path, clock):
    from spikeinterface.extractors import read_nwb_sorting

    written = write_spikeforest_nwb(tmp_path / "sf.nwb", SMALL, **clock)
    parts = _parts(written.nwb)

    own = ground_truth.load("units", written.nwb, parts, tmp_path).parts[""].sorting
    # Another file's units (here the same file, read as a foreign truth): the same samples.
    other = ground_truth.load(written.nwb.as_uri(), written.nwb, parts, tmp_path).parts[""]
    spikeinterface = read_nwb_sorting(
        written.nwb, electrical_series_path="acquisition/ElectricalSeries"
    )
    for unit in written.truth.unit_ids:
        expected = written.truth.get_unit_spike_train(unit)
        assert np.array_equal(own.get_unit_spike_train(int(unit)), expected)
        assert np.array_equal(other.sorting.get_unit_spike_train(int(unit)), expected)
        assert np.array_equal(spikeinterface.get_unit_spike_train(int(unit)), expected)


def _run(env: dict[str, str], capsys) -> tuple[int, str]:
    code = main(env)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("spikebatch-")]
    return code, lines[-1] if lines else ""


def _env(nwb: Path, tmp_path: Path, run_id: str, **extra: str) -> dict[str, str]:
    return {
        "INPUT_URI": nwb.as_uri(),
        "OUTPUT_URI": (tmp_path / "out").as_uri(),
        "RUN_ID": run_id,
        "SORTER": "simple",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        **extra,
    }


def test_unusable_truths_fail_in_open_before_any_sort(tmp_path, small_gt, capsys):
    outside = write_spikeforest_nwb(tmp_path / "late.nwb", SMALL, extra_spike_s=1000.0)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a truth")
    cases = [
        (outside.nwb, "units", "GROUND_TRUTH: 1 spike times of true unit 3 (e.g. 1000.0000 s)"),
        (small_gt.nwb, "units", "GROUND_TRUTH: the input NWB has no units table"),
        (small_gt.nwb, notes.as_uri(), "GROUND_TRUTH: file://"),
        (small_gt.nwb, (tmp_path / "gone").as_uri(), "GROUND_TRUTH: no such file or folder"),
        (small_gt.nwb, (tmp_path).as_uri(), "is not a SpikeInterface sorting folder"),
    ]
    for i, (nwb, value, message) in enumerate(cases):
        code, line = _run(_env(nwb, tmp_path, f"bad-{i}", GROUND_TRUTH=value), capsys)

        assert code == 1, line
        assert line.startswith("spikebatch-worker: failed in open: GROUND_TRUTH: "), line
        assert message in line, line
        record = json.loads((tmp_path / "out" / f"bad-{i}" / "run.json").read_text())
        assert record["error"]["stage"] == "open" and "sort" not in record["timings_s"]
    assert (
        "neither an NWB (HDF5) file nor a sorting folder"
        in _run(_env(small_gt.nwb, tmp_path, "bad-txt", GROUND_TRUTH=notes.as_uri()), capsys)[1]
    )


@pytest.fixture(scope="module")
def two_probe_units(tmp_path_factory: pytest.TempPathFactory):
    """Two probes, two shanks each, the truth also in the file's units table (by group)."""
    return write_ground_truth_nwb(
        tmp_path_factory.mktemp("gt-two-units"),
        GroundTruthSpec(
            duration_s=4.0, num_channels=8, num_units=3, seed=3, n_probes=2, num_shanks=2
        ),
        units_table=True,
    )


@pytest.mark.parametrize("source", ["units", "folders"])
def test_a_two_probe_session_is_scored_per_probe(
    tmp_path, two_probe_units, truth_as_sorter, source
):
    value = "units"
    if source == "folders":  # one SpikeInterface sorting folder per probe, named by series
        for name, folder in two_probe_units.sorting_dirs.items():
            shutil.copytree(folder, tmp_path / "truths" / name)
        value = (tmp_path / "truths").as_uri()
    env = _env(two_probe_units.nwb, tmp_path, "two", GROUND_TRUTH=value)

    assert main(env) == 0

    run = tmp_path / "out" / "two"
    record = json.loads((run / "run.json").read_text())
    n = two_probe_units.spec.num_units
    for name in two_probe_units.series_names:
        score = json.loads((run / "probes" / name / "ground_truth_score.json").read_text())
        assert score["part"] == name and score["ground_truth"] == value
        assert score["summary"]["num_true_units"] == n
        assert [u["accuracy"] for u in score["units"]] == [
            1.0
        ] * n  # its own units, not the other's
        assert all(u["best_match_unit_id"] == u["true_unit_id"] for u in score["units"])
        assert all(u["snr"] > 0 for u in score["units"])
        assert set(score["electrode_groups"]) == {f"{name[-6:]}Shank0", f"{name[-6:]}Shank1"}
    summary = json.loads((run / "ground_truth_score.json").read_text())
    assert summary["summary"]["num_true_units"] == 2 * n
    assert summary["summary"]["false_positive"] == 0 and summary["summary"]["well_detected"] >= 2
    assert set(summary["parts"]) == set(two_probe_units.series_names)
    assert record["ground_truth"]["summary"] == summary["summary"]
    assert "ground_truth_score.json" in record["outputs"]


def test_each_shank_is_scored_against_its_own_units(tmp_path, two_probe_units, truth_as_sorter):
    env = _env(
        two_probe_units.nwb,
        tmp_path,
        "shanks",
        GROUND_TRUTH="units",
        SORT_BY_GROUP="true",
        ELECTRICAL_SERIES_PATH="acquisition/ElectricalSeriesProbe0",
    )

    assert main(env) == 0

    record = json.loads((tmp_path / "out" / "shanks" / "run.json").read_text())
    counts = record["ground_truth"]["parts"]
    assert sum(p["num_true_units"] for p in counts.values()) == two_probe_units.spec.num_units
    assert all(p["accuracy"] in (1.0, None) for p in counts.values())


def test_a_truth_without_groups_cannot_be_split_across_probes(tmp_path, two_probe_units, capsys):
    import spikeinterface as si

    merged = si.load(two_probe_units.sorting_dirs["ElectricalSeriesProbe0"])
    merged.save(folder=tmp_path / "merged")
    env = _env(
        two_probe_units.nwb, tmp_path, "nogroups", GROUND_TRUTH=(tmp_path / "merged").as_uri()
    )

    code, line = _run(env, capsys)

    assert code == 1 and "failed in open: GROUND_TRUTH:" in line
    assert "cannot tell which of the 2 parts each one is on" in line

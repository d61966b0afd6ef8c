"""Every probe of a session: several raw ElectricalSeries and none named -> each one sorted.

GIVEN a session NWB with two probes (own devices, electrode groups and raw series) WHEN the
worker runs with no ELECTRICAL_SERIES_PATH THEN each probe is sorted one after the other in
the same job, its sorting, QC and figures land under ``probes/<series>/``, and one
``units.nwb`` holds every probe's units, each tied to its probe's electrode group.
``SORT_BY_GROUP`` sorts each shank (channel group) on its own. Single-series runs keep the
flat layout (``tests/worker/test_worker_e2e.py``). That ``units.nwb`` reads without
guessing: every column described, none all NaN, the source's experimenter, experiment
description and keywords carried over.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from spikebatch.worker import layout, nwb_columns, sort
from spikebatch.worker.__main__ import main
from spikebatch.worker.errors import InputError
from spikebatch.worker.layout import SeriesInfo
from tests.support.ground_truth import (
    GroundTruthFiles,
    GroundTruthSpec,
    score,
    write_ground_truth_nwb,
)
from tests.worker.helpers import s3_json, s3_keys

FAST_SORTER = {"SORTER": "simple", "SORTER_PARAMS": '{"seed": 0}'}
PROBES = ["ElectricalSeriesProbe0", "ElectricalSeriesProbe1"]


def _units_table(bucket: str, key: str, tmp_path):
    from spikebatch import aws

    path = tmp_path / "units.nwb"
    aws.client("s3").download_file(bucket, key, str(path))
    return path


def _electrode_groups_of_units(path) -> list[tuple[str, str, str]]:
    """(unit_name, electrode group, device) of every unit in units.nwb."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(path, "r") as io:
        units = io.read().units
        groups = units["electrode_group"].data[:]
        return [
            (str(name), g.name, g.device.name)
            for name, g in zip(units["unit_name"].data[:], groups, strict=True)
        ]


def test_every_probe_is_sorted_with_results_per_probe_and_one_units_nwb(
    two_probe_gt, bucket, scratch, tmp_path
):
    env = {
        "INPUT_URI": two_probe_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        "RUN_ID": "two-probes",
        **FAST_SORTER,
    }

    assert main(env) == 0

    prefix = "results/two-probes/"
    keys = set(s3_keys(bucket, prefix))
    for probe in PROBES:
        for name in ("quality_metrics.csv", "sorting/spikes.npy", "report/units_summary.png"):
            assert f"{prefix}probes/{probe}/{name}" in keys
    assert f"{prefix}units.nwb" in keys
    assert f"{prefix}sorting/spikes.npy" not in keys  # no flat layout with several probes

    record = s3_json(bucket, prefix + "run.json")
    assert record["input"]["electrical_series_paths"] == [f"acquisition/{p}" for p in PROBES]
    assert record["input"]["electrical_series_path"] is None
    assert record["input"]["n_channels"] == 2 * two_probe_gt.spec.num_channels
    parts = {p["key"]: p for p in record["parts"]}
    assert list(parts) == PROBES
    probe0 = parts["ElectricalSeriesProbe0"]
    assert probe0["results"] == "probes/ElectricalSeriesProbe0/"
    assert probe0["electrode_groups"] == ["Probe0Shank0", "Probe0Shank1"]
    assert record["units"]["count"] == sum(p["units"]["count"] for p in parts.values())

    units = _electrode_groups_of_units(_units_table(bucket, prefix + "units.nwb", tmp_path))
    assert len(units) == record["units"]["count"]
    for name, group, device in units:
        series, _, unit_id = name.partition("/")
        probe = series.removeprefix("ElectricalSeries")
        assert device == probe and group.startswith(probe)  # tied to its own probe's group
        assert unit_id
    assert {series for series, *_ in (n.partition("/") for n, _, _ in units)} == set(PROBES)
    assert record["nwbinspector"].get("CRITICAL", 0) == 0
    assert record["scratch"]["deleted_but_open"] == []


def test_sort_by_group_sorts_each_shank_on_its_own(two_probe_gt, bucket, scratch, tmp_path):
    env = {
        "INPUT_URI": two_probe_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        "ELECTRICAL_SERIES_PATH": "acquisition/ElectricalSeriesProbe1",
        "SORT_BY_GROUP": "true",
        "RUN_ID": "by-shank",
        **FAST_SORTER,
    }

    assert main(env) == 0

    record = s3_json(bucket, "results/by-shank/run.json")
    parts = record["parts"]
    assert [p["key"] for p in parts] == [
        "ElectricalSeriesProbe1-Probe1Shank0",
        "ElectricalSeriesProbe1-Probe1Shank1",
    ]
    assert [p["group"] for p in parts] == ["Probe1Shank0", "Probe1Shank1"]
    assert all(p["n_channels"] == two_probe_gt.spec.num_channels // 2 for p in parts)
    assert record["input"]["electrical_series_path"] == "acquisition/ElectricalSeriesProbe1"
    units = _electrode_groups_of_units(_units_table(bucket, "results/by-shank/units.nwb", tmp_path))
    for name, group, _ in units:
        assert name.startswith(f"ElectricalSeriesProbe1-{group}/")  # each shank's own units


#: What a lab's session file says about the experiment (pynwb NWBFile fields).
SOURCE_SESSION = {
    "experimenter": ["Doe, Jane", "Roe, Richard"],
    "experiment_description": "Spontaneous activity in mouse visual cortex, two probes",
    "keywords": ["ecephys", "visual cortex"],
}


def _kilosort_like(truth: GroundTruthFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sorter stood in by each probe's true units, carrying Kilosort's properties (as
    SpikeInterface's Kilosort reader sets them), one property with no value (all NaN) and
    one with a value on a single unit of the second probe."""
    from spikeinterface.core import NumpySorting

    def run_sort(recording, sorter, params, folder, job_kwargs):
        sorting = NumpySorting.from_sorting(truth.load_sorting(folder.name))
        n = sorting.get_num_units()
        sorting.set_property("original_cluster_id", np.arange(n))
        sorting.set_property("KSLabel", np.array(["good", "mua"] * n)[:n])
        sorting.set_property("KSLabel_repeat", np.array(["good", "mua"] * n)[:n])
        sorting.set_property("ContamPct", np.linspace(0.0, 40.0, n))
        sorting.set_property("Amplitude", np.linspace(20.0, 60.0, n))
        sorting.set_property("unmeasured", np.full(n, np.nan))
        partly = np.full(n, np.nan)
        partly[0] = 1.0 if folder.name.endswith("Probe1") else np.nan
        sorting.set_property("partly_measured", partly)
        return sorting

    monkeypatch.setattr(sort, "run_sort", run_sort)


def test_units_nwb_is_described_and_carries_the_sources_experiment(tmp_path, monkeypatch):
    from nwbinspector import inspect_nwbfile
    from pynwb import NWBHDF5IO

    truth = write_ground_truth_nwb(
        tmp_path / "gt",
        GroundTruthSpec(duration_s=4.0, num_channels=8, num_units=3, seed=3, n_probes=2),
        session=SOURCE_SESSION,
    )
    _kilosort_like(truth, monkeypatch)
    env = {
        "INPUT_URI": truth.nwb.as_uri(),
        "OUTPUT_URI": (tmp_path / "out").as_uri(),
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        "RUN_ID": "described",
        "SORTER": "simple",
    }

    assert main(env) == 0

    path = tmp_path / "out" / "described" / "units.nwb"
    found = {(m.check_function_name, m.object_name) for m in inspect_nwbfile(nwbfile_path=path)}
    assert not {name for check, name in found if check == "check_description"}  # none missing
    assert not {name for check, name in found if check == "check_col_not_nan"}
    for check in ("check_experimenter_exists", "check_experiment_description", "check_keywords"):
        assert check not in {c for c, _ in found}
    with NWBHDF5IO(path, "r") as io:
        nwb = io.read()
        assert nwb.experimenter == tuple(SOURCE_SESSION["experimenter"])
        assert nwb.experiment_description == SOURCE_SESSION["experiment_description"]
        assert list(nwb.keywords[:]) == SOURCE_SESSION["keywords"]
        assert "gt-seed3" in nwb.subject.description  # the source session's, nothing invented
        units = nwb.units
        assert units["KSLabel"].description == nwb_columns.UNIT_COLUMNS["KSLabel"]
        assert units["snr"].description == nwb_columns.UNIT_COLUMNS["snr"]
        assert units["unit_name"].description == nwb_columns.UNIT_COLUMNS["unit_name"]
        assert "no description of it" in units["partly_measured"].description
        assert "unmeasured" not in units.colnames
        partly = units["partly_measured"][:]
        assert np.isnan(partly).sum() == len(partly) - 1  # kept: it has one value
        assert "no description of it" not in nwb.electrodes["noise_level_mad_scaled"].description


def test_every_metric_and_label_column_has_a_description():
    from spikebatch.quality import QUALITY_METRIC_COLUMNS, TEMPLATE_METRIC_COLUMNS
    from spikebatch.worker.labels import LABEL_COLUMN, REASON_COLUMN

    named = [*QUALITY_METRIC_COLUMNS, *TEMPLATE_METRIC_COLUMNS, LABEL_COLUMN, REASON_COLUMN]
    assert set(named) <= set(nwb_columns.UNIT_COLUMNS)
    for description in [
        *nwb_columns.UNIT_COLUMNS.values(),
        *nwb_columns.ELECTRODE_COLUMNS.values(),
    ]:
        assert len(description) > 30 and description.endswith(".")
    assert nwb_columns.unit_descriptions(["a_sorters_own"])["a_sorters_own"].startswith(
        "The unit property 'a_sorters_own'"
    )


def _info(path: str, rate: float | None, channels: int = 384) -> SeriesInfo:
    return SeriesInfo(path, n_frames=30_000, n_channels=channels, itemsize=2, rate_hz=rate)


def test_lfp_band_series_are_not_sorted():
    ap0, ap1 = (
        _info("acquisition/ElectricalSeriesAP0", 30_000.0),
        _info("acquisition/ElectricalSeriesAP1", 30_000.0),
    )
    lf = _info("acquisition/ElectricalSeriesLF0", 2_500.0)
    processed = _info("processing/ecephys/LFP/ElectricalSeries", 2_500.0)

    assert layout.choose([ap0, lf, ap1, processed], None, "s.nwb") == [ap0, ap1]
    assert layout.choose([ap0, lf], "/acquisition/ElectricalSeriesLF0", "s.nwb") == [lf]
    with pytest.raises(InputError, match=r"no spike-band ElectricalSeries \(>= 10 kHz\)"):
        layout.choose([lf], None, "s.nwb")
    assert layout.choose([processed], None, "s.nwb") == [processed]
    with pytest.raises(InputError, match="none in acquisition"):
        layout.choose([processed, _info("processing/x/ElectricalSeries", 30_000.0)], None, "s")


#: Two probes of 40 s x 32 channels, 8 units each (as the single-probe e2e test), sorted by
#: Kilosort4 without its drift correction (``nblocks=0``: no drift here, and the estimate was
#: half of each sort; the e2e test sorts with it): ~40 s per probe on 2 idle CPUs.
TWO_PROBE_SPEC = GroundTruthSpec(
    duration_s=40.0, num_channels=32, num_units=8, firing_rate_hz=15.0, seed=42, n_probes=2
)


@pytest.mark.slow
def test_a_two_probe_session_scores_per_probe_with_kilosort4(tmp_path, bucket, capsys):
    truth = write_ground_truth_nwb(tmp_path / "gt", TWO_PROBE_SPEC)
    env = {
        "INPUT_URI": truth.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SORTER": "kilosort4",
        "SORTER_PARAMS": json.dumps({"torch_device": "cpu", "nblocks": 0}),
        "RUN_ID": "two-probes-ks4",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
    }

    assert main(env) == 0, capsys.readouterr().err[-3000:]

    import spikeinterface as si
    from spikeinterface.extractors import read_nwb_recording

    from spikebatch import aws

    record = s3_json(bucket, "results/two-probes-ks4/run.json")
    assert record["preprocessing"]["applied"] == []  # Kilosort filters on its own; no shifts here
    for series in truth.series_names:
        folder = tmp_path / "results" / series
        prefix = f"results/two-probes-ks4/probes/{series}/sorting/"
        for key in s3_keys(bucket, prefix):
            target = folder / key.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            aws.client("s3").download_file(bucket, key, str(target))
        recording = read_nwb_recording(
            file_path=truth.nwb, electrical_series_path=f"acquisition/{series}"
        )
        result = score(si.load(folder), truth.load_sorting(series), recording)
        print(
            series,
            "accuracy",
            json.dumps(result.summary),
        )
        assert result.summary["num_true_units_above_snr"] >= 5
        assert result.summary["accuracy"] >= 0.8
    assert record["scratch"]["peak_bytes"] <= (
        1.2 * record["scratch"]["raw_bytes"] + record["input"]["size"]
    )  # Kilosort4 writes no copy: the traces (+ the NWB while converting)

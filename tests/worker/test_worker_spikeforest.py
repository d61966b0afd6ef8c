"""SpikeForest's DANDI layout (000618): pynwb-written files the worker used to refuse.

GIVEN float traces with no ``conversion`` (uV values NWB would read as volts), contact
positions only in the electrodes table's x/y, one electrode group and the truth in
``units`` WHEN the worker opens them THEN it decides the unit from the data, takes x/y as the
probe layout (and says so in run.json), hands the sorter int16 without clipping or visible
loss, and scores the sort against the file's own units (``GROUND_TRUTH=units``).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from spikebatch.worker import geometry, layout, recording
from spikebatch.worker.__main__ import main
from spikebatch.worker.errors import InputError
from spikebatch.worker.simulate import GAIN_UV, GroundTruthSpec
from tests.support.spikeforest import write_spikeforest_nwb

SMALL = GroundTruthSpec(duration_s=4.0, num_channels=8, num_units=3, seed=7)


def _part(nwb, probe=None):
    series = layout.choose(layout.local_series(nwb), None, nwb.name)
    [part] = recording.plan_parts(nwb, series, by_group=False, probe=probe)
    return part


@pytest.mark.parametrize(
    ("kwargs", "unit", "basis"),
    [
        ({}, "uV", "magnitude"),  # SpikeForest's own: uV values, conversion 1.0
        ({"scale": 1e-6}, "V", "magnitude"),  # honest volts, conversion 1.0
        ({"scale": 1e-3}, "mV", "magnitude"),
        ({"conversion": 1e-6}, "file conversion", "conversion"),  # the file says it
    ],
)
def test_float_traces_reach_the_sorter_as_int16_in_uv_without_clipping(
    tmp_path, kwargs, unit, basis
):
    written = write_spikeforest_nwb(tmp_path / "sf.nwb", SMALL, **kwargs)

    part = _part(written.nwb)
    rec = recording.open_part(written.nwb, part)

    scale = part.scale.as_record()
    assert (scale["unit"], scale["unit_from"], scale["sorter_input"]) == (unit, basis, "int16")
    assert rec.get_dtype() == np.int16
    raw = rec.get_traces()
    assert np.abs(raw).max() <= 32_000  # the largest sample maps to 32,000: nothing clips
    step = scale["int16_step_uv"]
    error = np.abs(rec.get_traces(return_in_uV=True) - written.traces_uv).max()
    assert error <= 0.51 * step + 1e-4  # rounding only
    assert scale["step_over_noise"] < 0.01  # the step is far below the noise
    assert scale["noise_uv"] == pytest.approx(SMALL.noise_uv, rel=0.3)


def test_int16_traces_keep_the_files_conversion(small_gt):
    part = _part(small_gt.nwb)
    rec = recording.open_part(small_gt.nwb, part)

    assert part.scale.as_record() == {
        "dtype": "int16",
        "unit_from": "integer, the file's conversion",
    }
    assert rec.get_dtype() == np.int16
    assert np.allclose(rec.get_channel_gains(), GAIN_UV)
    assert part.geometry.source == "rel_x/rel_y"


def test_x_y_are_taken_as_the_probe_layout_and_recorded(tmp_path):
    written = write_spikeforest_nwb(tmp_path / "sf.nwb", SMALL)

    part = _part(written.nwb)
    rec = recording.open_part(written.nwb, part)

    assert part.geometry.source == "x/y" and "probe coordinates" in part.geometry.detail
    assert np.allclose(rec.get_channel_locations(), written.positions)


def test_brain_coordinates_are_not_taken_for_a_probe():
    xy = {"x": np.array([0.0, 0.0, 16.0, 16.0]), "y": np.array([0.0, 20.0, 0.0, 20.0])}
    assert geometry.xy_verdict(xy) is None
    assert "z varies" in geometry.xy_verdict({**xy, "z": np.array([1.0, 2.0, 3.0, 4.0])})
    meters = {k: v * 1e-6 for k, v in xy.items()}
    assert "spacing" in geometry.xy_verdict(meters)
    assert "share" in geometry.xy_verdict({"x": np.zeros(4), "y": np.zeros(4)})


def test_a_probe_from_the_job_where_the_file_has_no_positions(tmp_path):
    from probeinterface import ProbeGroup, generate_linear_probe

    written = write_spikeforest_nwb(tmp_path / "sf.nwb", SMALL, xy=False)

    part = _part(written.nwb, geometry.parse_probe("NP1000"))
    rec = recording.open_part(written.nwb, part)
    assert part.geometry.source == "PROBE"
    assert rec.get_channel_locations().shape == (8, 2)
    assert len(np.unique(rec.get_channel_locations(), axis=0)) == 8  # NP1.0 bank 0, staggered

    group = ProbeGroup()
    group.add_probe(generate_linear_probe(num_elec=8, ypitch=25))
    inline = json.dumps(group.to_dict(array_as_list=True))
    part = _part(written.nwb, geometry.parse_probe(inline))
    rec = recording.open_part(written.nwb, part)
    assert np.allclose(rec.get_channel_locations()[:, 1], np.arange(8) * 25)

    with pytest.raises(InputError, match="PROBE has 8 contacts; the series has 16"):
        geometry.load_probe(geometry.parse_probe(inline), 16)


def test_no_positions_fail_in_open_naming_the_three_ways(tmp_path, capsys):
    written = write_spikeforest_nwb(tmp_path / "sf.nwb", SMALL, xy=False)
    env = {
        "INPUT_URI": written.nwb.as_uri(),
        "OUTPUT_URI": (tmp_path / "out").as_uri(),
        "RUN_ID": "no-positions",
        "SORTER": "simple",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
    }

    assert main(env) == 1

    [line] = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("spikebatch-")]
    assert "failed in open" in line
    for way in ("rel_x/rel_y", "x/y", "PROBE"):
        assert way in line
    record = json.loads((tmp_path / "out" / "no-positions" / "run.json").read_text())
    assert record["status"] == "failed" and record["error"]["stage"] == "open"


def test_an_electrical_series_subclass_is_found_by_type(tmp_path):
    spec = {
        "groups": [
            {"neurodata_type_def": "ProbeSeries", "neurodata_type_inc": "ElectricalSeries"},
            {"neurodata_type_def": "Snippets", "neurodata_type_inc": "SpikeEventSeries"},
        ]
    }
    with h5py.File(tmp_path / "x.nwb", "w") as h5:
        h5.create_dataset(
            "specifications/ndx-probe/0.1.0/ndx-probe.extensions", data=json.dumps(spec)
        )
        h5.create_dataset("specifications/ndx-probe/0.1.0/namespace", data="{}")
        for name, kind in (
            ("raw", "ProbeSeries"),
            ("snips", "Snippets"),
            ("b", "SpikeEventSeries"),
        ):
            group = h5.create_group(f"acquisition/{name}")
            group.attrs["neurodata_type"] = kind
            group.create_dataset("data", data=np.zeros((10, 4), dtype="int16"))
            group.create_dataset("starting_time", data=0.0).attrs["rate"] = 30_000.0

        assert [s.path for s in layout.read_series(h5)] == ["acquisition/raw"]


#: ~1 min of Kilosort4 on 2 CPU cores: 20 s x 32 channels, 8 units (SpikeForest-sized probe).
KS4_SPEC = GroundTruthSpec(duration_s=20.0, num_channels=32, num_units=8, seed=42)


@pytest.mark.slow
def test_a_spikeforest_file_is_sorted_with_kilosort4_and_scored(tmp_path, capsys):
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.extractors import read_nwb_sorting

    written = write_spikeforest_nwb(tmp_path / "sf.nwb", KS4_SPEC)
    env = {
        "INPUT_URI": written.nwb.as_uri(),
        "OUTPUT_URI": (tmp_path / "out").as_uri(),
        "RUN_ID": "spikeforest-ks4",
        "SORTER": "kilosort4",
        "SORTER_PARAMS": json.dumps({"torch_device": "cpu"}),
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        "GROUND_TRUTH": "units",
    }

    assert main(env) == 0, capsys.readouterr().err[-3000:]

    run = tmp_path / "out" / "spikeforest-ks4"
    record = json.loads((run / "run.json").read_text())
    series = record["input"]["series"]["acquisition/ElectricalSeries"]
    assert series["geometry"]["source"] == "x/y"
    assert series["traces"]["unit"] == "uV" and series["traces"]["sorter_input"] == "int16"
    score = json.loads((run / "ground_truth_score.json").read_text())
    summary = score["summary"]
    print("spikeforest accuracy", json.dumps(summary))
    assert record["ground_truth"]["summary"] == summary
    assert summary["num_true_units"] == KS4_SPEC.num_units
    assert summary["num_true_units_above_snr"] >= 5
    assert summary["accuracy"] >= 0.8

    # The same number from the published units and the truth, SpikeInterface's comparison.
    sorted_units = read_nwb_sorting(
        run / "units.nwb", sampling_frequency=KS4_SPEC.sampling_frequency, t_start=0.0
    )
    performance = compare_sorter_to_ground_truth(
        written.truth, sorted_units, exhaustive_gt=True
    ).get_performance()
    counted = [str(u["true_unit_id"]) for u in score["units"] if u["snr"] >= 5]
    assert abs(float(performance.loc[counted, "accuracy"].mean()) - summary["accuracy"]) <= 0.01
    names = {str(u) for u in sorted_units.unit_ids}
    assert {
        str(u["best_match_unit_id"]) for u in score["units"] if u["best_match_unit_id"] is not None
    } <= names

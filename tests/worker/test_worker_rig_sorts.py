"""Kilosort4 on CPU on recordings as the rig wrote them: a two-probe SpikeGLX run from an S3
prefix through the worker, and an Open Ephys recording through ``spikebatch run-local``,
each probe scored against its own true units (the worker's ``GROUND_TRUTH``), and the Open
Ephys score checked again from the sorting the run wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spikebatch.worker.__main__ import main
from spikebatch.worker.simulate import GroundTruthSpec
from spikebatch.worker.simulate_rig import write_openephys_recording, write_spikeglx_run
from tests.worker.helpers import s3_json
from tests.worker.test_worker_rig_inputs import _upload

#: 20 s of 6 units per probe on 32 contacts of a Neuropixels 1.0 (2.34 uV per bit, as SpikeGLX
#: stores it), 5 uV of noise as on a real probe. The units sit over the saved contacts and
#: each channel carries its ADC delay (``simulate_rig.rig_ground_truth``), so the worker's
#: default chain (the phase shift, then Kilosort4's own filter) runs as on a rig's file.
#: Kilosort4 without its drift correction (``nblocks=0``): 20 s on 32 contacts has no drift to
#: correct, and the estimate was half of each sort (~30 s of 60 on 2 idle cores). The default,
#: with drift correction, is sorted by test_worker_e2e, test_worker_spikeforest and
#: test_worker_stop.
SPEC = GroundTruthSpec(duration_s=20.0, num_channels=32, num_units=6, noise_uv=5.0, seed=11)
NO_DRIFT = {"torch_device": "cpu", "nblocks": 0}
KS4 = json.dumps(NO_DRIFT)
MIN_ACCURACY = 0.8


def _recheck(sorting_dir: Path, truth_dir: Path, recording: object) -> float:
    """Mean accuracy from the run's own sorting/ against the truth (SpikeInterface), over the
    true units with SNR >= 5 on the recording, as the worker's scoring counts them (a unit
    under the noise is no sorter's to find)."""
    import spikeinterface as si
    import spikeinterface.metrics as metrics
    from spikeinterface.comparison import compare_sorter_to_ground_truth
    from spikeinterface.core import NumpySorting
    from spikeinterface.preprocessing import bandpass_filter

    truth = NumpySorting.from_sorting(si.load(truth_dir))  # without the generator's channel ids
    analyzer = si.create_sorting_analyzer(truth, bandpass_filter(recording), sparse=False)
    analyzer.compute(["random_spikes", "noise_levels", "templates"])
    snr = metrics.compute_quality_metrics(analyzer, metric_names=["snr"])["snr"]
    comparison = compare_sorter_to_ground_truth(truth, si.load(sorting_dir))
    accuracy = comparison.get_performance()["accuracy"]
    counted = [u for u in truth.unit_ids if snr[u] >= 5]
    assert counted, "no true unit above SNR 5"
    return float(accuracy[counted].mean())


@pytest.mark.slow
def test_a_two_probe_spikeglx_run_from_s3_is_sorted_per_probe_with_kilosort4(
    tmp_path: Path, bucket: str
) -> None:
    run = write_spikeglx_run(tmp_path / "rig", SPEC, n_probes=2)
    _upload(bucket, run.root, "uploads/rig1/sim_g0/")
    for probe in run.probes:
        shutil.copytree(probe.sorting_dir, tmp_path / "truths" / probe.stream_name)
    env = {
        "INPUT_URI": f"s3://{bucket}/uploads/rig1/sim_g0/",
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SORTER": "kilosort4",
        "SORTER_PARAMS": KS4,
        "RUN_ID": "sglx-ks4",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        "GROUND_TRUTH": (tmp_path / "truths").as_uri(),
    }
    assert main(env) == 0
    record = s3_json(bucket, "results/sglx-ks4/run.json")
    assert record["status"] == "succeeded" and record["input"]["data_type"] == "spikeglx"
    assert any(step.startswith("phase_shift") for step in record["preprocessing"]["applied"])
    assert set(record["ground_truth"]["parts"]) == {p.stream_name for p in run.probes}
    for probe in run.probes:
        key = probe.stream_name
        score = s3_json(bucket, f"results/sglx-ks4/probes/{key}/ground_truth_score.json")
        assert score["summary"]["num_true_units"] == SPEC.num_units
        assert score["summary"]["accuracy"] >= MIN_ACCURACY, (key, score["units"])


@pytest.mark.slow
def test_an_open_ephys_recording_is_sorted_with_run_local(tmp_path: Path) -> None:
    from spikebatch.cli.app import app

    recorded = write_openephys_recording(tmp_path / "rig", SPEC)
    [probe] = recorded.probes
    result = CliRunner().invoke(
        app,
        [
            "run-local",
            "--input-uri",
            recorded.root.as_uri() + "/",
            "--sorter",
            "kilosort4",
            *(arg for name, value in NO_DRIFT.items() for arg in ("--param", f"{name}={value}")),
            "--output",
            str(tmp_path / "out"),
            "--run-id",
            "oe-ks4",
        ],
        env={"SCRATCH_DIR": str(tmp_path / "scratch")},
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "out" / "oe-ks4"
    record = json.loads((run / "run.json").read_text())
    assert record["input"]["data_type"] == "openephys"
    assert record["units"]["count"] >= 1
    from spikeinterface.extractors import read_openephys

    opened = read_openephys(recorded.root, stream_name=probe.stream_name)
    accuracy = _recheck(run / "sorting", probe.sorting_dir, opened)
    assert accuracy >= MIN_ACCURACY, accuracy

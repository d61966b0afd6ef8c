"""End to end: a ground-truth NWB on the fake DANDI archive -> the real worker entrypoint ->
Kilosort4 on CPU -> results on (moto) S3, checked the way a user would check them."""

from __future__ import annotations

import csv
import io
import json

import pytest

from spikebatch import aws
from spikebatch.worker.__main__ import main
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthSpec, score, write_ground_truth_nwb
from tests.worker.helpers import ASSET, DANDISET, s3_json, s3_keys

#: Sized for ~2 min of Kilosort4 on 2 CPU cores with a stable accuracy (see the README).
E2E_SPEC = GroundTruthSpec(
    duration_s=40.0, num_channels=32, num_units=10, firing_rate_hz=15.0, seed=42
)


@pytest.mark.slow
def test_dandi_asset_sorted_with_kilosort4_and_published_to_s3(tmp_path, bucket, capsys):
    truth = write_ground_truth_nwb(tmp_path / "gt", E2E_SPEC)
    with FakeDandiArchive() as archive:
        asset = archive.add_asset(DANDISET, ASSET, truth.nwb)
        env = {
            "DANDISET_ID": DANDISET,
            "DANDI_ASSET_PATH": ASSET,
            "DANDI_API_URL": archive.api_url,
            "OUTPUT_URI": f"s3://{bucket}/results",
            "SORTER": "kilosort4",
            "SORTER_PARAMS": json.dumps({"torch_device": "cpu"}),
            "RUN_ID": "e2e-ks4",
            "INSTANCE_TYPE": "g4dn.2xlarge",
            "SCRATCH_DIR": str(tmp_path / "scratch"),
        }

        code = main(env)

    out = capsys.readouterr().out
    assert code == 0, capsys.readouterr().err
    assert "spikebatch-worker: succeeded:" in out
    prefix = "results/e2e-ks4/"
    keys = s3_keys(bucket, prefix)
    for required in ("run.json", "units.nwb", "quality_metrics.csv", "sorting/spikes.npy"):
        assert prefix + required in keys
    pngs = [k for k in keys if k.startswith(prefix + "report/") and k.endswith(".png")]
    assert {p.rsplit("/", 1)[1] for p in pngs} == {
        "units_summary.png",
        "amplitudes.png",
        "quality_metrics.png",
    }

    record = s3_json(bucket, prefix + "run.json")
    assert record["status"] == "succeeded" and record["error"] is None
    assert record["input"]["source"] == f"dandi:{DANDISET}/draft/{ASSET}"
    assert record["input"]["size"] == asset.size
    assert record["input"]["digest"]["verified"] is True
    assert record["input"]["digest"]["value"] in (asset.sha256, asset.etag)
    assert record["input"]["n_channels"] == 32 and record["input"]["sampling_frequency"] == 30000.0
    assert (
        record["sorter"]["name"] == "kilosort4"
        and record["sorter"]["params"]["torch_device"] == "cpu"
    )
    assert record["sorter"]["version"] and record["versions"]["spikeinterface"]
    assert list(record["timings_s"]) == [
        "config",
        "fetch",
        "open",
        "preprocess",
        "sort",
        "postprocess",
        "export",
        "publish",
    ]
    assert record["cost"]["instance_type"] == "g4dn.2xlarge" and record["cost"]["actual_usd"] > 0
    # Kilosort filters and re-references on its own: the CPU only phase-shifts, and this file
    # records no inter-sample shifts, so the sorter gets the traces as stored.
    assert record["preprocessing"]["steps"] == {"phase_shift": {}}
    assert record["preprocessing"]["applied"] == []
    raw = E2E_SPEC.duration_s * E2E_SPEC.sampling_frequency * E2E_SPEC.num_channels * 2
    assert record["scratch"]["raw_bytes"] == raw
    # Kilosort4 writes no copy: at most 1.2 x the traces, plus the NWB while converting.
    assert record["scratch"]["peak_bytes"] <= 1.2 * raw + asset.size
    assert record["scratch"]["plan"]["basis"] == "file"
    assert record["cost"]["estimated"]["usd"] > 0
    assert sorted(prefix + o for o in record["outputs"]) == sorted(
        k for k in keys if k != prefix + "run.json"
    )

    s3 = aws.client("s3")
    downloaded = tmp_path / "downloaded"
    for key in keys:
        target = downloaded / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))

    import spikeinterface as si

    sorting = si.load(downloaded / "sorting")
    assert sorting.get_num_units() == record["units"]["count"] > 0

    rows = list(csv.DictReader(io.StringIO((downloaded / "quality_metrics.csv").read_text())))
    assert len(rows) == sorting.get_num_units()
    assert {
        "snr",
        "isi_violations_ratio",
        "firing_rate",
        "presence_ratio",
        "amplitude_cutoff",
    } <= set(rows[0])

    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(downloaded / "units.nwb", "r") as nwb_io:
        nwb = nwb_io.read()
        assert len(nwb.units) == sorting.get_num_units()
        assert nwb.session_start_time.year == 2024  # linked to the source session
        assert nwb.subject.subject_id == "sim01"
    issues = list(inspect_nwbfile(nwbfile_path=downloaded / "units.nwb"))
    assert not [i for i in issues if i.importance.value >= Importance.CRITICAL.value]

    from spikeinterface.extractors import read_nwb_recording

    recording = read_nwb_recording(
        file_path=truth.nwb, electrical_series_path="acquisition/ElectricalSeries"
    )
    result = score(sorting, truth.load_sorting(), recording, min_snr=5.0)
    print("accuracy", json.dumps(result))
    assert result["n_scored_units"] >= 5
    assert result["mean_accuracy"] >= 0.8

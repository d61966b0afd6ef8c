"""End to end: a ground-truth NWB on the fake DANDI archive -> the real worker entrypoint ->
Kilosort4 on CPU -> results on (moto) S3 and the units published back to the dandiset,
checked the way a user would check them: sorting/, units.nwb, the labels, phy/ opened with
phy's own loader, the run's page, and the asset read back through the dandi client."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from spikebatch import aws
from spikebatch.worker.__main__ import main
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthSpec, score, write_ground_truth_nwb
from tests.worker.helpers import ASSET, DANDISET, s3_json, s3_keys

#: The key of the dandiset's owner (the same key reads the source and publishes).
OWNER_KEY = "lab-key"
#: Sized for ~2 min of Kilosort4 on 2 CPU cores with a stable accuracy (see the README).
E2E_SPEC = GroundTruthSpec(
    duration_s=40.0, num_channels=32, num_units=10, firing_rate_hz=15.0, seed=42
)


@pytest.mark.slow
def test_dandi_asset_sorted_with_kilosort4_and_published_to_s3(tmp_path, bucket, capsys):
    truth = write_ground_truth_nwb(tmp_path / "gt", E2E_SPEC)
    with FakeDandiArchive() as archive:
        asset = archive.add_asset(DANDISET, ASSET, truth.nwb)
        archive.add_user("lab", token=OWNER_KEY)
        archive.add_dandiset(DANDISET, owners=["lab"])  # the source dandiset itself
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
            "PUBLISH_DANDISET_ID": DANDISET,
            "DANDI_API_KEY": OWNER_KEY,
        }

        code = main(env)
        published = _read_back_from_dandi(archive, tmp_path)

    out = capsys.readouterr().out
    assert code == 0, capsys.readouterr().err
    assert "spikebatch-worker: succeeded:" in out
    prefix = "results/e2e-ks4/"
    keys = s3_keys(bucket, prefix)
    for required in (
        "run.json",
        "units.nwb",
        "quality_metrics.csv",
        "sorting/spikes.npy",
        "phy/params.py",
        "phy/pc_features.npy",
        "report/index.html",
    ):
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
    # The budget bounds what was held; Kilosort4 writes no copy: at most 1.25 x the traces
    # (traces, analyzer, results until the upload), plus the NWB while converting.
    assert record["scratch"]["peak_bytes"] <= record["scratch"]["plan"]["peak_bytes"]
    assert record["scratch"]["peak_bytes"] <= 1.25 * raw + asset.size
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
        "label",
        "label_reason",
    } <= set(rows[0])
    labels = {r["unit_id"]: r["label"] for r in rows}
    counts = record["labels"]["counts"]
    assert sum(counts.values()) == len(rows) and counts["good"] >= 5  # well-isolated units
    assert counts == {k: list(labels.values()).count(k) for k in ("good", "mua", "noise")}
    _check_phy(downloaded / "phy", sorting, labels)
    assert (downloaded / "report" / "index.html").stat().st_size > 100_000  # figures inside

    from nwbinspector import Importance, inspect_nwbfile
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(downloaded / "units.nwb", "r") as nwb_io:
        nwb = nwb_io.read()
        assert len(nwb.units) == sorting.get_num_units()
        assert nwb.session_start_time.year == 2024  # linked to the source session
        assert nwb.subject.subject_id == "sim01"
        assert dict(zip(nwb.units["unit_name"][:], nwb.units["label"][:], strict=True)) == labels
    issues = list(inspect_nwbfile(nwbfile_path=downloaded / "units.nwb"))
    assert not [i for i in issues if i.importance.value >= Importance.CRITICAL.value]

    from spikeinterface.extractors import read_nwb_recording

    recording = read_nwb_recording(
        file_path=truth.nwb, electrical_series_path="acquisition/ElectricalSeries"
    )
    # The units on DANDI: the file this run wrote, its asset recorded in run.json.
    publication = record["publish"]
    assert publication["status"] == "published" and publication["dandiset_id"] == DANDISET
    assert published["path"] == publication["path"] and published["id"] == publication["asset_id"]
    assert published["bytes"] == (downloaded / "units.nwb").read_bytes()
    assert published["digest"] == publication["digest"]
    assert published["activity"] == "spikebatch-run:" + publication["run_key"]
    assert publication["path"].startswith("sub-sim01/sub-sim01_ses-")
    assert publication["path"].endswith("_desc-kilosort4_ecephys.nwb")

    result = score(sorting, truth.load_sorting(), recording)  # SNR >= 5
    print("accuracy", json.dumps(result.summary))
    assert result.summary["num_true_units_above_snr"] >= 5
    assert result.summary["accuracy"] >= 0.8


def _read_back_from_dandi(archive: FakeDandiArchive, tmp_path: Path) -> dict[str, Any]:
    """The units asset on the dandiset, as anyone reads it back with the dandi client."""
    from dandi.dandiapi import DandiAPIClient

    with DandiAPIClient(api_url=archive.api_url, token=OWNER_KEY) as client:
        dandiset = client.get_dandiset(DANDISET, "draft")
        [units] = [a for a in dandiset.get_assets() if "_desc-kilosort4_" in a.path]
        metadata = units.get_raw_metadata()
        units.download(tmp_path / "from-dandi.nwb")
    [activity] = [
        a["identifier"]
        for a in metadata["wasGeneratedBy"]
        if str(a.get("identifier", "")).startswith("spikebatch-run:")
    ]
    return {
        "path": units.path,
        "id": units.identifier,
        "digest": metadata["digest"],
        "activity": activity,
        "bytes": (tmp_path / "from-dandi.nwb").read_bytes(),
    }


def _check_phy(folder: Path, sorting: Any, labels: dict[str, str]) -> None:
    """phy's own loader opens the downloaded phy/ as `phy template-gui params.py` would."""
    import pandas as pd
    from phylib.io.model import load_model

    model = load_model(folder / "params.py")
    try:
        assert model.n_spikes == sorting.count_total_num_spikes()
        ids = pd.read_csv(folder / "cluster_si_unit_ids.tsv", sep="\t", dtype={"si_unit_id": str})
        si_id = dict(zip(ids["cluster_id"], ids["si_unit_id"], strict=True))
        assert sorted(si_id.values()) == sorted(str(u) for u in sorting.unit_ids)
        assert {si_id[c]: g for c, g in model.metadata["group"].items()} == labels
        assert model.features is not None and model.features.shape[0] == model.n_spikes
    finally:
        model.close()

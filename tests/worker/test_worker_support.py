"""The test support itself: the fake DANDI archive speaks enough of the API for the real
``dandi`` client, and ground-truth files look like DANDI's and keep their probe positions."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import requests
from dandi.dandiapi import DandiAPIClient
from dandi.support.digests import get_digest

from spikebatch.worker.recording import choose_series, open_recording
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import read_probe_positions


def test_real_client_lists_pages_globs_and_reads_metadata(small_gt):
    with FakeDandiArchive(page_size=2) as archive:
        paths = [f"sub-{i}/sub-{i}_ecephys.nwb" for i in range(5)]
        for p in paths:
            archive.add_asset("000123", p, small_gt.nwb)
        dandiset = DandiAPIClient(api_url=archive.api_url).get_dandiset("000123", "draft")

        assert [a.path for a in dandiset.get_assets()] == paths  # 3 pages
        assert [a.path for a in dandiset.get_assets_by_glob("sub-[13]/*")] == [paths[1], paths[3]]
        asset = dandiset.get_asset_by_path(paths[2])
        meta = asset.get_raw_metadata()

    assert meta["contentSize"] == asset.size == small_gt.nwb.stat().st_size
    assert meta["digest"]["dandi:sha2-256"] == get_digest(small_gt.nwb, "sha256")
    assert meta["digest"]["dandi:dandi-etag"] == get_digest(small_gt.nwb, "dandi-etag")


def test_download_redirects_to_a_blob_with_ranges_and_corruption(small_gt):
    data = small_gt.nwb.read_bytes()
    with FakeDandiArchive() as archive:
        asset = archive.add_asset("000123", "a.nwb", small_gt.nwb)
        url = f"{archive.api_url}/assets/{asset.asset_id}/download/"

        head = requests.head(url, allow_redirects=False, timeout=10)
        assert head.status_code == 302 and "/blobs/" in head.headers["Location"]
        part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert part.content == data[100:200]
        assert requests.get(url, headers={"Range": "bytes=-10"}, timeout=10).content == data[-10:]

        archive.corrupt("a.nwb")
        corrupted = requests.get(url, timeout=10).content
    assert len(corrupted) == len(data) and corrupted != data


def test_embargoed_dandiset_needs_the_token(small_gt):
    with FakeDandiArchive(token="sekret") as archive:
        archive.add_asset("000123", "a.nwb", small_gt.nwb, embargoed=True)
        with pytest.raises(requests.HTTPError):
            DandiAPIClient(api_url=archive.api_url).get_dandiset(
                "000123", "draft"
            ).get_asset_by_path("a.nwb")
        client = DandiAPIClient(api_url=archive.api_url, token="sekret")
        dandiset = client.get_dandiset("000123", "draft", lazy=False)
        assert dandiset.embargo_status.value == "EMBARGOED"
        assert dandiset.get_asset_by_path("a.nwb").size == small_gt.nwb.stat().st_size


def test_ground_truth_nwb_is_int16_chunked_gzip_with_probe_positions(small_gt):
    with h5py.File(small_gt.nwb, "r") as f:
        data = f["acquisition/ElectricalSeries/data"]
        assert data.dtype == np.int16
        assert data.compression == "gzip"
        assert data.chunks is not None and data.chunks[0] < data.shape[0]
        assert data.shape == (int(small_gt.spec.duration_s * small_gt.spec.sampling_frequency), 8)

    positions = read_probe_positions(small_gt.nwb)
    assert positions.shape == (8, 2) and len({tuple(p) for p in positions}) == 8
    [series] = choose_series(small_gt.nwb, None)
    recording = open_recording(small_gt.nwb, series)
    assert recording.has_probe()
    np.testing.assert_allclose(recording.get_channel_locations(), positions)
    assert small_gt.load_sorting().get_num_units() == small_gt.spec.num_units


def test_a_two_probe_session_has_its_own_devices_groups_series_and_truths(two_probe_gt):
    from spikebatch.worker.recording import read_session

    names = ["ElectricalSeriesProbe0", "ElectricalSeriesProbe1"]
    assert two_probe_gt.series_names == names
    assert choose_series(two_probe_gt.nwb, None) == [f"acquisition/{n}" for n in names]
    assert choose_series(two_probe_gt.nwb, "/acquisition/ElectricalSeriesProbe1") == [
        "acquisition/ElectricalSeriesProbe1"
    ]
    session = read_session(two_probe_gt.nwb)
    assert set(session.devices) == {"Probe0", "Probe1"}
    assert {g: i["device"] for g, i in session.electrode_groups.items()} == {
        "Probe0Shank0": "Probe0",
        "Probe0Shank1": "Probe0",
        "Probe1Shank0": "Probe1",
        "Probe1Shank1": "Probe1",
    }
    for name in names:
        recording = open_recording(two_probe_gt.nwb, f"acquisition/{name}")
        probe = name.removeprefix("ElectricalSeries")
        assert set(recording.get_channel_groups()) == {f"{probe}Shank0", f"{probe}Shank1"}
        assert two_probe_gt.load_sorting(name).get_num_units() == 3
    first, second = (two_probe_gt.load_sorting(n) for n in names)
    assert not np.array_equal(first.to_spike_vector(), second.to_spike_vector())  # own truths


def test_embargoed_asset_is_resolved_with_the_key_from_secrets_manager(small_gt, aws_endpoint):
    from spikebatch import aws
    from spikebatch.worker.errors import InputError
    from spikebatch.worker.fetch import resolve
    from spikebatch.worker.settings import WorkerSettings

    arn = aws.client("secretsmanager").create_secret(
        Name="dandi-key-test", SecretString='{"DANDI_API_KEY": "sekret"}'
    )["ARN"]
    with FakeDandiArchive(token="sekret") as archive:
        asset = archive.add_asset("000123", "sub-1/a.nwb", small_gt.nwb, embargoed=True)
        env = {
            "DANDISET_ID": "000123",
            "DANDI_ASSET_PATH": "sub-1/a.nwb",
            "DANDI_API_URL": archive.api_url,
            "OUTPUT_URI": "s3://b/r",
        }
        with pytest.raises(InputError, match="embargoed or private: set DANDI_API_KEY"):
            resolve(WorkerSettings.from_env(env))

        resolved = resolve(WorkerSettings.from_env({**env, "DANDI_API_KEY_SECRET_ARN": arn}))

    assert resolved.url == f"{archive.base_url}/blobs/{asset.blob_id}"  # redirect resolved
    assert resolved.expected_size == asset.size
    assert resolved.digests == {"dandi:sha2-256": asset.sha256, "dandi:dandi-etag": asset.etag}


def test_the_stacks_unset_placeholder_secret_means_no_key(small_gt, aws_endpoint):
    """A fresh deploy's secret holds the placeholder: public assets must still download."""
    from spikebatch import aws
    from spikebatch.contract import UNSET_SECRET_VALUE
    from spikebatch.worker.fetch import dandi_api_key, resolve
    from spikebatch.worker.settings import WorkerSettings

    arn = aws.client("secretsmanager").create_secret(
        Name="dandi-key-unset", SecretString=UNSET_SECRET_VALUE
    )["ARN"]
    with FakeDandiArchive() as archive:
        asset = archive.add_asset("000124", "sub-1/a.nwb", small_gt.nwb)
        settings = WorkerSettings.from_env(
            {
                "DANDISET_ID": "000124",
                "DANDI_ASSET_PATH": "sub-1/a.nwb",
                "DANDI_API_URL": archive.api_url,
                "DANDI_API_KEY_SECRET_ARN": arn,
                "OUTPUT_URI": "s3://b/r",
            }
        )
        assert dandi_api_key(settings) is None
        assert resolve(settings).expected_size == asset.size

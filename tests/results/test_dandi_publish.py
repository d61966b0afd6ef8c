"""Publication of units.nwb to DANDI, against the fake archive with the real dandi client."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from spikebatch.worker import dandi_publish
from spikebatch.worker.dandi_publish import PublishError, publish_or_failure, publish_units
from tests.support.dandi_server import FakeDandiArchive

TARGET = "000500"
OWNER_KEY = "alice-key"


@pytest.fixture
def archive():
    with FakeDandiArchive() as fake:
        fake.add_user("alice", token=OWNER_KEY)
        fake.add_user("bob", token="bob-key")
        fake.add_dandiset(TARGET, owners=["alice"])
        yield fake


@pytest.fixture
def units_nwb(finished_run) -> Path:
    return finished_run.folder / "units.nwb"


def publish(archive, nwb, record, tmp_path, token=OWNER_KEY, **kw):
    return publish_units(
        nwb,
        dandiset_id=kw.pop("dandiset_id", TARGET),
        api_url=archive.api_url,
        token=token,
        record=record,
        staging=tmp_path / "staging",
        **kw,
    )


def test_the_asset_path_follows_dandis_layout_with_session_and_sorter(units_nwb):
    path = dandi_publish.asset_path(units_nwb, sorter="kilosort4")
    assert path == "sub-sim01/sub-sim01_ses-gt-seed5_desc-kilosort4_ecephys.nwb"
    assert dandi_publish.description_entity("Kilosort_2.5") == "kilosort25"


def test_units_are_published_and_read_back_through_the_dandi_client(
    archive, units_nwb, finished_run, tmp_path, caplog
):
    from dandi.dandiapi import DandiAPIClient
    from dandi.support.digests import get_digest

    archive.fail_part_uploads(1)  # S3 hiccup on the first part: the client must retry it
    with caplog.at_level(logging.INFO, logger="dandi"):
        published = publish(archive, units_nwb, finished_run.record, tmp_path)

    assert published.status == "published" and published.dandiset_id == TARGET
    part_puts = [r for r in archive.upload_requests() if r[1].startswith("/upload-parts/")]
    assert len(part_puts) == 2 and part_puts[0] == part_puts[1]  # one part, sent twice
    assert "succeeded after 1 retry" in caplog.text
    with DandiAPIClient(api_url=archive.api_url, token=OWNER_KEY) as client:
        asset = client.get_dandiset(TARGET, "draft").get_asset_by_path(published.path)
        metadata = asset.get_raw_metadata()
        asset.download(tmp_path / "back.nwb")
    assert asset.identifier == published.asset_id
    assert (tmp_path / "back.nwb").read_bytes() == units_nwb.read_bytes()
    etag = get_digest(units_nwb, "dandi-etag")
    assert published.digest["dandi:dandi-etag"] == metadata["digest"]["dandi:dandi-etag"] == etag
    assert published.record()["digest"]["dandi:sha2-256"] == get_digest(units_nwb, "sha256")
    [activity] = [
        a for a in metadata["wasGeneratedBy"] if a.get("name") == "spikebatch spike sorting"
    ]
    assert activity["identifier"] == "spikebatch-run:" + dandi_publish.run_key(finished_run.record)
    assert finished_run.record["input"]["digest"]["value"] in activity["description"]
    assert metadata["wasAttributedTo"][0]["identifier"] == "sim01"  # the source's subject
    assert json.loads(json.dumps(published.record()))["url"].endswith(
        f"/assets/{asset.identifier}/"
    )


def test_a_rerun_of_the_same_run_uploads_nothing(archive, units_nwb, finished_run, tmp_path):
    first = publish(archive, units_nwb, finished_run.record, tmp_path)
    # The rerun writes a new units.nwb: other bytes (object ids, dates), same run.
    rewritten = tmp_path / "rewritten.nwb"
    shutil.copy(units_nwb, rewritten)
    with rewritten.open("r+b") as fh:
        fh.seek(0, 2)
        fh.write(b"\0" * 1024)  # a different file: a digest check would upload it again
    before = len(archive.upload_requests())

    again = publish(archive, rewritten, finished_run.record, tmp_path)

    assert again.status == "unchanged" and again.asset_id == first.asset_id
    assert archive.upload_requests()[before:] == []
    assert [a.asset_id for a in archive.assets(TARGET)] == [first.asset_id]


def test_another_run_of_the_session_replaces_the_asset(archive, units_nwb, finished_run, tmp_path):
    first = publish(archive, units_nwb, finished_run.record, tmp_path)
    retuned = json.loads(json.dumps(finished_run.record))
    retuned["sorter"]["params"]["detect_threshold"] = 6.0  # same session and sorter, new params

    second = publish(archive, units_nwb, retuned, tmp_path)

    assert second.status == "replaced" and second.replaced_asset_id == first.asset_id
    assert second.path == first.path and second.run_key != first.run_key
    assert [a.asset_id for a in archive.assets(TARGET)] == [second.asset_id]


def test_a_file_spikebatch_did_not_write_is_never_replaced(
    archive, units_nwb, finished_run, tmp_path
):
    path = dandi_publish.asset_path(units_nwb, sorter=finished_run.record["sorter"]["name"])
    theirs = archive.add_asset(TARGET, path, units_nwb)
    result = publish_or_failure(
        units_nwb,
        dandiset_id=TARGET,
        api_url=archive.api_url,
        token=OWNER_KEY,
        record=finished_run.record,
        staging=tmp_path / "staging",
    )
    assert result["status"] == "failed" and "not written by spikebatch" in result["reason"]
    assert [a.asset_id for a in archive.assets(TARGET)] == [theirs.asset_id]


@pytest.mark.parametrize(
    ("token", "dandiset", "reason"),
    [
        ("stolen-key", TARGET, "DANDI rejected the API key (HTTP 401)"),
        ("bob-key", TARGET, f"may not write to dandiset {TARGET} (HTTP 403)"),
        (OWNER_KEY, "000777", "no dandiset 000777"),
        (None, TARGET, "needs an API key"),
    ],
)
def test_a_failed_publication_is_a_reason_not_an_exception(
    archive, units_nwb, finished_run, tmp_path, token, dandiset, reason
):
    result = publish_or_failure(
        units_nwb,
        dandiset_id=dandiset,
        api_url=archive.api_url,
        token=token,
        record=finished_run.record,
        staging=tmp_path / "staging",
    )
    assert result["status"] == "failed" and reason in result["reason"], result
    assert "\n" not in result["reason"]
    assert archive.assets(TARGET) == []
    assert not [r for r in archive.upload_requests() if r[1].startswith("/upload-parts/")]


def test_a_key_that_cannot_be_read_fails_the_publication_only(
    archive, units_nwb, finished_run, tmp_path
):
    def unreadable_secret() -> str:
        raise RuntimeError("AccessDeniedException: not authorized to GetSecretValue")

    result = publish_or_failure(
        units_nwb,
        dandiset_id=TARGET,
        api_url=archive.api_url,
        token=unreadable_secret,
        record=finished_run.record,
        staging=tmp_path / "staging",
    )
    assert result["status"] == "failed" and "GetSecretValue" in result["reason"]
    published = publish(archive, units_nwb, finished_run.record, tmp_path, token=lambda: OWNER_KEY)
    assert published.status == "published"


def test_raw_traces_are_never_published(archive, finished_run, tmp_path):
    with pytest.raises(PublishError, match="holds an ElectricalSeries"):
        publish(archive, finished_run.truth.nwb, finished_run.record, tmp_path)


def test_a_file_dandi_would_refuse_is_not_uploaded(archive, units_nwb, finished_run, tmp_path):
    """No species: DANDI's validation (nwbinspector, DANDI config) fails; nothing is sent."""
    import h5py

    broken = tmp_path / "no-species.nwb"
    shutil.copy(units_nwb, broken)
    with h5py.File(broken, "r+") as f:
        del f["general/subject/species"]
    with pytest.raises(PublishError, match="fails DANDI validation"):
        publish(archive, broken, finished_run.record, tmp_path)
    assert archive.upload_requests() == []


def test_the_run_key_changes_with_what_changes_the_units(finished_run):
    record = finished_run.record
    key = dandi_publish.run_key(record)
    assert key.startswith(record["run_id"] + ":")
    assert dandi_publish.run_key(json.loads(json.dumps(record))) == key
    for change in (
        lambda r: r["input"]["digest"].update(value="0" * 64),
        lambda r: r["sorter"]["params"].update(x=1),
        lambda r: r["settings"].update(QUALITY_THRESHOLDS={"mua": {"snr": {"greater": 3}}}),
    ):
        changed = json.loads(json.dumps(record))
        change(changed)
        assert dandi_publish.run_key(changed) != key

"""The shape of a remote NWB's series, read before the download from its metadata alone.

GIVEN an NWB on S3 (moto) or behind the fake DANDI archive WHEN the worker sizes its
scratch THEN it reads the same series, shapes and rates as from the local file, over a few
ranged GETs (an ``s3://`` input through a presigned URL), without fetching the traces.
"""

from __future__ import annotations

from spikebatch import aws, transfer
from spikebatch.transfer.ranged_file import RangedFile
from spikebatch.worker import layout
from tests.support.dandi_server import FakeDandiArchive


def test_an_s3_input_is_sized_from_its_header_through_a_presigned_url(small_gt, bucket):
    aws.client("s3").upload_file(str(small_gt.nwb), bucket, "in/rec.nwb")
    uri = f"s3://{bucket}/in/rec.nwb"

    size = transfer.remote_size(uri)
    series = layout.remote_series(transfer.signed_url(uri), size)

    assert size == small_gt.nwb.stat().st_size
    assert series == layout.local_series(small_gt.nwb)
    [raw] = series
    assert (raw.n_frames, raw.n_channels, raw.itemsize, raw.rate_hz) == (150_000, 8, 2, 30_000.0)


def test_the_header_read_fetches_a_few_blocks_not_the_traces(small_gt):
    with FakeDandiArchive() as archive:
        asset = archive.add_asset("000123", "a.nwb", small_gt.nwb)
        url = f"{archive.base_url}/blobs/{asset.blob_id}"
        with RangedFile(url, asset.size) as fh:
            import h5py

            with h5py.File(fh, "r") as h5:
                assert [s.path for s in layout.read_series(h5)] == ["acquisition/ElectricalSeries"]
            fetched, requests = fh.bytes_fetched, fh.requests
        assert all(rng is not None for _, _, rng in archive.blob_requests())
    assert requests <= 4 and fetched < asset.size


def test_sizes_of_local_and_missing_inputs(small_gt, tmp_path):
    assert transfer.remote_size(small_gt.nwb.as_uri()) == small_gt.nwb.stat().st_size
    assert transfer.remote_size((tmp_path / "gone.nwb").as_uri()) is None

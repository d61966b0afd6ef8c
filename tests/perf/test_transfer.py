"""The transfer layer against real servers on loopback: Range HTTP, the fake DANDI API, moto S3."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import boto3
import pytest
from dandi.support.digests import get_digest
from dandischema.digests.dandietag import DandiETag, PartGenerator

from spikebatch import transfer
from spikebatch.transfer import digests, fetch, ranged_http
from tests.support.dandi_server import FakeDandiArchive
from tests.support.range_server import RangeServer

MiB = 1 << 20


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(8 * MiB + 12345))
    return path


@pytest.fixture
def server(blob: Path):
    with RangeServer() as srv:
        srv.add("blob.bin", blob)
        yield srv


@pytest.fixture
def small_etag_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    """Shrink dandischema's etag part size (5 MiB is its minimum) so small files have parts."""
    monkeypatch.setattr(PartGenerator, "DEFAULT_PART_SIZE", 5 * MiB)
    return 5 * MiB


def _all_digests(path: Path) -> dict[str, str]:
    return {
        digests.ETAG: DandiETag.from_file(path).as_str(),
        digests.SHA256: get_digest(path, "sha256"),
        digests.MD5: hashlib.md5(path.read_bytes()).hexdigest(),
    }


def _parts(size: int, part_size: int) -> set[tuple[int, int]]:
    return {(o, min(o + part_size, size) - 1) for o in range(0, size, part_size)}


# ---- HTTP(S) ----------------------------------------------------------------------------


def test_redirected_download_fetches_etag_parts_in_parallel_and_verifies_inline(
    tmp_path: Path, blob: Path, server: RangeServer, small_etag_parts: int
) -> None:
    dest = tmp_path / "out" / "blob.bin"
    result = transfer.download(
        server.redirect_url("blob.bin"),
        dest,
        expected_size=blob.stat().st_size,
        digests=_all_digests(blob),
        progress=False,
    )
    assert dest.read_bytes() == blob.read_bytes()
    assert (result.path, result.size) == (dest, blob.stat().st_size)
    assert result.digest_name == digests.ETAG
    assert result.digest_value == DandiETag.from_file(blob).as_str()
    assert result.resolved_url == f"{server.base_url}/files/blob.bin"
    # Default layout = the etag's parts, each fetched by its own ranged GET.
    assert server.complete_ranges() == _parts(blob.stat().st_size, small_etag_parts)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]


@pytest.mark.parametrize("name", [digests.ETAG, digests.MD5, digests.SHA256])
def test_each_dandi_digest_is_verified_with_custom_parts(
    tmp_path: Path, blob: Path, server: RangeServer, small_etag_parts: int, name: str
) -> None:
    expected = _all_digests(blob)[name]
    result = transfer.download(
        server.add("b", blob),
        tmp_path / "b.bin",
        digests={name: expected},
        part_size=3 * MiB,  # not the etag layout: hashed in order on a side thread
        max_workers=3,
        progress=False,
    )
    assert (result.digest_name, result.digest_value) == (name, expected)
    assert len(server.complete_ranges()) == 3


def test_interrupted_download_resumes_with_only_missing_parts(
    tmp_path: Path, blob: Path, server: RangeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranged_http, "BACKOFF_S", 0.0)
    size = blob.stat().st_size
    allowed, lock = [3], threading.Lock()

    def cut_after_three(start: int, end: int) -> bool:
        if end == start:  # the 1-byte probe
            return False
        with lock:
            allowed[0] -= 1
            return allowed[0] < 0

    server.cut = cut_after_three
    dest = tmp_path / "blob.bin"
    kwargs = {"part_size": MiB, "max_workers": 2, "progress": False}
    url = server.add("b", blob)
    with pytest.raises(transfer.TransferError, match="gave up"):
        transfer.download(f"{url}?X-Amz-Signature=first", dest, **kwargs)
    first = server.complete_ranges()
    assert len(first) == 3
    assert not dest.exists()
    state = json.loads((tmp_path / "blob.bin.part.json").read_text())
    assert len(state["done"]) == 3

    server.cut = None
    server.served.clear()
    result = transfer.download(  # re-signed, as DANDI's presigned blob URLs are
        f"{url}?X-Amz-Signature=second",
        dest,
        digests={digests.MD5: _all_digests(blob)[digests.MD5]},
        **kwargs,
    )
    assert server.complete_ranges() == _parts(size, MiB) - first
    assert result.resumed_bytes == 3 * MiB
    assert dest.read_bytes() == blob.read_bytes()
    assert not (tmp_path / "blob.bin.part.json").exists()


def test_resume_is_refused_when_the_file_changed(
    tmp_path: Path, blob: Path, server: RangeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranged_http, "BACKOFF_S", 0.0)
    server.cut = lambda start, end: start >= 4 * MiB
    dest = tmp_path / "blob.bin"
    url = server.add("b", blob)
    with pytest.raises(transfer.TransferError):
        transfer.download(url, dest, part_size=MiB, max_workers=1, progress=False)
    blob.write_bytes(os.urandom(blob.stat().st_size))  # same size, new ETag
    server.cut = None
    server.served.clear()
    transfer.download(url, dest, part_size=MiB, max_workers=1, progress=False)
    assert server.complete_ranges() == _parts(blob.stat().st_size, MiB)
    assert dest.read_bytes() == blob.read_bytes()


def test_digest_mismatch_retries_then_raises_and_keeps_nothing(
    tmp_path: Path, blob: Path, server: RangeServer
) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(transfer.DigestMismatchError, match="3 attempts"):
        transfer.download(
            server.add("b", blob),
            dest,
            digests={digests.MD5: "0" * 32},
            part_size=4 * MiB,
            progress=False,
        )
    whole_fetches = [s for s in server.served if s.complete and s.start == 0 and s.end > 0]
    assert len(whole_fetches) == fetch.DIGEST_ATTEMPTS
    assert list(tmp_path.iterdir()) == [blob.parent]


def test_size_mismatch_fails_before_fetching(
    tmp_path: Path, blob: Path, server: RangeServer
) -> None:
    with pytest.raises(transfer.SizeMismatchError, match="expected 5"):
        transfer.download(server.add("b", blob), tmp_path / "x", expected_size=5, progress=False)
    assert server.complete_ranges() == set()


def test_server_without_range_support_gets_one_stream(tmp_path: Path, blob: Path) -> None:
    with RangeServer(ranges=False) as srv:
        srv.add("b", blob)
        result = transfer.download(
            srv.redirect_url("b"),
            tmp_path / "b.bin",
            digests={digests.ETAG: _all_digests(blob)[digests.ETAG]},
            progress=False,
        )
        assert [(s.ranged, s.complete) for s in srv.served] == [(False, True)]
    assert result.path.read_bytes() == blob.read_bytes()
    assert result.digest_name == digests.ETAG


def test_verified_file_already_present_is_not_fetched_again(
    tmp_path: Path, blob: Path, server: RangeServer
) -> None:
    dest = tmp_path / "b.bin"
    sums = {digests.SHA256: _all_digests(blob)[digests.SHA256]}
    transfer.download(server.add("b", blob), dest, digests=sums, progress=False)
    server.served.clear()
    again = transfer.download(server.add("b", blob), dest, digests=sums, progress=False)
    assert server.served == []
    assert again.digest_value == sums[digests.SHA256]


def test_dandi_asset_download_url_with_its_metadata(tmp_path: Path, blob: Path) -> None:
    with FakeDandiArchive() as archive:
        asset = archive.add_asset("000001", "sub-1/sub-1_ecephys.nwb", blob)
        meta = archive._asset_metadata(asset)
        result = transfer.download(
            meta["contentUrl"][0],
            tmp_path / "a.nwb",
            expected_size=meta["contentSize"],
            digests=meta["digest"],
            progress=False,
        )
        assert result.digest_name == digests.ETAG
        assert result.resolved_url == meta["contentUrl"][1]
        archive.corrupt("sub-1/sub-1_ecephys.nwb")
        with pytest.raises(transfer.DigestMismatchError):
            transfer.download(
                meta["contentUrl"][0], tmp_path / "c.nwb", digests=meta["digest"], progress=False
            )
    assert not (tmp_path / "c.nwb").exists()


def test_progress_logs_rate_when_not_on_a_terminal(
    tmp_path: Path, blob: Path, server: RangeServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spikebatch.transfer"):
        transfer.download(server.add("b", blob), tmp_path / "b.bin", progress=True)
    done = [r.getMessage() for r in caplog.records if " done: " in r.getMessage()]
    assert len(done) == 1
    assert "(100%) at " in done[0] and done[0].endswith("MB/s")


def test_unsupported_scheme_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(transfer.TransferError, match=r"unsupported URI 'ftp://x/y'.*s3://"):
        transfer.download("ftp://x/y", tmp_path / "y")
    with pytest.raises(transfer.TransferError, match="only s3:// and file://"):
        transfer.write_bytes("https://example.org/x", b"")


# ---- digests ----------------------------------------------------------------------------


def test_cheapest_digest_is_chosen() -> None:
    both = {digests.SHA256: "AB", digests.ETAG: "cd-1"}
    assert digests.choose(both) == (digests.ETAG, "cd-1")
    assert digests.choose({digests.SHA256: "ab", digests.MD5: "ef"}) == (digests.MD5, "ef")
    assert digests.choose({"dandi:sha2-512": "x"}) is None
    assert digests.choose(None) is None


def test_etag_streamed_and_parallel_match_dandischema(
    tmp_path: Path, small_etag_parts: int
) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(12 * MiB + 7))
    official = DandiETag.from_file(path).as_str()
    assert official.endswith("-3")
    streamed = digests.EtagHasher(path.stat().st_size)
    data = path.read_bytes()
    for i in range(0, len(data), 777_777):  # blocks that straddle part boundaries
        streamed.update(data[i : i + 777_777])
    assert streamed.hexdigest() == official
    assert digests.file_digest(path, digests.ETAG) == official


# ---- S3 (moto server) and file:// -------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "run.json": b'{"status": "running"}',
        "sorting/spikes.npy": os.urandom(1000),
        "report/units.png": b"\x89PNG fake",
        "big/recording.dat": os.urandom(20 * MiB),  # above the multipart threshold
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_s3_round_trips(tmp_path: Path, aws_endpoint: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="results")
    files = _tree(tmp_path / "tree")
    keys = transfer.upload_tree(tmp_path / "tree", "s3://results/runs/r1", progress=False)
    assert keys == sorted(f"runs/r1/{rel}" for rel in files)
    for rel, data in files.items():
        assert transfer.read_bytes(f"s3://results/runs/r1/{rel}") == data
    head = s3.head_object(Bucket="results", Key="runs/r1/run.json")
    assert head["ContentType"] == "application/json"

    big = files["big/recording.dat"]
    result = transfer.download(
        "s3://results/runs/r1/big/recording.dat",
        tmp_path / "dl" / "recording.dat",
        expected_size=len(big),
        digests={digests.MD5: hashlib.md5(big).hexdigest()},
        progress=False,
    )
    assert result.path.read_bytes() == big
    with pytest.raises(transfer.SizeMismatchError):
        transfer.download("s3://results/runs/r1/run.json", tmp_path / "x", expected_size=1)
    with pytest.raises(transfer.NotFoundError, match="s3://results/nope"):
        transfer.download("s3://results/nope", tmp_path / "x", progress=False)
    with pytest.raises(FileNotFoundError):
        transfer.read_bytes("s3://results/nope")

    transfer.write_bytes("s3://results/runs/r10/run.json", b"{}", "application/json")
    assert transfer.delete_prefix("s3://results/runs/r1") == len(files)
    assert transfer.read_bytes("s3://results/runs/r10/run.json") == b"{}"
    with pytest.raises(transfer.TransferError, match="whole bucket"):
        transfer.delete_prefix("s3://results/")


def test_file_uri_round_trips(tmp_path: Path) -> None:
    files = _tree(tmp_path / "tree")
    out = tmp_path / "out"
    written = transfer.upload_tree(tmp_path / "tree", out.as_uri(), progress=False)
    assert written == sorted(str(out / rel) for rel in files)
    assert all((out / rel).read_bytes() == data for rel, data in files.items())

    result = transfer.download(
        (out / "big" / "recording.dat").as_uri(),
        tmp_path / "dl.dat",
        digests={digests.SHA256: hashlib.sha256(files["big/recording.dat"]).hexdigest()},
        progress=False,
    )
    assert result.size == 20 * MiB
    transfer.write_bytes((out / "new" / "run.json").as_uri(), b'{"a": 1}')
    assert transfer.read_bytes((out / "new" / "run.json").as_uri()) == b'{"a": 1}'
    assert sorted(p.name for p in (out / "new").iterdir()) == ["run.json"]  # no temp left
    with pytest.raises(transfer.NotFoundError):
        transfer.read_bytes((out / "missing").as_uri())
    assert transfer.delete_prefix(out.as_uri()) == len(files) + 1
    assert not out.exists()
    assert transfer.delete_prefix(out.as_uri()) == 0

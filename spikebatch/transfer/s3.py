"""S3 through boto3's transfer manager, tuned for large objects on a GPU instance.

boto3 reads ``AWS_ENDPOINT_URL`` itself, so tests point every call here at a local
moto server without a code path of their own.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.subscribers import BaseSubscriber

from spikebatch.transfer.digests import MD5, s3_etag_name
from spikebatch.transfer.errors import NotFoundError, SizeMismatchError, TransferError
from spikebatch.transfer.progress import Progress
from spikebatch.transfer.result import Fetched
from spikebatch.transfer.uris import join_key, split_s3

log = logging.getLogger(__name__)

MiB = 1 << 20
#: Parallel requests per transfer. S3 gives each connection ~100 MB/s; 16 of them fill
#: the 10-25 Gbit/s of the GPU instances we use.
MAX_CONCURRENCY = 16
PART_SIZE = 16 * MiB


def client() -> Any:
    """The S3 client from the project's one seam (``spikebatch.aws``), cached there."""
    from spikebatch import aws

    return aws.client("s3")


def transfer_config(s3: Any) -> TransferConfig:
    """The transfer manager's settings: bigger parts and more threads than boto3's 8 MiB/10.

    Threads are capped at the client's connection pool: more would queue for a connection.
    """
    pool = getattr(s3.meta.config, "max_pool_connections", None) or MAX_CONCURRENCY
    return TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=min(MAX_CONCURRENCY, pool),
        io_chunksize=MiB,
        max_io_queue=256,
    )


@contextmanager
def _errors(uri: str) -> Iterator[None]:
    """Turn botocore's exceptions into one-line ``TransferError``s naming the URI."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise NotFoundError(f"{uri}: no such object ({code})") from exc
        raise TransferError(f"{uri}: {code} {error.get('Message', '')}".rstrip()) from exc
    except BotoCoreError as exc:
        raise TransferError(f"{uri}: {exc}") from exc


def content_type(path: Path) -> str | None:
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed


def fetch(
    uri: str, part_path: Path, *, label: str, expected_size: int | None, progress: bool
) -> Fetched:
    """Download ``s3://bucket/key`` into ``part_path`` with the transfer manager."""
    bucket, key = split_s3(uri)
    s3 = client()
    with _errors(uri):
        size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        if expected_size is not None and size != expected_size:
            raise SizeMismatchError(f"{uri}: the object has {size} bytes, expected {expected_size}")
        with Progress(label, size, enabled=progress) as bar:
            s3.download_file(
                bucket, key, str(part_path), Config=transfer_config(s3), Callback=bar.advance
            )
    return Fetched(size, resolved_url=uri)


class _ProgressSubscriber(BaseSubscriber):
    def __init__(self, advance: Callable[[int], None]) -> None:
        self._advance = advance

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._advance(bytes_transferred)


def upload_files(files: list[tuple[Path, str]], dest_uri: str, *, progress: bool) -> list[str]:
    """Upload ``(local path, relative key)`` pairs under ``dest_uri``, all files in parallel."""
    bucket, prefix = split_s3(dest_uri)
    keys = [join_key(prefix, rel) for _, rel in files]
    s3 = client()
    total = sum(path.stat().st_size for path, _ in files)
    with (
        _errors(dest_uri),
        Progress(f"upload {dest_uri}", total, enabled=progress) as bar,
        create_transfer_manager(s3, transfer_config(s3)) as manager,
    ):
        subscriber = _ProgressSubscriber(bar.advance)
        futures = []
        for (path, _), key in zip(files, keys, strict=True):
            extra = {"ContentType": ctype} if (ctype := content_type(path)) else {}
            futures.append(
                manager.upload(str(path), bucket, key, extra_args=extra, subscribers=[subscriber])
            )
        for future in futures:
            future.result()
    return keys


def put_bytes(uri: str, data: bytes, content_type: str | None) -> None:
    bucket, key = split_s3(uri)
    extra = {"ContentType": content_type} if content_type else {}
    with _errors(uri):
        client().put_object(Bucket=bucket, Key=key, Body=data, **extra)


def get_bytes(uri: str) -> bytes:
    bucket, key = split_s3(uri)
    with _errors(uri):
        return client().get_object(Bucket=bucket, Key=key)["Body"].read()


def delete_tree(uri: str) -> int:
    """Delete the object ``uri`` and every object under ``uri/``; returns how many."""
    bucket, key = split_s3(uri)
    key = key.rstrip("/")
    if not key:
        raise TransferError(f"{uri}: refusing to delete a whole bucket")
    s3 = client()
    deleted = 0
    with _errors(uri):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            batch = [
                {"Key": obj["Key"]}
                for obj in page.get("Contents", [])
                if obj["Key"] == key or obj["Key"].startswith(key + "/")
            ]
            if not batch:
                continue
            # A list page holds at most 1000 keys, delete_objects' limit.
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if errors := response.get("Errors"):
                first = errors[0]
                raise TransferError(
                    f"{uri}: could not delete {len(errors)} objects, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}"
                )
            deleted += len(batch)
    return deleted


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key, size and ETag (quotes stripped)."""

    key: str
    size: int
    etag: str


def list_objects(uri: str) -> list[ObjectInfo]:
    """Every object under ``s3://bucket/prefix`` (1000 per ListObjectsV2 page)."""
    bucket, prefix = split_s3(uri)
    found: list[ObjectInfo] = []
    with _errors(uri):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            found += [
                ObjectInfo(o["Key"], int(o["Size"]), str(o.get("ETag", "")).strip('"'))
                for o in page.get("Contents", [])
            ]
    return found


def etag_digests(uri: str, etag: str) -> dict[str, str]:
    """What the download can check the object against, from its ETag.

    A single-part upload's ETag is its md5; a multipart one's is the md5 of the parts'
    md5s, whose part size the first part's HEAD gives. Under SSE-KMS (or SSE-C) the ETag is
    no digest of the bytes: nothing to check, and the log says so.
    """
    bucket, key = split_s3(uri)
    if not etag:
        return {}
    with _errors(uri):
        head = client().head_object(Bucket=bucket, Key=key, PartNumber=1)
    if head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm"):
        log.warning("%s: encrypted with KMS/SSE-C, its ETag is not a digest; not verified", uri)
        return {}
    if "-" not in etag:
        return {MD5: etag}
    return {s3_etag_name(int(head["ContentLength"])): etag}

"""Fast, verified, resumable transfers for the worker: downloads in, results out.

``download`` fetches a recording from ``https://`` (parallel ranged GETs), ``s3://``
(boto3's transfer manager) or ``file://`` and verifies it against DANDI's digests;
``upload_tree``, ``write_bytes``, ``read_bytes`` and ``delete_prefix`` handle results
on ``s3://`` and ``file://``; ``remote_size`` and ``signed_url`` size an input before it
is fetched.
"""

from spikebatch.transfer.digests import ETAG, MD5, SHA256
from spikebatch.transfer.errors import (
    DigestMismatchError,
    NotFoundError,
    SizeMismatchError,
    TransferError,
)
from spikebatch.transfer.fetch import download
from spikebatch.transfer.remote import remote_size, signed_url
from spikebatch.transfer.result import DownloadResult
from spikebatch.transfer.store import delete_prefix, read_bytes, upload_tree, write_bytes

__all__ = [
    "ETAG",
    "MD5",
    "SHA256",
    "DigestMismatchError",
    "DownloadResult",
    "NotFoundError",
    "SizeMismatchError",
    "TransferError",
    "delete_prefix",
    "download",
    "read_bytes",
    "remote_size",
    "signed_url",
    "upload_tree",
    "write_bytes",
]

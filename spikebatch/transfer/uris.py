"""Parsing of the URIs the transfer layer accepts (``s3://``, ``file://``, ``http(s)://``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from spikebatch.transfer.errors import TransferError

SCHEMES = ("s3", "file", "http", "https")


def scheme_of(uri: str) -> str:
    """The URI's scheme, or a one-line error naming the supported ones."""
    scheme = urlparse(uri).scheme.lower()
    if scheme not in SCHEMES:
        supported = ", ".join(f"{s}://" for s in SCHEMES)
        raise TransferError(f"unsupported URI {uri!r}: expected one of {supported}")
    return scheme


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/part`` -> ``("bucket", "key/part")`` (the key may be empty)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise TransferError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    """``file:///abs/path`` -> ``Path('/abs/path')``; relative or remote file URIs are errors."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise TransferError(f"not a local file:///absolute/path URI: {uri!r}")
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        raise TransferError(f"file URI must hold an absolute path: {uri!r}")
    return path


def join_key(prefix: str, name: str) -> str:
    """Join an S3 key prefix and a relative name with exactly one slash."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name

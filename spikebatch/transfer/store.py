"""Object operations on ``s3://`` and ``file://`` URIs: the worker's only way to write results."""

from __future__ import annotations

from pathlib import Path

import requests

from spikebatch.transfer import local, s3
from spikebatch.transfer.errors import NotFoundError, TransferError
from spikebatch.transfer.ranged_http import TIMEOUT_S, redact
from spikebatch.transfer.uris import scheme_of


def _writable(uri: str) -> str:
    scheme = scheme_of(uri)
    if scheme not in ("s3", "file"):
        raise TransferError(f"cannot write to {redact(uri)}: only s3:// and file:// are writable")
    return scheme


def upload_tree(local_dir: Path, dest_uri: str, *, progress: bool = True) -> list[str]:
    """Upload every file under ``local_dir`` to ``dest_uri``, keeping relative paths.

    S3 uploads run in parallel through one transfer manager (large files also in parts).
    Returns what was written, sorted by relative path: S3 keys for ``s3://``, local paths
    for ``file://``.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise TransferError(f"upload_tree: {local_dir} is not a directory")
    files = sorted(
        ((path, path.relative_to(local_dir).as_posix()) for path in local_dir.rglob("*")),
        key=lambda pair: pair[1],
    )
    files = [(path, rel) for path, rel in files if path.is_file()]
    if _writable(dest_uri) == "s3":
        return s3.upload_files(files, dest_uri, progress=progress)
    return local.copy_files(files, dest_uri, progress=progress)


def write_bytes(dest_uri: str, data: bytes, content_type: str | None = None) -> None:
    """Write one object (atomically replacing a local file)."""
    if _writable(dest_uri) == "s3":
        s3.put_bytes(dest_uri, data, content_type)
    else:
        local.write_atomic(dest_uri, data)


def read_bytes(uri: str) -> bytes:
    """Read one object from ``s3://``, ``file://`` or ``http(s)://``."""
    scheme = scheme_of(uri)
    if scheme == "s3":
        return s3.get_bytes(uri)
    if scheme == "file":
        return local.read(uri)
    try:
        resp = requests.get(uri, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise TransferError(f"GET {redact(uri)}: {exc}") from exc
    if resp.status_code == 404:
        raise NotFoundError(f"GET {redact(uri)}: HTTP 404")
    if resp.status_code != 200:
        raise TransferError(f"GET {redact(uri)}: HTTP {resp.status_code} {resp.reason}")
    return resp.content


def delete_prefix(dest_uri: str) -> int:
    """Delete the object at ``dest_uri`` and everything under ``dest_uri/``; returns the count.

    The prefix is treated as a folder: deleting ``.../run-1`` leaves ``.../run-10`` alone.
    """
    if _writable(dest_uri) == "s3":
        return s3.delete_tree(dest_uri)
    return local.delete_tree(dest_uri)

"""``file://`` sources and destinations: the same operations as S3, on a local path."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from spikebatch.transfer.errors import NotFoundError, SizeMismatchError, TransferError
from spikebatch.transfer.progress import Progress
from spikebatch.transfer.result import Fetched
from spikebatch.transfer.uris import local_path

COPY_BLOCK = 64 << 20


def _copy(src: Path, dst: Path, advance) -> None:
    """Copy in blocks with ``copy_file_range`` (in-kernel), reporting progress."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            while copied := os.copy_file_range(fin.fileno(), fout.fileno(), COPY_BLOCK):
                advance(copied)
        except OSError:  # e.g. no copy_file_range across these filesystems
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            while block := fin.read(COPY_BLOCK):
                fout.write(block)
                advance(len(block))


def fetch(
    uri: str, part_path: Path, *, label: str, expected_size: int | None, progress: bool
) -> Fetched:
    src = local_path(uri)
    if not src.is_file():
        raise NotFoundError(f"{uri}: no such file")
    size = src.stat().st_size
    if expected_size is not None and size != expected_size:
        raise SizeMismatchError(f"{uri}: the file has {size} bytes, expected {expected_size}")
    with Progress(label, size, enabled=progress) as bar:
        _copy(src, part_path, bar.advance)
    return Fetched(size, resolved_url=uri)


def copy_files(files: list[tuple[Path, str]], dest_uri: str, *, progress: bool) -> list[str]:
    """Copy ``(local path, relative path)`` pairs under the ``file://`` ``dest_uri``."""
    root = local_path(dest_uri)
    written = []
    total = sum(path.stat().st_size for path, _ in files)
    with Progress(f"copy to {dest_uri}", total, enabled=progress) as bar:
        for path, rel in files:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(path, target, bar.advance)
            written.append(str(target))
    return written


def write_atomic(uri: str, data: bytes) -> None:
    """Write via a temporary file and a rename, so readers never see half a file."""
    target = local_path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(uri: str) -> bytes:
    path = local_path(uri)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"{uri}: no such file") from exc
    except OSError as exc:
        raise TransferError(f"{uri}: {exc.strerror or exc}") from exc


def delete_tree(uri: str) -> int:
    """Delete the file at ``uri``, or the folder and everything in it; returns files removed."""
    path = local_path(uri)
    if path == Path(path.anchor):
        raise TransferError(f"{uri}: refusing to delete a filesystem root")
    if path.is_dir() and not path.is_symlink():
        count = sum(1 for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
        shutil.rmtree(path)
        return count
    if path.exists() or path.is_symlink():
        path.unlink()
        return 1
    return 0

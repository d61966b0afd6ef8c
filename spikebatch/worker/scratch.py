"""Scratch on a shared, reused instance: one locked folder per run, and what it holds, measured.

Batch reuses instances and bind-mounts the host's /scratch into every job's container;
several jobs may run on one instance at once. So a job must never inherit another job's
leftovers, and never delete a live job's files:

- a run works in ``<SCRATCH_DIR>/<run id>/`` and holds an exclusive ``flock`` on
  ``<SCRATCH_DIR>/<run id>.lock`` for as long as it lives (the kernel drops the lock when
  the process dies, however it dies: SIGKILL, OOM, a spot reclaim);
- at start, every run folder whose lock is free belongs to a job that is gone, and is
  removed. A folder without a ``.lock`` beside it is not ours and is never touched;
- on Batch (``AWS_BATCH_JOB_ID`` set) a run removes its own folder when it ends, failed or
  not; run locally, a failed run keeps it for inspection (the next run removes it).

:class:`ScratchMeter` measures the bytes the run's folder holds (allocated blocks, sampled
every second and at every stage boundary): run.json's ``scratch.peak_bytes``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import threading
from pathlib import Path

from spikebatch.worker.errors import WorkerError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


class ScratchBusyError(WorkerError):
    """Another live process holds this run id's scratch (the same RUN_ID twice on one host)."""


def _try_lock(path: Path, *, create: bool) -> int | None:
    """An fd holding an exclusive flock on ``path``; None if another process holds it.

    The lock counts only if ``path`` still names the locked file afterwards: a holder that
    unlinked it while we waited leaves us a lock on a file nobody else will ever open.
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            return None


def remove_stale(root: Path, *, keep: str | None = None) -> list[str]:
    """Remove every run folder under ``root`` whose lock is free; returns their names."""
    removed = []
    for lock in sorted(root.glob(f"*{LOCK_SUFFIX}")):
        name = lock.name.removesuffix(LOCK_SUFFIX)
        if name == keep:
            continue
        try:
            fd = _try_lock(lock, create=False)
        except OSError as exc:  # another user's lock, a read-only file: not ours to judge
            log.warning("scratch: cannot check %s: %s", lock, exc)
            continue
        if fd is None:
            continue  # a live job's
        try:
            shutil.rmtree(root / name, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(name)
        finally:
            os.close(fd)
    if removed:
        log.info("scratch: removed %d stale run folder(s): %s", len(removed), ", ".join(removed))
    return removed


class RunScratch:
    """This run's locked folder under the scratch root."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = Path(root)
        self.path = self.root / run_id
        self.lock_path = self.root / f"{run_id}{LOCK_SUFFIX}"
        self._fd: int | None = None

    def claim(self) -> list[str]:
        """Lock this run's folder, then clear other runs' stale folders; returns their names."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(self.lock_path, create=True)
        if fd is None:
            raise ScratchBusyError(
                f"scratch {self.path} is in use by another live run of the same RUN_ID on "
                "this host; wait for it or use another RUN_ID"
            )
        self._fd = fd
        removed = remove_stale(self.root, keep=self.path.name)
        self.path.mkdir(exist_ok=True)
        return removed

    def release(self, *, remove: bool) -> None:
        """Drop the lock; ``remove`` deletes the folder first (the lock file with it).

        Only a run that holds the lock removes anything: before :meth:`claim` the folder may
        be another live run's.
        """
        if remove and self._fd is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.lock_path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def tree_bytes(path: Path) -> int:
    """Bytes allocated to the files under ``path`` (a sparse download counts what it holds)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except FileNotFoundError:  # deleted while we looked
                    continue
    return total


def deleted_but_open(path: Path) -> list[str]:
    """Files under ``path`` this process deleted but still holds open: their space is not free.

    Linux frees a deleted file's blocks only when its last descriptor closes (an HDF5 handle
    a recording object kept, say), and :func:`tree_bytes` no longer sees them.
    """
    prefix = f"{Path(path).resolve()}/"
    held = []
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return held
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(prefix) and target.endswith(" (deleted)"):
            held.append(target.removesuffix(" (deleted)"))
    return sorted(set(held))


def free_bytes(path: Path) -> int:
    """Free bytes of the file system holding ``path`` (for an unprivileged process)."""
    return shutil.disk_usage(path).free


class ScratchMeter:
    """The peak bytes under a folder, overall and per stage, sampled in a background thread.

    Sampled every ``interval_s`` and whenever :meth:`sample` is called: the pipeline calls
    it before it frees anything, so the peak of each stage is caught even between ticks.
    """

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.stage = "config"
        self.peak_bytes = 0
        self.stage_peaks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scratch-meter", daemon=True)

    def sample(self) -> int:
        nbytes = tree_bytes(self.path)
        with self._lock:
            self.peak_bytes = max(self.peak_bytes, nbytes)
            self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0), nbytes)
        return nbytes

    def set_stage(self, stage: str) -> None:
        self.sample()  # what the previous stage ended with belongs to it
        with self._lock:
            self.stage = stage

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> ScratchMeter:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

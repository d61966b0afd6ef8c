"""Stop handling: SIGTERM or SIGINT ends the worker with exit 130 and a failed run.json, in seconds.

Batch stops a job with SIGTERM and SIGKILLs it 30 s later (spot reclaim, cancel, terminate,
timeout). A stop must never depend on what the worker is doing when it lands, so it takes
two paths at once:

- **the fast path**: the Python handler raises :class:`Interrupted` in the main thread, and
  the pipeline's failure path ends the sorter's child processes and writes the record;
- **the watchdog**: every stop also arms a daemon thread. The signal's wakeup file descriptor
  arms it too, so it is armed even while the main thread never returns to Python (stuck in a C
  call). If the process is still alive when the grace period is over (the exception was lost in
  a ``__del__``, a GC callback or a library's broad ``except``; the main thread is stuck), the
  watchdog ends the children, writes the failed record itself (unless the failure path already
  did) and ends the process with exit 130 (``os._exit``).

Record writes go through :func:`record_write` (one writer at a time); the first *final* write
(succeeded or failed) seals the record, so a stop can never overwrite a finished run, and the
main thread can never overwrite the watchdog's record with "running".

This module imports only the standard library: the entrypoint installs it before SpikeInterface,
torch and the sorter are imported, which takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from spikebatch.contract import Env
from spikebatch.worker.errors import ExitCode, Interrupted

#: Seconds from the stop to the watchdog's exit: well inside Batch's 30 s stop timeout, leaving
#: time for the watchdog's own record write (bounded by ``WRITE_TIMEOUT_S``).
DEFAULT_GRACE_S = 10.0
MAX_GRACE_S = 20.0
#: The watchdog's record write (an S3 PUT) gets this long before the process exits anyway.
WRITE_TIMEOUT_S = 8.0
#: How long a stop waits for the children it ends before it kills them (the watchdog, already
#: late, waits less).
CHILDREN_TERM_S = 3.0
WATCHDOG_CHILDREN_TERM_S = 1.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_STOP_NUMBERS = frozenset(int(s) for s in STOP_SIGNALS)

#: Writes the failed record for a stop: ``writer(message)``. Set once the run id is known.
ExpiryWriter = Callable[[str], None]


def stop_message(signal_name: str) -> str:
    reason = _guard.reason if _guard is not None else None
    if reason is not None:  # a stop asked for in-process (a study's timeout): say why
        return f"stopped by {signal_name}: {reason['detail']}"
    return (
        f"stopped by {signal_name}: the job was stopped (docker stop, a Batch cancel or "
        "terminate, the job timeout or a spot reclaim); rerun it with the same RUN_ID"
    )


def parse_grace(environ: Mapping[str, str]) -> float:
    """``STOP_GRACE_S`` as seconds (``settings`` rejects a bad value with a one-line error;
    here, before validation, a bad value falls back to the default)."""
    try:
        value = float(environ.get(Env.STOP_GRACE_S, DEFAULT_GRACE_S))
    except ValueError:
        return DEFAULT_GRACE_S
    return value if 0 < value <= MAX_GRACE_S else DEFAULT_GRACE_S


def _say(line: str) -> None:
    """One line to stderr, straight to the descriptor: no lock a stuck main thread may hold."""
    with suppress(OSError):
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))


def _log(message: str) -> None:
    """A log line in the worker's format, written as :func:`_say` writes (only the outcome line
    starts with ``spikebatch-worker:``)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    _say(f"{stamp} WARNING spikebatch.worker.stop: {message}")


class _Guard:
    """One installation: the handlers, the wakeup listener, the watchdog, the record's seal."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.pid = os.getpid()
        self.signal_name: str | None = None
        self.stopped_at: float | None = None
        self.failing = False  # the failure path has begun: a second signal must not cut it
        self.sealed = False  # a final record is written: nothing overwrites it
        self.disarmed = False  # uninstalled: an in-process caller goes on after the run
        #: Installed by the process's entrypoint: the watchdog may end the process. Otherwise
        #: (a study, ``make demo``, tests) it writes the record and interrupts, never exits.
        self.owns_process = False
        self.write_lock = threading.Lock()
        self.arm_lock = threading.Lock()
        self.expiry_writer: ExpiryWriter | None = None
        self.stage: Callable[[], str | None] = lambda: None
        self.previous_handlers: dict[int, Any] = {}
        self.previous_wakeup_fd = -1
        self.sockets: tuple[socket.socket, socket.socket] | None = None
        self.preexisting_children = _child_pids()
        #: Why the stop was asked for in-process (:func:`request_stop`): None for a signal
        #: from outside (Batch, docker stop, Ctrl-C).
        self.reason: dict[str, Any] | None = None

    # -- arming ------------------------------------------------------------------------------

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The Python handler, in the main thread: arm the watchdog, then raise (fast path)."""
        if os.getpid() != self.pid:  # a forked child (a pool worker): die the default way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first = self.arm(signal.Signals(signum).name)
        if self.failing:
            _log(f"received {signal.Signals(signum).name} again: still stopping")
            return
        if first:
            _log(f"received {self.signal_name}: stopping")
        raise Interrupted(stop_message(self.signal_name or signal.Signals(signum).name))

    def arm(self, name: str) -> bool:
        """Start the watchdog once; True for the first stop."""
        with self.arm_lock:
            if self.signal_name is not None:
                return False
            self.signal_name, self.stopped_at = name, time.monotonic()
        threading.Thread(target=self._watch, name="spikebatch-stop-watchdog", daemon=True).start()
        return True

    def listen(self, sock: socket.socket) -> None:
        """Reads the signal numbers the C-level handler writes, even while the main thread is
        stuck outside Python."""
        while True:
            try:
                data = sock.recv(64)
            except OSError:
                return
            if not data:
                return
            stops = [n for n in data if n in _STOP_NUMBERS]
            if stops and os.getpid() == self.pid and self.arm(signal.Signals(stops[0]).name):
                _log(f"received {self.signal_name}: stopping")

    # -- the watchdog -----------------------------------------------------------------------

    def _watch(self) -> None:
        assert self.stopped_at is not None
        time.sleep(max(0.0, self.stopped_at + self.grace_s - time.monotonic()))
        if self.disarmed or (self.sealed and not self.owns_process):
            return  # in-process: the run's failure path is done, its caller goes on
        name = self.signal_name or "SIGTERM"
        stage = self.stage() or "config"
        message = stop_message(name)
        if not self.sealed:
            _log(
                f"the stop was not honoured within {self.grace_s:g} s (in {stage}): "
                "the watchdog ends the run"
            )
        end_children(self, wait_s=WATCHDOG_CHILDREN_TERM_S)
        writer = self.expiry_writer
        if writer is not None and not self.sealed:
            done = threading.Event()

            def write() -> None:
                try:
                    writer(message)
                except BaseException as exc:
                    _log(f"could not write the failed record: {exc}")
                finally:
                    done.set()

            threading.Thread(target=write, name="spikebatch-stop-record", daemon=True).start()
            done.wait(WRITE_TIMEOUT_S)
        if not self.owns_process:
            self._keep_interrupting()
            return
        _say(f"spikebatch-worker: failed in {stage}: {message}")
        os._exit(int(ExitCode.INTERRUPTED))

    def _keep_interrupting(self) -> None:
        """In a process that is not the run's alone (a study, a test), the record is written but
        the process is not ended: the stop is raised in the main thread again, each second,
        until the run returns (its record stays the watchdog's: sealed)."""
        import _thread

        while not self.disarmed and _guard is self:
            self.failing = False  # let the handler raise again
            _thread.interrupt_main(signal.SIGTERM)
            time.sleep(1.0)


_guard: _Guard | None = None


def _child_pids() -> set[int]:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a worker dependency
        return set()
    try:
        return {c.pid for c in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def end_children(guard: _Guard | None = None, wait_s: float = CHILDREN_TERM_S) -> int:
    """End every process this run started (a sorter's binary, a pool's workers): SIGTERM, then
    SIGKILL after ``wait_s``; processes that were there before the run are left alone."""
    import psutil

    guard = guard or _guard
    skip = guard.preexisting_children if guard else set()
    try:
        children = [c for c in psutil.Process().children(recursive=True) if c.pid not in skip]
    except psutil.Error:
        return 0
    for child in children:
        with suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=wait_s)
    for child in alive:
        with suppress(psutil.Error):
            child.kill()
    return len(children)


# -- the module's API: one guard per process at a time ------------------------------------------


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(grace_s: float = DEFAULT_GRACE_S, *, owns_process: bool = False) -> bool:
    """Install the handlers and the wakeup listener (main thread only); False if already
    installed in this process or not possible here (another thread)."""
    global _guard, _fork_hook_registered
    if (_guard is not None and _guard.pid == os.getpid()) or not _in_main_thread():
        return False
    guard = _Guard(grace_s)
    guard.owns_process = owns_process
    _adopt_orphans()
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    guard.sockets = (reader, writer)
    threading.Thread(
        target=guard.listen, args=(reader,), name="spikebatch-stop-listener", daemon=True
    ).start()
    _guard = guard
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_forget_in_child)
        _fork_hook_registered = True
    # The handlers last: a stop from here on finds everything in place.
    guard.previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    guard.previous_handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, guard.handle)
    return True


_fork_hook_registered = False
#: prctl(PR_SET_CHILD_SUBREAPER): Linux's option number.
_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Become the subreaper of this process's descendants: a sorter's binary whose wrapper
    script was killed (SpikeInterface kills the script, not its children) is re-parented to us
    instead of to init, so :func:`end_children` still finds it. Linux only; harmless elsewhere."""
    import ctypes

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _forget_in_child() -> None:
    """A forked child (a SpikeInterface pool worker) is not the run: it gets the handlers that
    were there before, and must not write its own signals into our wakeup descriptor."""
    global _guard
    guard, _guard = _guard, None
    if guard is None or guard.pid == os.getpid():
        return
    guard.disarmed = True
    with suppress(ValueError, OSError):  # (only possible from the child's main thread)
        signal.set_wakeup_fd(-1)
        for sig, handler in guard.previous_handlers.items():
            signal.signal(sig, handler)
    for sock in guard.sockets or ():
        sock.close()


def uninstall() -> None:
    """Restore what :func:`install` replaced (in-process callers: tests, ``make demo``)."""
    global _guard
    guard, _guard = _guard, None
    if guard is None or not _in_main_thread():
        return
    guard.disarmed = True
    for sig, handler in guard.previous_handlers.items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(guard.previous_wakeup_fd)
    if guard.sockets:
        for sock in guard.sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def installed(environ: Mapping[str, str]) -> Iterator[None]:
    """The stop handling for one run, unless the caller (the entrypoint) installed it already."""
    mine = install(parse_grace(environ))
    try:
        yield
    finally:
        if mine:
            uninstall()


def stopped_by() -> str | None:
    """The stop signal's name, once one arrived (whatever became of its exception)."""
    return _guard.signal_name if _guard else None


def begin_failing() -> None:
    """The failure path has begun: a second stop signal only says so, it raises nothing."""
    if _guard:
        _guard.failing = True


def track(stage: Callable[[], str | None], writer: ExpiryWriter | None) -> None:
    """A run begins: what the watchdog reports (the stage in progress) and how it writes the
    failed record; the record is not sealed yet (an earlier run's in the same process was)."""
    if _guard:
        _guard.stage, _guard.expiry_writer = stage, writer
        _guard.sealed = _guard.failing = False
        _guard.reason = None


def request_stop(kind: str, detail: str) -> bool:
    """Stop the run in progress exactly as SIGTERM does (same handler, same record), saying
    why: ``kind`` (e.g. ``timeout``) goes to run.json's ``stop``, ``detail`` into the error.
    Callable from any thread (a study's timer); False when no run can be stopped here."""
    guard = _guard
    if guard is None or guard.pid != os.getpid() or guard.sealed or guard.disarmed:
        return False
    guard.reason = {"kind": kind, "detail": detail}
    import _thread

    # No OS signal: once the handler is gone (the run just ended) this does nothing, where a
    # real SIGTERM would end the whole process. Armed here, as a signal's wakeup would.
    if guard.arm("SIGTERM"):
        _log(f"stop requested ({kind}): stopping")
    _thread.interrupt_main(signal.SIGTERM)
    return True


def stop_reason() -> dict[str, Any] | None:
    """What :func:`request_stop` said, once it stopped the run; None for an outside stop."""
    return dict(_guard.reason) if _guard is not None and _guard.reason else None


@contextmanager
def record_write(*, final: bool = False) -> Iterator[bool]:
    """One run.json writer at a time; yields False once a final record is written (a stop must
    not overwrite a finished run, and "running" must not overwrite a stop's record).

    The watchdog waits at most ``WRITE_TIMEOUT_S`` for a writer stuck in the main thread.
    """
    guard = _guard
    if guard is None:
        yield True
        return
    is_watchdog = threading.current_thread().name == "spikebatch-stop-record"
    locked = guard.write_lock.acquire(timeout=WRITE_TIMEOUT_S / 2 if is_watchdog else -1)
    try:
        allowed = not guard.sealed
        yield allowed
        if allowed and final:  # sealed once the final record is really written
            guard.sealed = True
    finally:
        if locked:
            guard.write_lock.release()


def snapshot(record: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a record the main thread may be changing (from the watchdog)."""
    for _ in range(20):
        try:
            return json.loads(json.dumps(record, default=str))
        except RuntimeError:  # changed size during iteration: try again
            time.sleep(0.01)
    return json.loads(json.dumps(dict(record), default=str))


def current_stage() -> str | None:
    """The stage in progress, as the pipeline reports it to :func:`track`."""
    return _guard.stage() if _guard else None


def grace_s() -> float | None:
    return _guard.grace_s if _guard else None

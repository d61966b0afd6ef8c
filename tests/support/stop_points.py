"""Stop a real worker run at chosen points: ``python -m tests.support.stop_points PLAN OUT``.

The plan (JSON) lists cases, each ``{"name", "target": "module:attr[.attr]", "how", "delay_s",
"signals", "env", "truth_as_sort", "record_file"}``. The heavy imports (SpikeInterface, torch, Kilosort) happen once here; each case is a
forked child that patches its target, runs the real entrypoint (``spikebatch.worker.__main__``,
which installs the stop handling itself) and exits with its exit code. How the stop arrives:

- ``signal``: SIGTERM (or ``signals``, in turn) from a timer thread ``delay_s`` after the target
  is entered, so it lands inside the target while it runs (or right after, if it is quicker);
- ``native``: the main thread blocks in a C call that ignores signals (a second lock of a
  pthread mutex, the GIL released) and SIGTERM arrives while it is there;
- ``del``: SIGTERM lands while a ``__del__`` runs, where Python discards the exception; the run
  goes on as if nothing had happened;
- ``swallowed``: a library's broad ``except BaseException`` eats the exception; the run goes on.

A child still alive 30 s after its stop is SIGKILLed, as Batch does. For each case,
OUT/<name>.json says the exit code, when the signal was sent and when the child had exited
(``time.time()``) and the run.json it left (``record_file``); OUT/<name>.log holds its output.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: Batch's stop timeout: a child still alive this long after its first signal is SIGKILLed.
KILL_AFTER_S = 30.0
#: Between the signals of a case that sends several (a second stop during the first's).
SIGNAL_SPACING_S = 0.3


def _signal_later(sent_file: Path, delay_s: float, signals: list[str]) -> None:
    def fire() -> None:
        sent_file.write_text(repr(time.time()))
        for i, name in enumerate(signals):
            if i:
                time.sleep(SIGNAL_SPACING_S)
            os.kill(os.getpid(), signal.Signals[name])

    threading.Timer(delay_s, fire).start()


def _block_in_native_code() -> None:
    """Lock a default pthread mutex twice: the second lock never returns, signals or not."""
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER on glibc
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


class _StopsInDel:
    def __init__(self, sent_file: Path) -> None:
        self.sent_file = sent_file

    def __del__(self) -> None:
        self.sent_file.write_text(repr(time.time()))
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # the handler runs here, inside __del__
            pass


def _wrapped(original: Any, case: dict[str, Any], sent_file: Path) -> Any:
    how, delay_s = case["how"], float(case.get("delay_s", 0.0))
    signals = case.get("signals", ["SIGTERM"])
    fired = False

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            if how == "signal":
                _signal_later(sent_file, delay_s, signals)
            elif how == "native":
                _signal_later(sent_file, max(delay_s, 0.2), signals)
                _block_in_native_code()
            elif how == "del":
                _StopsInDel(sent_file)  # collected at once: __del__ runs here
            elif how == "swallowed":
                try:
                    sent_file.write_text(repr(time.time()))
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(1.0)
                except BaseException:
                    pass
            else:
                raise ValueError(how)
        return original(*args, **kwargs)

    return wrapper


def _resolve(target: str) -> tuple[Any, str]:
    module_name, _, attr_path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _patch(case: dict[str, Any], sent_file: Path) -> None:
    owner, name = _resolve(case["target"])
    setattr(owner, name, _wrapped(getattr(owner, name), case, sent_file))


def _sort_with_the_truth(truth_folder: str) -> None:
    """The sort stage returns the true sorting at once: for stops in the stages after it,
    which do not depend on the sorter, without a sort's minute before each."""
    import spikeinterface as si

    from spikebatch.worker import sort

    sort.run_sort = lambda *args, **kwargs: si.load(truth_folder)


def _run_case(case: dict[str, Any], out: Path) -> dict[str, Any]:
    sent_file = out / f"{case['name']}.sent"
    log_file = out / f"{case['name']}.log"
    pid = os.fork()
    if pid == 0:  # the child: one worker run, as the container runs it
        code = 1
        try:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if case.get("truth_as_sort"):
                _sort_with_the_truth(case["truth_as_sort"])
            if case.get("target"):
                _patch(case, sent_file)
            from spikebatch.worker.__main__ import main

            os.environ.update(case["env"])
            code = main()  # as the process's entrypoint: its own environment
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    status, killed = _wait(pid, sent_file)
    exited = time.time()
    sent = _sent_at(sent_file)
    return {
        "name": case["name"],
        "exit_code": os.waitstatus_to_exitcode(status),
        "signal_sent": sent,
        "exited": exited,
        "latency_s": None if sent is None else exited - sent,
        "sigkilled": killed,
    }


def _sent_at(sent_file: Path) -> float | None:
    try:
        return float(sent_file.read_text())
    except (OSError, ValueError):  # not sent, or being written
        return None


def _wait(pid: int, sent_file: Path) -> tuple[int, bool]:
    """The child's wait status; SIGKILL it, as Batch would, ``KILL_AFTER_S`` after the stop."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status, False
        sent = _sent_at(sent_file)
        if sent is not None and time.time() - sent > KILL_AFTER_S:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1], True
        time.sleep(0.05)


def _warm_up() -> None:
    """Compile SpikeInterface's numba kernels once (20 s of template similarity alone), so each
    forked run reaches the later stages in seconds: the stops are what is tested, not numba."""
    import spikeinterface.full as si

    from spikebatch.worker.postprocess import _EXTENSIONS, QUALITY_METRICS

    recording, sorting = si.generate_ground_truth_recording(
        durations=[2.0], num_channels=4, num_units=2, seed=0
    )
    analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    analyzer.compute(dict(_EXTENSIONS))
    si.compute_quality_metrics(analyzer, metric_names=QUALITY_METRICS)


def main(plan_file: str, out_dir: str) -> None:
    plan = json.loads(Path(plan_file).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Once, before the forks: what each child would otherwise spend seconds importing.
    import kilosort.run_kilosort  # noqa: F401
    import spikeinterface.sorters  # noqa: F401

    import spikebatch.worker.pipeline  # noqa: F401

    _warm_up()
    for case in plan:
        result = _run_case(case, out)
        if case.get("record_file"):  # what the run left, before the next case replaces it
            record = Path(case["record_file"])
            result["record"] = json.loads(record.read_text()) if record.exists() else None
        (out / f"{case['name']}.json").write_text(json.dumps(result))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])

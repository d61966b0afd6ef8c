"""``study run --local``: every case in this process, one after another, through the worker.

Each case is ``spikebatch.worker.__main__.main(env)`` with the environment ``run-local``
would give it (plus RUN_ID and GROUND_TRUTH), writing under ``<out>/runs/<run-id>/``.
A sorter entry's ``timeout_minutes`` is a timer that stops the case through the worker's own
stop path (:func:`spikebatch.worker.stop.request_stop`: SIGTERM to this process, handled like
Batch's), so run.json records the stop with ``stop.kind = "timeout"``. Ctrl-C stops the case
in progress the same way (without a kind) and ends the study: a rerun picks it up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from spikebatch.study.cases import Case
from spikebatch.study.spec import StudySpec
from spikebatch.study.state import CaseState, classify, read_record, should_run

INTERRUPTED_EXIT = 130


class StudyInterrupted(RuntimeError):
    """A case was stopped from outside (Ctrl-C, SIGTERM): the study stops; rerun to resume."""


@dataclass
class CaseOutcome:
    case: Case
    state: CaseState
    exit_code: int = 0


@dataclass
class LocalRun:
    """What one ``study run --local`` did."""

    ran: list[CaseOutcome] = field(default_factory=list)
    skipped: list[tuple[Case, CaseState]] = field(default_factory=list)


@cache
def installed_sorter_version(sorter: str) -> str | None:
    """The version the worker would record here (None when the worker extra is missing)."""
    try:
        from spikebatch.worker.sort import sorter_class

        return str(sorter_class(sorter).get_sorter_version())
    except Exception:  # not installed, or the sorter cannot say: the run records it anyway
        return None


def local_states(
    spec: StudySpec, cases: Sequence[Case], output_uri: str, *, check_version: bool = True
) -> list[CaseState]:
    """Each case's state from its run.json under ``output_uri``."""
    return [
        classify(
            case,
            spec,
            read_record(case.results_uri(output_uri)),
            sorter_version=installed_sorter_version(case.request.sorter) if check_version else None,
        )
        for case in cases
    ]


def log_path(out_dir: Path, case: Case) -> Path:
    """Where a local case's worker log goes (study.json's ``log_uri``)."""
    return out_dir / "logs" / f"{case.run_id}.log"


@contextmanager
def _logging_to(path: Path | None) -> Iterator[None]:
    """The worker's log lines (logger ``spikebatch``) also into ``path`` for this case."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("spikebatch")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def run_case(env: dict[str, str], timeout_s: float | None, log: Path | None = None) -> int:
    """The worker on one case, in this process, stopped after ``timeout_s``; its exit code."""
    from spikebatch.worker import stop
    from spikebatch.worker.__main__ import main as worker_main
    from spikebatch.worker.errors import Interrupted

    lock = threading.Lock()
    active = True

    def time_is_up() -> None:
        with lock:
            if active:
                stop.request_stop(
                    "timeout",
                    f"timed out after {timeout_s / 60:g} min (the study's timeout_minutes)",
                )

    timer = threading.Timer(timeout_s, time_is_up) if timeout_s else None
    # Installed here, so the worker leaves it installed and its watchdog is disarmed only
    # after this case (never in the middle of the study's own code).
    with stop.installed(env):
        code = INTERRUPTED_EXIT
        try:
            try:
                if timer is not None:
                    timer.start()
                with _logging_to(log):
                    code = int(worker_main(env) or 0)
            finally:
                with lock:
                    active = False
                if timer is not None:
                    timer.cancel()
        except Interrupted:  # the stop landed after the worker's final record: run.json decides
            pass
    return code


def run_locally(
    spec: StudySpec,
    cases: Sequence[Case],
    output_uri: str,
    *,
    rerun: bool = False,
    rerun_failed: bool = False,
    states: Sequence[CaseState] | None = None,
    logs: Path | None = None,
    on_start: Callable[[Case, int, int], None] | None = None,
    on_done: Callable[[CaseOutcome], None] | None = None,
) -> LocalRun:
    """Run every case that has no result (or, with the flags, those that have one);
    ``logs``: a folder for each case's log."""
    states = list(states) if states is not None else local_states(spec, cases, output_uri)
    todo = [
        (c, s)
        for c, s in zip(cases, states, strict=True)
        if should_run(s, rerun=rerun, rerun_failed=rerun_failed)
    ]
    result = LocalRun(
        skipped=[
            (c, s)
            for c, s in zip(cases, states, strict=True)
            if not should_run(s, rerun=rerun, rerun_failed=rerun_failed)
        ]
    )
    for i, (case, _) in enumerate(todo):
        if on_start:
            on_start(case, i, len(todo))
        env = case.worker_env(spec, output_uri)
        minutes = case.sorter.timeout_minutes
        log = log_path(logs, case) if logs is not None else None
        code = run_case(env, minutes * 60 if minutes else None, log)
        state = classify(case, spec, read_record(case.results_uri(output_uri)))
        outcome = CaseOutcome(case, state, code)
        result.ran.append(outcome)
        if on_done:
            on_done(outcome)
        if code == INTERRUPTED_EXIT and not state.timed_out:
            raise StudyInterrupted(
                f"stopped during {case.recording.name} x {case.label}; "
                "run the same command again to finish the study"
            )
    return result

"""Worker errors: every failure ends as one line naming the stage, and an exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the worker (documented in the README)."""

    OK = 0
    FAILED = 1  # a stage failed; run.json says which and why
    CONFIG = 2  # the environment is invalid; nothing was done, nothing written
    INTERRUPTED = 130  # SIGINT/SIGTERM (e.g. a spot reclaim); run.json says failed


def one_line(exc: BaseException) -> str:
    """``Type: last line of the message``: an unexpected exception as one line for run.json."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


class WorkerError(RuntimeError):
    """An expected failure with a one-line message meant for the user (no traceback)."""


class InputError(WorkerError):
    """The input is unusable: missing asset, several ElectricalSeries, bad file."""


class SorterError(WorkerError):
    """The sorter ran and failed (its log is in the job log and in run.json)."""


class StageError(WorkerError):
    """A failure tagged with the stage it happened in (``stage: message``)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class Interrupted(WorkerError):
    """SIGTERM/SIGINT: Batch is stopping the job (spot reclaim, timeout, cancel)."""

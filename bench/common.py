"""Shared benchmark plumbing: timing, peak memory of a process tree, result records."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
GiB = 1 << 30
MB = 1e6


@dataclass
class Ratio:
    """One measured ratio and its target: ``>= target`` (default), ``<= target``
    (``lower_is_better``) or ``target +- tolerance`` (``tolerance``)."""

    name: str
    value: float
    target: float
    lower_is_better: bool = False
    note: str = ""
    tolerance: float | None = None

    @property
    def met(self) -> bool:
        if self.tolerance is not None:
            return abs(self.value - self.target) <= self.tolerance
        return self.value <= self.target if self.lower_is_better else self.value >= self.target

    @property
    def target_text(self) -> str:
        if self.tolerance is not None:
            return f"{self.target:g} +- {self.tolerance:g}"
        return f"{'<=' if self.lower_is_better else '>='} {self.target:g}"


@dataclass
class BenchResult:
    """What one benchmark writes to ``bench/results/<name>.json``."""

    name: str
    ratios: list[Ratio]
    measurements: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for ratio, record in zip(self.ratios, out["ratios"], strict=True):
            record["met"] = ratio.met
        out["machine"] = machine()
        out["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return out

    def save(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "processor": _cpu_model(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure_in_child(
    module: str, args: list[str], *, show_progress: bool = False
) -> dict[str, Any]:
    """``python -m <module> measure ARGS`` in a fresh interpreter (so one measurement's heap
    does not flatter or burden the next); its last stdout line is the JSON result.
    ``show_progress``: its stderr goes to ours as it runs, rather than into the error."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "DANDI_NO_ET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", module, "measure", *args],
        stdout=subprocess.PIPE,
        stderr=None if show_progress else subprocess.PIPE,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = "" if show_progress else f":\n{done.stderr[-3000:]}"
        raise RuntimeError(f"{module} measure {' '.join(args)} failed{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cmd(args: list[str]) -> float:
    """Wall time of a command (checked)."""
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


class PeakMemory:
    """Peak resident memory of this process and its children, sampled every 50 ms.

    SpikeInterface's ``n_jobs`` runs worker processes, so the children's RSS counts too.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.baseline_bytes = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A scratch folder for generated data, removed afterwards."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"spikebatch-bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def random_file(path: Path, size: int, block: int = 64 * MiB) -> Path:
    """An incompressible file of ``size`` bytes (one random block repeated: fast to make)."""
    seed = os.urandom(block)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            fh.write(seed[: min(block, left)])
            left -= block
    return path

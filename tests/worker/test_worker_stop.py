"""A stop is honoured in every phase: exit 130 and a failed run.json within the grace period.

Batch stops a job with SIGTERM and SIGKILLs it 30 s later (spot reclaim, cancel, terminate,
timeout). Wherever the signal lands — our code, Kilosort4's loops, a C call that never returns
to Python, a ``__del__`` (where Python discards the exception), a library that swallows it, or
while the heavy imports still run — the worker exits 130 with one line and, once the run id is
known, a run.json that says ``failed`` at the stage in progress; never ``succeeded``. A rerun of
the same RUN_ID then completes.

The stops are delivered deterministically, at named functions (``tests.support.stop_points``):
each case is a forked run of the real entrypoint, so the seconds of imports are paid once.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from spikebatch.worker.errors import ExitCode
from tests.support.ground_truth import GroundTruthSpec, score, write_ground_truth_nwb

REPO_ROOT = Path(__file__).resolve().parents[2]
#: 20 s x 16 channels: Kilosort4 sorts it in ~35 s on 2 CPUs, accuracy ~0.97 (seed 5).
STOP_SPEC = GroundTruthSpec(duration_s=20.0, num_channels=16, num_units=5, seed=5)
#: Shorter than the default (10 s) so the watchdog cases stay short; the bound is the same.
GRACE_S = 5.0
#: Bandpass + median reference: the test is about stops, not about Kilosort's defaults.
PREPROCESSING = {"bandpass": {"freq_min": 300, "freq_max": 6000}, "common_reference": {}}
RUN_ID = "stopped"

#: (name, target, how, delay_s, the stage run.json must name, extra case keys)
STOP_POINTS: list[tuple[str, str, str, float, str, dict]] = [
    ("config", "spikebatch.worker.sort:ensure_installed", "signal", 0.0, "config", {}),
    ("fetch", "spikebatch.worker.fetch:fetch", "signal", 0.0, "fetch", {}),
    ("open", "spikebatch.worker.recording:read_session", "signal", 0.0, "open", {}),
    ("preprocess", "spikebatch.worker.preprocess:materialize", "signal", 0.2, "preprocess", {}),
    ("preprocess-sigint-twice", "spikebatch.worker.preprocess:materialize", "signal", 0.2,
     "preprocess", {"signals": ["SIGINT", "SIGINT"]}),
    ("ks4-whitening", "kilosort.preprocessing:get_whitening_matrix", "signal", 0.1, "sort", {}),
    ("ks4-drift", "kilosort.datashift:run", "signal", 0.2, "sort", {}),
    ("ks4-spike-detection", "kilosort.spikedetect:run", "signal", 0.5, "sort", {}),
    ("ks4-clustering", "kilosort.clustering_qr:run", "signal", 0.3, "sort",
     {"signals": ["SIGTERM", "SIGTERM"]}),
    ("ks4-template-extraction", "kilosort.template_matching:extract", "signal", 0.3, "sort", {}),
    # The exception is lost or never raised: the watchdog ends the run.
    ("ks4-native-call", "kilosort.preprocessing:get_whitening_matrix", "native", 0.2, "sort", {}),
    ("ks4-in-del", "kilosort.datashift:run", "del", 0.0, "sort", {}),
    ("ks4-swallowed", "kilosort.spikedetect:run", "swallowed", 0.0, "sort", {}),
    # After the sort (which these cases take from the truth at once: they test our stages).
    ("postprocess", "spikebatch.worker.postprocess:analyze", "signal", 0.2, "postprocess",
     {"truth_as_sort": True}),
    ("export", "spikebatch.worker.phy_export:export_phy", "signal", 0.1, "export",
     {"truth_as_sort": True}),
    ("publish", "spikebatch.worker.publish:Publisher.upload", "signal", 0.0, "publish",
     {"truth_as_sort": True}),
]  # fmt: skip
WATCHDOG_CASES = {"ks4-native-call", "ks4-in-del", "ks4-swallowed"}


def _worker_env(truth_nwb: Path, out: Path, scratch: Path) -> dict[str, str]:
    return {
        "INPUT_URI": truth_nwb.as_uri(),
        "OUTPUT_URI": out.as_uri(),
        "RUN_ID": RUN_ID,
        "SORTER": "kilosort4",
        "SORTER_PARAMS": json.dumps({"torch_device": "cpu"}),
        "PREPROCESSING": json.dumps(PREPROCESSING),
        "SCRATCH_DIR": str(scratch),
        "STOP_GRACE_S": str(GRACE_S),
        "DANDI_NO_ET": "1",
    }


def _run_plan(plan: list[dict], tmp_path: Path) -> dict[str, dict]:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    results = tmp_path / "results"
    # numba's workqueue layer: the driver compiles the analyzer's kernels before it forks, and
    # GNU OpenMP (the default layer here) ends a forked child that uses it again.
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-m", "tests.support.stop_points", str(plan_file), str(results)],
        env=env,
        check=True,
        timeout=1500,
    )
    return {
        case["name"]: json.loads((results / f"{case['name']}.json").read_text())
        | {"log": (results / f"{case['name']}.log").read_text()}
        for case in plan
    }


def _worker_lines(log: str) -> list[str]:
    """The outcome lines: one per run, whichever path ended it."""
    return [ln for ln in log.splitlines() if ln.startswith("spikebatch-worker:")]


@pytest.mark.slow
def test_a_stop_at_any_point_of_a_kilosort4_run_exits_130_then_a_rerun_completes(
    tmp_path: Path,
) -> None:
    truth = write_ground_truth_nwb(tmp_path / "gt", STOP_SPEC)
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    env = _worker_env(truth.nwb, out, scratch)
    plan = [
        {
            "name": name,
            "target": target,
            "how": how,
            "delay_s": delay,
            "env": env,
            "record_file": str(out / RUN_ID / "run.json"),
            **extra,
            **({"truth_as_sort": str(truth.sorting_dir)} if extra.get("truth_as_sort") else {}),
        }
        for name, target, how, delay, _, extra in STOP_POINTS
    ]
    plan.append({"name": "rerun", "env": env, "record_file": str(out / RUN_ID / "run.json")})

    results = _run_plan(plan, tmp_path)

    latencies = []
    for name, _, _, _, stage, _ in STOP_POINTS:
        result = results[name]
        where = f"{name}: {result['log'][-2500:]}"
        assert result["signal_sent"] is not None, where
        assert not result["sigkilled"], where
        assert result["exit_code"] == ExitCode.INTERRUPTED, where
        assert result["latency_s"] <= GRACE_S + 2.0, where
        latencies.append(result["latency_s"])
        [line] = _worker_lines(result["log"])
        assert line.startswith(f"spikebatch-worker: failed in {stage}: stopped by SIG"), where
        record = result["record"]
        assert record["status"] == "failed", where
        assert record["error"]["stage"] == stage, where
        assert record["error"]["message"].startswith("stopped by SIG"), where
        if name in WATCHDOG_CASES:  # the exception was lost: the watchdog ended the run
            assert record["stop"] == {"by": "watchdog", "grace_s": GRACE_S}, where
    assert results["publish"]["record"]["outputs"] == ["report/index.html"]  # nothing partial

    rerun = results["rerun"]
    assert rerun["exit_code"] == 0, rerun["log"][-3000:]
    assert rerun["record"]["status"] == "succeeded"
    scored = score(_load(out / RUN_ID / "sorting"), truth.load_sorting(), _recording(truth.nwb))
    accuracy = scored.summary["accuracy"]
    print(
        f"stop latency over {len(latencies)} stops: median {statistics.median(latencies):.2f} s,"
        f" worst {max(latencies):.2f} s; rerun accuracy {accuracy:.3f}"
    )
    assert accuracy >= 0.8


def _load(folder: Path):
    import spikeinterface as si

    return si.load(folder)


def _recording(nwb: Path):
    from spikeinterface.extractors import read_nwb_recording

    return read_nwb_recording(nwb)


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (``SigCgt`` in /proc): from then on the
    worker's stop handling is installed."""
    status = Path(f"/proc/{pid}/status").read_text()
    [caught] = [ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def _start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spikebatch.worker"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop_and_wait(proc: subprocess.Popen) -> tuple[float, str]:
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=30)  # Batch's SIGKILL would come now
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return time.monotonic() - sent, stderr


@pytest.mark.parametrize("after_s", [0.0, 1.0, 3.0])
def test_a_stop_while_the_worker_still_imports_exits_130(small_gt, tmp_path: Path, after_s):
    """The handlers are in place before SpikeInterface, torch and the sorter are imported."""
    out = tmp_path / "out"
    env = _worker_env(small_gt.nwb, out, tmp_path / "scratch")
    proc = _start_worker(env)
    deadline = time.monotonic() + 20
    while not _handles_sigterm(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "no SIGTERM handler"
        time.sleep(0.005)
    time.sleep(after_s)

    latency, stderr = _stop_and_wait(proc)

    assert proc.returncode == ExitCode.INTERRUPTED, stderr[-3000:]
    assert latency <= GRACE_S + 2.0, stderr[-3000:]
    [line] = _worker_lines(stderr)
    assert line.startswith("spikebatch-worker: failed in ") and "stopped by SIGTERM" in line
    run_json = out / RUN_ID / "run.json"
    if run_json.exists():  # stopped once the run had begun: its record says so
        assert json.loads(run_json.read_text())["status"] == "failed"


@pytest.fixture
def hanging_ks3(tmp_path: Path) -> tuple[Path, Path]:
    """A ``ks3_compiled`` that never finishes (a long GPU sort); it writes its pid first."""
    bin_dir, pid_file = tmp_path / "bin", tmp_path / "ks3.pid"
    bin_dir.mkdir()
    exe = bin_dir / "ks3_compiled"
    exe.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nsleep 600\n")
    exe.chmod(0o755)
    return bin_dir, pid_file


def test_a_stop_during_a_sorter_binary_ends_it_and_exits_130(small_gt, tmp_path, hanging_ks3):
    """Kilosort3 runs as a child process (the compiled binary): a stop ends it with the run."""
    bin_dir, pid_file = hanging_ks3
    out = tmp_path / "out"
    env = _worker_env(small_gt.nwb, out, tmp_path / "scratch") | {
        "SORTER": "kilosort3",
        "SORTER_PARAMS": "{}",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    proc = _start_worker(env)
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the binary never started"
        time.sleep(0.1)
    binary = psutil.Process(int(pid_file.read_text()))

    latency, stderr = _stop_and_wait(proc)

    assert proc.returncode == ExitCode.INTERRUPTED, stderr[-3000:]
    assert latency <= GRACE_S + 2.0, stderr[-3000:]
    [line] = _worker_lines(stderr)
    assert line.startswith("spikebatch-worker: failed in sort: stopped by SIGTERM")
    assert not binary.is_running() or binary.status() == psutil.STATUS_ZOMBIE
    record = json.loads((out / RUN_ID / "run.json").read_text())
    assert record["status"] == "failed" and record["error"]["stage"] == "sort"


# -- the guard's own rules, in process ------------------------------------------------------


@pytest.fixture
def guard():
    from spikebatch.worker import stop

    assert stop.install(GRACE_S)
    try:
        yield stop
    finally:
        stop.uninstall()


def test_a_final_record_is_sealed_against_later_writes(guard, tmp_path: Path) -> None:
    """A stop never turns a finished run into a failed one, nor "running" a stop's record."""
    from spikebatch.worker.publish import Publisher

    guard.track(lambda: "publish", None)
    publisher = Publisher(tmp_path.as_uri(), "sealed")
    assert publisher.write_record({"status": "running"})
    assert publisher.write_record({"status": "succeeded"}, final=True)
    assert not publisher.write_record({"status": "failed"}, final=True)
    assert not publisher.write_record({"status": "running"})
    assert json.loads((tmp_path / "sealed" / "run.json").read_text()) == {"status": "succeeded"}

    guard.track(lambda: "config", None)  # the next run in this process starts unsealed
    assert publisher.write_record({"status": "running"})


def test_a_failed_final_write_does_not_seal(guard, tmp_path: Path, monkeypatch) -> None:
    """If the failure record could not be written, the watchdog still may write it."""
    from spikebatch import transfer
    from spikebatch.worker.publish import Publisher

    guard.track(lambda: "sort", None)
    publisher = Publisher(tmp_path.as_uri(), "unsealed")

    def unreachable(*args, **kwargs):
        raise transfer.TransferError("the bucket is unreachable")

    monkeypatch.setattr(transfer, "write_bytes", unreachable)
    with pytest.raises(transfer.TransferError):
        publisher.write_record({"status": "failed"}, final=True)
    monkeypatch.undo()
    assert publisher.write_record({"status": "failed"}, final=True)


def test_a_forked_child_does_not_report_its_signals_as_the_runs(guard) -> None:
    """A pool worker (forked) that gets SIGTERM dies as it would have without us (the default
    action, unless the host process had a handler of its own); the run is not stopped."""
    before = guard._guard.previous_handlers[signal.SIGTERM]
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    time.sleep(0.3)  # what the listener would have read by now
    if before == signal.SIG_DFL:
        assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM
    assert guard.stopped_by() is None

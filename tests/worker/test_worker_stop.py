"""A stopped job is reported as stopped: SIGTERM mid-sort -> exit 130, run.json ``failed``.

Batch stops a job with SIGTERM (cancel, terminate, timeout, spot reclaim). Kilosort runs
inside SpikeInterface's ``run_sorter``, which wraps whatever the sorter raises (our
``Interrupted`` included) in its own ``SpikeSortingError``; the worker must still exit 130
with a one-line "stopped" error at the stage it was in, not 1 with a page of traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb

#: Long enough that Kilosort4 on CPU is still sorting a few seconds after it starts.
STOP_SPEC = GroundTruthSpec(duration_s=30.0, num_channels=32, num_units=8, seed=5)


def _wait_for_stage(run_json: Path, stage: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited early ({proc.returncode})"
        try:
            if json.loads(run_json.read_text()).get("stage") == stage:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"the worker never reached {stage}")


@pytest.mark.slow
def test_sigterm_during_the_sort_exits_130_and_records_the_stop(tmp_path: Path) -> None:
    truth = write_ground_truth_nwb(tmp_path / "gt", STOP_SPEC)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "INPUT_URI": truth.nwb.as_uri(),
        "OUTPUT_URI": out.as_uri(),
        "RUN_ID": "stopped",
        "SORTER": "kilosort4",
        "SORTER_PARAMS": json.dumps({"torch_device": "cpu"}),
        "SCRATCH_DIR": str(tmp_path / "scratch"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikebatch.worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_stage(out / "stopped" / "run.json", "sort", proc, timeout=300)
        time.sleep(3.0)  # inside Kilosort, under SpikeInterface's run_sorter
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert proc.returncode == 130, stderr[-3000:]
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("spikebatch-worker:")]
    assert line.startswith("spikebatch-worker: failed in sort: stopped by SIGTERM")
    record = json.loads((out / "stopped" / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"]["stage"] == "sort"
    assert record["error"]["message"].startswith("stopped by SIGTERM: the job was stopped")
    assert "\n" not in record["error"]["message"]

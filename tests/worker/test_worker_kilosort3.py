"""Kilosort3 up to its compiled binary: SpikeInterface's KS3 wrapper, driven by the worker.

GIVEN a stand-in ``ks3_compiled`` on PATH (it records what it was given, then fails the way
a CUDA error would) WHEN the worker runs ``SORTER=kilosort3`` THEN the wrapper took the
compiled path, the binary got our recording (the preprocessed int16 binary, ``ops.mat`` and
``chanMap.mat`` with our channel count, sampling rate and probe geometry), and the worker
reports a clean sorter error: one line, exit 1, run.json failed at ``sort``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from spikebatch.worker.__main__ import main
from spikebatch.worker.settings import WorkerSettings
from tests.support.kilosort3 import CUDA_ERROR, FAKE_KS3, check_kilosort3_inputs
from tests.worker.helpers import s3_json


@pytest.fixture
def fake_ks3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image stand-in's fake ``ks3_compiled``, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ks3_compiled"
    shutil.copyfile(FAKE_KS3, exe)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_kilosort3_gets_our_recording_and_fails_cleanly(
    small_gt, bucket, scratch, fake_ks3, capsys
):
    env = {
        "INPUT_URI": small_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SORTER": "kilosort3",
        "SORTER_PARAMS": json.dumps({"detect_threshold": 5, "delete_tmp_files": False}),
        "SCRATCH_DIR": str(scratch),
    }

    code = main(env)

    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("spikebatch-worker:")]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(
        "spikebatch-worker: failed in sort: kilosort3 failed:"
    )
    assert f"last output: {CUDA_ERROR}" in lines[0]

    run_id = WorkerSettings.from_env(env).effective_run_id
    sorter_output = check_kilosort3_inputs(scratch / run_id, small_gt, spk_th=-5)
    assert sorter_output == scratch / run_id / "sorter" / "traces" / "sorter_output"

    record = s3_json(bucket, f"results/{run_id}/run.json")
    assert record["status"] == "failed"
    assert record["error"]["stage"] == "sort"
    assert record["sorter"]["name"] == "kilosort3" and record["sorter"]["version"] == "compiled"
    assert record["sorter"]["params"]["detect_threshold"] == 5

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
import stat
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from spikebatch.worker.__main__ import main
from spikebatch.worker.settings import WorkerSettings
from tests.worker.helpers import s3_json

FAKE_KS3 = """#!/usr/bin/env bash
# Stand-in for the MATLAB-compiled Kilosort3: record argv, cwd and the folder, then fail.
python3 - "$@" <<'PY'
import json, os, sys
folder = sys.argv[1]
json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "files": sorted(os.listdir(folder))},
          open(os.environ["FAKE_KS3_RECORD"], "w"))
PY
echo "Error using gpuArray: CUDA driver version is insufficient" >&2
exit 1
"""


@pytest.fixture
def fake_ks3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ks3_compiled"
    exe.write_text(FAKE_KS3)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    record = tmp_path / "ks3_call.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KS3_RECORD", str(record))
    return record


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
    assert "last output: Error using gpuArray: CUDA driver version is insufficient" in lines[0]

    call = json.loads(fake_ks3.read_text())
    run_id = WorkerSettings.from_env(env).effective_run_id
    sorter_output = scratch / run_id / "sorter" / "traces" / "sorter_output"
    assert call["argv"] == [str(sorter_output)]
    assert {"ops.mat", "chanMap.mat"} <= set(call["files"])

    n_channels, fs = small_gt.spec.num_channels, small_gt.spec.sampling_frequency
    n_samples = int(small_gt.spec.duration_s * fs)
    ops = scipy.io.loadmat(sorter_output / "ops.mat", squeeze_me=True, struct_as_record=False)[
        "ops"
    ]
    # The binary is the preprocess stage's one int16 copy in scratch, given to the compiled
    # Kilosort as it is (no second recording.dat copy).
    binary = Path(ops.fbinary)
    assert binary.is_relative_to(scratch / run_id / "preprocessed" / "traces")
    assert binary.stat().st_size == n_samples * n_channels * 2  # int16, every sample
    assert not (sorter_output / "recording.dat").exists()
    assert ops.NchanTOT == n_channels
    assert ops.fs == fs
    assert ops.spkTh == -5  # our SORTER_PARAMS reached the binary
    assert Path(ops.chanMap) == sorter_output / "chanMap.mat"
    chan_map = scipy.io.loadmat(sorter_output / "chanMap.mat")
    assert chan_map["Nchannels"].item() == n_channels
    assert chan_map["fs"].item() == fs
    positions = np.column_stack([chan_map["xcoords"].ravel(), chan_map["ycoords"].ravel()])
    from tests.support.ground_truth import read_probe_positions

    np.testing.assert_allclose(positions, read_probe_positions(small_gt.nwb))

    record = s3_json(bucket, f"results/{run_id}/run.json")
    assert record["status"] == "failed"
    assert record["error"]["stage"] == "sort"
    assert record["sorter"]["name"] == "kilosort3" and record["sorter"]["version"] == "compiled"
    assert record["sorter"]["params"]["detect_threshold"] == 5

"""The Kilosort3 image runs ``SORTER=kilosort3`` up to the compiled binary.

GIVEN the kilosort3 image (on a machine without the upstream base: built on the stand-in
whose fake ``ks3_compiled`` at /usr/bin/mlrtapp records what it was given, then fails the way
the real one does without CUDA) WHEN ``run-local --image`` sorts a local NWB with it THEN
SpikeInterface's wrapper took the compiled path inside the container, the binary got
``ops.mat``, ``chanMap.mat`` and the preprocessed int16 binary of our recording (channel
count, sampling rate, geometry, our SORTER_PARAMS), and the worker failed cleanly: one line,
exit 1, run.json ``failed`` at ``sort``.
"""

from __future__ import annotations

import json
from pathlib import Path

from spikebatch.cli.local import job_environment
from spikebatch.control.request import parse_request
from tests.image.helpers import cli_env, run_local
from tests.support.ground_truth import GroundTruthSpec, write_ground_truth_nwb
from tests.support.kilosort3 import CUDA_ERROR, check_kilosort3_inputs

SPEC = GroundTruthSpec(duration_s=5.0, num_channels=8, num_units=3, seed=7)


def test_kilosort3_reaches_the_compiled_binary_with_our_recording(
    kilosort3_image: str, scratch: Path, tmp_path: Path
) -> None:
    truth = write_ground_truth_nwb(tmp_path / "gt", SPEC)
    out = tmp_path / "out"
    params = ["--param", "detect_threshold=5", "--param", "delete_tmp_files=false"]
    result = run_local(
        [
            "--image",
            kilosort3_image,
            "--input-uri",
            truth.nwb.as_uri(),
            "--sorter",
            "kilosort3",
            *params,
            "--output",
            str(out),
            "--scratch",
            str(scratch),
        ],
        cli_env(),
        timeout=900,
    )

    assert result.returncode == 1, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("spikebatch-worker:")]
    assert len(lines) == 1
    assert lines[0].startswith("spikebatch-worker: failed in sort: kilosort3 failed:")
    assert CUDA_ERROR in lines[0]

    request = parse_request(
        {
            "input_uri": truth.nwb.as_uri(),
            "sorter": "kilosort3",
            "sorter_params": {"detect_threshold": 5, "delete_tmp_files": False},
        }
    )
    run_id = job_environment(request, out.as_uri())["RUN_ID"]
    record = json.loads((out / run_id / "run.json").read_text())
    assert record["status"] == "failed" and record["error"]["stage"] == "sort"
    assert record["sorter"]["name"] == "kilosort3" and record["sorter"]["version"] == "compiled"
    assert record["image"] == kilosort3_image

    # What the binary was given, read back through the scratch mount (/scratch in the container).
    check_kilosort3_inputs(
        scratch, truth, spk_th=-5, host_path=lambda p: scratch / Path(p).relative_to("/scratch")
    )

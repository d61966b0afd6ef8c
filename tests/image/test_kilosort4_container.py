"""The Kilosort4 image, run as a container the way Batch runs it, through the product's own
``spikebatch run-local --image``.

GIVEN a generated ground-truth NWB on the fake DANDI archive and a results bucket on moto
(both on loopback; the container on the host network) WHEN the container is stopped with
``docker stop`` in the middle of the sort, with two busy processes loading the machine, THEN
it exits 130 well within the stop timeout (a
SIGKILL would be 137) and run.json says ``failed`` at ``sort`` with "stopped"; AND WHEN the
same run is started again (same RUN_ID) THEN it ends ``succeeded``, complete, with nothing left
of the stopped attempt, and a mean accuracy >= 0.8 over true units with SNR >= 5.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from spikebatch.cli.container_run import RUN_ID_LABEL
from spikebatch.worker_image import BATCH_RUNTIME
from tests.image.helpers import (
    cli_env,
    download_prefix,
    run_local,
    s3_json,
    s3_keys,
    start_run_local,
    wait_for_stage,
)
from tests.support.cpu_load import cpu_load
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthSpec, score, write_ground_truth_nwb

DANDISET = "000777"
ASSET = "sub-ct01/sub-ct01_ses-gt_ecephys.nwb"
#: Long enough that Kilosort4 (CPU here) is still sorting seconds after it starts.
SPEC = GroundTruthSpec(duration_s=40.0, num_channels=32, num_units=10, firing_rate_hz=15.0, seed=42)


def _container_of(engine: Any, run_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = engine.containers.list(filters={"label": f"{RUN_ID_LABEL}={run_id}"})
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no running container labelled {run_id}")


def test_stopped_mid_sort_then_rerun_to_a_complete_accurate_result(
    engine: Any, kilosort4_image: str, bucket: str, scratch: Path, tmp_path: Path, capsys
) -> None:
    truth = write_ground_truth_nwb(tmp_path / "gt", SPEC)
    output_uri = f"s3://{bucket}/results"
    run_id = f"container-e2e-{uuid.uuid4().hex[:8]}"  # its own, whoever else runs containers
    run_json = f"results/{run_id}/run.json"
    args = [
        "--image",
        kilosort4_image,
        "--dandiset",
        DANDISET,
        "--asset",
        ASSET,
        "--sorter",
        "kilosort4",
        "--output-uri",
        output_uri,
        "--scratch",
        str(scratch),
        "--run-id",
        run_id,
    ]
    with FakeDandiArchive() as archive:
        archive.add_asset(DANDISET, ASSET, truth.nwb)
        env = cli_env(DANDI_API_URL=archive.api_url)

        # 1. Stop it while Kilosort runs, the way Batch does (SIGTERM, SIGKILL after 30 s), on
        #    a loaded machine: two busy processes beside it (a stop once came too late then).
        proc = start_run_local(args, env)
        try:
            with cpu_load(2):
                wait_for_stage(bucket, run_json, "sort", proc, timeout=600)
                container = _container_of(engine, run_id)
                settings = container.attrs
                time.sleep(3.0)  # inside Kilosort, under SpikeInterface's run_sorter
                started = time.monotonic()
                container.stop(timeout=BATCH_RUNTIME.stop_timeout_s)
                stopped_in = time.monotonic() - started
                _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()

        # It ran as Batch runs it: uid 1000, an init as PID 1, the job definition's /dev/shm.
        assert settings["Config"]["User"] == BATCH_RUNTIME.user
        assert settings["HostConfig"]["Init"] is True
        assert settings["HostConfig"]["ShmSize"] == BATCH_RUNTIME.shared_memory_mib * 2**20
        assert settings["HostConfig"]["NetworkMode"] == "host"

        assert proc.returncode == 130, stderr[-3000:]
        assert stopped_in < BATCH_RUNTIME.stop_timeout_s  # exited on SIGTERM, no SIGKILL
        record = s3_json(bucket, run_json)
        assert record["status"] == "failed"
        assert record["error"]["stage"] == "sort"
        assert record["error"]["message"].startswith("stopped by SIGTERM")
        [line] = [ln for ln in stderr.splitlines() if ln.startswith("spikebatch-worker:")]
        assert line.startswith("spikebatch-worker: failed in sort: stopped by SIGTERM")

        # 2. The same run again: complete, and only this attempt's objects.
        started = time.monotonic()
        rerun = run_local(args, env)
        rerun_s = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = s3_json(bucket, run_json)
    assert record["status"] == "succeeded" and record["error"] is None
    assert record["image"] == kilosort4_image  # run.json says which image ran
    keys = s3_keys(bucket, f"results/{run_id}/")
    listed = {f"results/{run_id}/{name}" for name in record["outputs"]} | {run_json}
    assert set(keys) == listed  # nothing from the stopped attempt, nothing missing
    for required in ("units.nwb", "quality_metrics.csv", "sorting/spikes.npy"):
        assert f"results/{run_id}/{required}" in keys

    import spikeinterface as si
    from spikeinterface.extractors import read_nwb_recording

    sorting = si.load(download_prefix(bucket, f"results/{run_id}/sorting/", tmp_path / "sorting"))
    recording = read_nwb_recording(
        file_path=truth.nwb, electrical_series_path="acquisition/ElectricalSeries"
    )
    result = score(sorting, truth.load_sorting(), recording)
    with capsys.disabled():
        print(
            f"\n[container] kilosort4 image: stop -> exit 130 in {stopped_in:.1f} s; rerun "
            f"{rerun_s:.0f} s, accuracy {result.summary['accuracy']:.3f} "
            f"({result.summary['num_true_units_above_snr']}/{result.summary['num_true_units']} units), "
            f"stages {record['timings_s']}"
        )
    assert result.summary["num_true_units_above_snr"] >= 5
    assert result.summary["accuracy"] >= 0.8, result

"""The scratch volume: budgeted before any byte is fetched, freed as stages finish, never shared.

GIVEN a scratch volume of a known size (``free_bytes`` of the worker reports what a volume
of that capacity has left, counting what is really on disk under the scratch root)
WHEN a recording does not fit THEN the job fails at fetch, before the download, with both
numbers and the ways out; WHEN it fits only because the NWB is deleted once its traces are
out THEN it succeeds, and the peak it measured stays inside the volume.

Kilosort3 runs as a stand-in ``ks3_compiled`` that writes what the real one writes to
scratch (a whitened copy of its input, ``temp_wh.dat``, as large as the traces) and returns
the ground truth as its sorting, so everything after the sort runs on real units.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spikebatch.scratch import size_text
from spikebatch.worker import budget, layout
from spikebatch.worker import scratch as worker_scratch
from spikebatch.worker.__main__ import main
from spikebatch.worker.settings import WorkerSettings
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthSpec, write_ground_truth_nwb
from tests.worker.helpers import ASSET, DANDISET, dandi_env, s3_json

#: 60 s x 8 channels: the traces (29 MB) dominate the analyzer's bound, as in real runs.
BUDGET_SPEC = GroundTruthSpec(duration_s=60.0, num_channels=8, num_units=4, seed=11)
FAST_SORTER = {"SORTER": "simple", "SORTER_PARAMS": '{"seed": 0}'}
#: Fails inside the sort, after the download and the conversion.
BROKEN_SORTER = {"SORTER": "simple", "SORTER_PARAMS": '{"seed": 0, "clusterer": "no-such"}'}

KS3_STANDIN = """#!{python}
# Stand-in for the compiled Kilosort3: writes its whitened copy (temp_wh.dat, as large as
# the input binary), then the ground truth as a Kilosort/phy result.
import os, shutil, sys
import numpy as np, scipy.io
folder = sys.argv[1]
ops = scipy.io.loadmat(os.path.join(folder, "ops.mat"), squeeze_me=True, struct_as_record=False)
ops = ops["ops"]
shutil.copyfile(ops.fbinary, os.path.join(folder, "temp_wh.dat"))
truth = np.load(os.environ["KS3_STANDIN_TRUTH"])
np.save(os.path.join(folder, "spike_times.npy"), truth["times"].astype("uint64"))
np.save(os.path.join(folder, "spike_clusters.npy"), truth["clusters"].astype("int32"))
np.save(os.path.join(folder, "channel_map.npy"), np.arange(int(ops.NchanTOT), dtype="int32"))
with open(os.path.join(folder, "params.py"), "w") as fh:
    fh.write(f"sample_rate = {{float(ops.fs)}}\\n")
"""


@pytest.fixture(scope="module")
def budget_gt(tmp_path_factory: pytest.TempPathFactory):
    return write_ground_truth_nwb(tmp_path_factory.mktemp("gt-budget"), BUDGET_SPEC)


@pytest.fixture
def ks3_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget_gt) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "ks3_compiled"
    exe.write_text(KS3_STANDIN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    spikes = budget_gt.load_sorting().to_spike_vector()
    truth = tmp_path / "truth.npz"
    np.savez(truth, times=spikes["sample_index"], clusters=spikes["unit_index"])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KS3_STANDIN_TRUTH", str(truth))


def volume_of(capacity: int, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the scratch root behave as a volume of ``capacity`` bytes."""
    monkeypatch.setattr(
        worker_scratch,
        "free_bytes",
        lambda path: capacity - worker_scratch.tree_bytes(root),
    )


def _plan(env: dict[str, str], nwb: Path):
    settings = WorkerSettings.from_env(env)
    series = layout.choose(layout.local_series(nwb), settings.electrical_series_path, nwb.name)
    return budget.plan_for(nwb.stat().st_size, series, settings)


def _line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [
        ln
        for ln in (captured.err + captured.out).splitlines()
        if ln.startswith("spikebatch-worker:")
    ]
    assert len(lines) == 1, captured.err[-3000:]
    return lines[0]


def test_a_recording_too_large_fails_before_the_download_with_both_numbers(
    budget_gt, bucket, scratch, monkeypatch, capsys
):
    with FakeDandiArchive() as archive:
        archive.add_asset(DANDISET, ASSET, budget_gt.nwb)
        env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), SORTER="kilosort4")
        plan = _plan(env, budget_gt.nwb)
        capacity = plan.peak_bytes - 1
        volume_of(capacity, scratch, monkeypatch)

        code = main(env)

        blobs = archive.blob_requests()
    line = _line(capsys)
    assert code == 1
    assert line.startswith("spikebatch-worker: failed in fetch: scratch too small:")
    assert f"needs {size_text(plan.peak_bytes)} at its peak" in line
    assert f"has {size_text(capacity)} free" in line
    assert "ways out: MAX_DURATION_S=" in line and "root_volume_gib >=" in line
    assert "an instance type with more NVMe (g4dn.xlarge (125 GB NVMe)" in line
    # Only the file's metadata was read (ranged), never the recording itself.
    assert blobs and all(rng is not None for method, _, rng in blobs if method == "GET")
    fetched = sum(int(r.split("-")[1]) - int(r[6:].split("-")[0]) + 1 for _, _, r in blobs if r)
    assert fetched < budget_gt.nwb.stat().st_size / 2
    run_id = WorkerSettings.from_env(env).effective_run_id
    assert not list((scratch / run_id).rglob("*.nwb*"))
    record = s3_json(bucket, f"results/{run_id}/run.json")
    assert record["status"] == "failed" and record["error"]["stage"] == "fetch"
    assert record["scratch"]["plan"]["peak_bytes"] == plan.peak_bytes
    assert record["scratch"]["plan"]["basis"] == "header"
    assert "sort" not in record["timings_s"]


def test_the_max_duration_it_suggests_fits(budget_gt, bucket, scratch, monkeypatch, capsys):
    env = {
        "INPUT_URI": budget_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        **FAST_SORTER,
    }
    plan = _plan(env, budget_gt.nwb)
    capacity = (plan.stages["convert"] + plan.input_bytes) // 2  # the download fits, not all
    volume_of(capacity, scratch, monkeypatch)

    assert main(env) == 1
    line = _line(capsys)
    seconds = line.split("MAX_DURATION_S=")[1].split(" ")[0]
    assert 1 <= float(seconds) < BUDGET_SPEC.duration_s

    assert main({**env, "MAX_DURATION_S": seconds}) == 0, _line(capsys)
    run_id = WorkerSettings.from_env({**env, "MAX_DURATION_S": seconds}).effective_run_id
    record = s3_json(bucket, f"results/{run_id}/run.json")
    assert record["scratch"]["peak_bytes"] <= capacity


def test_kilosort3_fits_only_because_the_nwb_is_freed_and_succeeds(
    budget_gt, ks3_standin, bucket, scratch, monkeypatch, capsys
):
    env = {
        "INPUT_URI": budget_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        "SORTER": "kilosort3",
        "RUN_ID": "ks3-budget",
    }
    plan = _plan(env, budget_gt.nwb)
    assert plan.peak_stage == "sort"
    capacity = plan.peak_bytes  # just enough, by the model
    assert plan.without_freeing > capacity  # keeping the NWB through the sort would not fit
    volume_of(capacity, scratch, monkeypatch)

    code = main(env)

    assert code == 0, _line(capsys)
    record = s3_json(bucket, "results/ks3-budget/run.json")
    measured = record["scratch"]
    raw = measured["raw_bytes"]
    assert raw == BUDGET_SPEC.duration_s * 30_000 * BUDGET_SPEC.num_channels * 2
    sort_peak = measured["stage_peak_bytes"]["sort"]
    assert sort_peak >= 2 * raw  # the traces and Kilosort3's whitened copy, together
    assert sort_peak + plan.input_bytes > capacity  # ... which the NWB could not have joined
    assert measured["peak_bytes"] <= capacity
    assert measured["peak_bytes"] <= 2.1 * raw  # the target for Kilosort3
    assert measured["peak_bytes"] <= plan.peak_bytes  # the model bounds what happened
    assert measured["deleted_but_open"] == []
    assert record["units"]["count"] == BUDGET_SPEC.num_units
    assert not (scratch / "ks3-budget").exists()  # removed on success


# ---- one instance, several jobs: never inherit, never delete a live job's scratch --------


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from spikebatch.worker.scratch import RunScratch
    run = RunScratch(Path(sys.argv[1]), "live-run")
    run.claim()
    (run.path / "sorting.bin").write_bytes(b"x" * 1000)
    print("holding", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def live_run(scratch: Path):
    """Another job on the same instance, alive, holding its scratch."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(scratch)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    yield scratch / "live-run"
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def test_two_runs_in_one_scratch_folder_never_share_leftovers(
    small_gt, bucket, scratch, live_run, capsys
):
    base = {
        "INPUT_URI": small_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        **FAST_SORTER,
    }
    (scratch / "not-ours").mkdir()  # no lock beside it: never touched
    (scratch / "not-ours" / "keep.txt").write_text("mine")

    # Run A fails in its sort; run locally, it keeps its scratch for inspection.
    assert main({**base, **BROKEN_SORTER, "RUN_ID": "run-a"}) == 1
    assert "failed in sort" in capsys.readouterr().err
    assert (scratch / "run-a" / "preprocessed" / "traces").is_dir()
    assert (scratch / "run-a.lock").is_file()

    # Run B finds A's lock free: A's leftovers go. The live run and a foreign folder stay.
    assert main({**base, "RUN_ID": "run-b"}) == 0
    assert not (scratch / "run-a").exists() and not (scratch / "run-a.lock").exists()
    record = s3_json(bucket, "results/run-b/run.json")
    assert record["scratch"]["removed_stale_runs"] == ["run-a"]
    assert (live_run / "sorting.bin").stat().st_size == 1000
    assert (scratch / "not-ours" / "keep.txt").read_text() == "mine"
    assert not (scratch / "run-b").exists()  # removed on success

    # The same RUN_ID as the live job: refused, and the live job's files are untouched.
    assert main({**base, "RUN_ID": "live-run"}) == 1
    assert "in use by another live run of the same RUN_ID" in capsys.readouterr().err
    assert (live_run / "sorting.bin").stat().st_size == 1000


def test_on_batch_a_failed_run_removes_its_own_scratch(small_gt, bucket, scratch):
    env = {
        "INPUT_URI": small_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        "RUN_ID": "batch-run",
        "AWS_BATCH_JOB_ID": "0f3c2a1e-job",
        **BROKEN_SORTER,
    }

    assert main(env) == 1

    assert not (scratch / "batch-run").exists() and not (scratch / "batch-run.lock").exists()
    record = s3_json(bucket, "results/batch-run/run.json")
    assert record["status"] == "failed" and record["batch"]["job_id"] == "0f3c2a1e-job"
    assert record["scratch"]["peak_bytes"] >= small_gt.nwb.stat().st_size  # it had downloaded


def test_a_lock_released_by_a_dead_process_is_stale(scratch):
    from spikebatch.worker.scratch import RunScratch, remove_stale

    dead = RunScratch(scratch, "dead-run")
    dead.claim()
    (dead.path / "big.bin").write_bytes(b"0" * 4096)
    dead.release(remove=False)  # what the kernel does when the process dies

    assert remove_stale(scratch) == ["dead-run"]
    assert list(scratch.iterdir()) == []
    assert remove_stale(scratch) == []

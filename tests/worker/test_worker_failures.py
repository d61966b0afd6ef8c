"""GIVEN a bad input or a failure mid-run WHEN the worker runs THEN one clear line, exit != 0,
run.json ``failed`` with the stage, and never a partial result marked succeeded.

These run the real entrypoint against the fake DANDI archive and the moto S3 server; the
runs that must get past sorting use SpikeInterface's fast ``simple`` sorter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spikebatch import transfer
from spikebatch.worker import publish
from spikebatch.worker.__main__ import main
from spikebatch.worker.settings import WorkerSettings
from tests.worker.helpers import ASSET, dandi_env, s3_json, s3_keys

FAST_SORTER = {"SORTER": "simple", "SORTER_PARAMS": '{"seed": 0}'}


def _run(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(env)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("spikebatch-worker:")]
    assert len(lines) == 1, err
    return code, lines[0]


def _run_json(bucket: str, env: dict[str, str]) -> tuple[str, dict]:
    run_id = WorkerSettings.from_env(env).effective_run_id
    return run_id, s3_json(bucket, f"results/{run_id}/run.json")


def test_corrupted_download_is_never_sorted(archive, bucket, scratch, capsys):
    archive.corrupt(ASSET)
    env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), **FAST_SORTER)

    code, line = _run(env, capsys)

    assert code == 1
    assert "failed in fetch" in line and "digest" in line.lower()
    run_id, record = _run_json(bucket, env)
    assert record["status"] == "failed"
    assert record["error"]["stage"] == "fetch"
    assert "sort" not in record["timings_s"]
    assert not (scratch / run_id / "sorter").exists()
    # nothing but the record and the failed run's page (where and why it failed)
    assert s3_keys(bucket, f"results/{run_id}/") == [
        f"results/{run_id}/report/index.html",
        f"results/{run_id}/run.json",
    ]


def test_missing_asset_lists_the_nearest_paths(archive, bucket, scratch, capsys):
    env = dandi_env(
        archive,
        bucket,
        SCRATCH_DIR=str(scratch),
        DANDI_ASSET_PATH="sub-sim01/sub-sim01_ecephys.nwb",
        **FAST_SORTER,
    )

    code, line = _run(env, capsys)

    assert code == 1
    assert "DANDI_ASSET_PATH: no asset 'sub-sim01/sub-sim01_ecephys.nwb'" in line
    assert f"nearest: {ASSET}" in line
    _, record = _run_json(bucket, env)
    assert record["status"] == "failed" and record["error"]["stage"] == "fetch"


def test_a_series_that_is_not_in_the_file_is_named_with_what_is(
    two_probe_gt, bucket, scratch, capsys
):
    env = {
        "INPUT_URI": two_probe_gt.nwb.as_uri(),
        "OUTPUT_URI": f"s3://{bucket}/results",
        "SCRATCH_DIR": str(scratch),
        "ELECTRICAL_SERIES_PATH": "acquisition/ElectricalSeriesAp",
        **FAST_SORTER,
    }

    code, line = _run(env, capsys)

    assert code == 1
    assert "failed in fetch" in line  # before anything is downloaded or converted
    assert "'acquisition/ElectricalSeriesAp' is not an ElectricalSeries" in line
    assert "acquisition/ElectricalSeriesProbe0, acquisition/ElectricalSeriesProbe1" in line
    _, record = _run_json(bucket, env)
    assert record["error"]["stage"] == "fetch"


def test_upload_failure_midway_is_failed_and_a_rerun_replaces_it(
    archive, bucket, scratch, capsys, monkeypatch
):
    env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), RUN_ID="rerun-1", **FAST_SORTER)
    real_upload = transfer.upload_tree

    def upload_then_fail(local_dir, dest_uri, *, progress=True):
        # The reports go up, then the connection drops: a partial result.
        real_upload(local_dir / "report", f"{dest_uri}/report", progress=progress)
        raise transfer.TransferError(f"PUT {dest_uri}/units.nwb: connection reset")

    monkeypatch.setattr(publish.transfer, "upload_tree", upload_then_fail)
    code, line = _run(env, capsys)

    assert code == 1
    assert "failed in publish" in line and "connection reset" in line
    record = s3_json(bucket, "results/rerun-1/run.json")
    assert record["status"] == "failed" and record["error"]["stage"] == "publish"
    partial = s3_keys(bucket, "results/rerun-1/")
    assert any(k.startswith("results/rerun-1/report/") for k in partial)
    assert "results/rerun-1/units.nwb" not in partial

    # The rerun of the same RUN_ID clears the partial run and publishes a complete one.
    monkeypatch.setattr(publish.transfer, "upload_tree", real_upload)
    from spikebatch import aws

    aws.client("s3").put_object(Bucket=bucket, Key="results/rerun-1/sorting/stale.npy", Body=b"x")
    assert main(env) == 0
    record = s3_json(bucket, "results/rerun-1/run.json")
    assert record["status"] == "succeeded"
    published = s3_keys(bucket, "results/rerun-1/")
    expected = {f"results/rerun-1/{p}" for p in record["outputs"]} | {"results/rerun-1/run.json"}
    assert set(published) == expected
    assert "results/rerun-1/sorting/stale.npy" not in published
    # A neighbouring run id that shares the prefix is left alone.
    assert main({**env, "RUN_ID": "rerun-10"}) == 0
    assert s3_json(bucket, "results/rerun-1/run.json")["status"] == "succeeded"


def test_unreachable_output_fails_before_any_download(archive, scratch, capsys, aws_endpoint):
    env = dandi_env(archive, "no-such-bucket", SCRATCH_DIR=str(scratch), **FAST_SORTER)

    code, line = _run(env, capsys)

    assert code == 1
    assert "failed in publish" in line
    assert archive.blob_requests() == []


def test_a_failure_after_the_sort_still_delivers_the_sorting(
    archive, bucket, scratch, capsys, monkeypatch, tmp_path
):
    """The sort is what costs (an hour of GPU): when the analyzer then fails, the run is
    failed, and what the sort found is uploaded beside run.json and the page, loadable."""
    import spikeinterface as si

    from spikebatch import aws
    from spikebatch.worker import postprocess

    def analyzer_fails(*args, **kwargs):
        raise MemoryError("analyzer: cannot allocate 12 GiB")

    monkeypatch.setattr(postprocess, "analyze", analyzer_fails)
    env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), RUN_ID="kept", **FAST_SORTER)
    code, line = _run(env, capsys)

    assert code == 1 and "failed in postprocess" in line and "12 GiB" in line
    record = s3_json(bucket, "results/kept/run.json")
    assert record["status"] == "failed" and record["error"]["stage"] == "postprocess"
    assert record["kept_after_failure"] == ["sorting/"]
    keys = s3_keys(bucket, "results/kept/")
    assert {f"results/kept/{o}" for o in record["outputs"]} | {"results/kept/run.json"} == set(keys)
    assert any(k.startswith("results/kept/sorting/") for k in keys)
    for key in (k for k in keys if k.startswith("results/kept/sorting/")):
        target = tmp_path / key.removeprefix("results/kept/")
        target.parent.mkdir(parents=True, exist_ok=True)
        aws.client("s3").download_file(bucket, key, str(target))
    sorting = si.load(tmp_path / "sorting")
    assert sorting.get_num_units() > 0 and sorting.count_total_num_spikes() > 0
    page = aws.client("s3").get_object(Bucket=bucket, Key="results/kept/report/index.html")
    html = page["Body"].read().decode()
    assert "The sort itself finished" in html and "spikebatch results kept --download" in html


def test_a_stop_after_the_sort_uploads_nothing_but_the_record(
    archive, bucket, scratch, capsys, monkeypatch
):
    """A stop (cancel, timeout, spot) has seconds before SIGKILL: run.json comes first, and
    a rerun sorts again, so nothing else is uploaded."""
    from spikebatch.worker import postprocess
    from spikebatch.worker.errors import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted("stopped by SIGTERM")

    monkeypatch.setattr(postprocess, "analyze", stopped)
    env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), RUN_ID="stopped", **FAST_SORTER)
    code, _ = _run(env, capsys)

    assert code == 130
    record = s3_json(bucket, "results/stopped/run.json")
    assert record["status"] == "failed" and "kept_after_failure" not in record
    assert not any(k.startswith("results/stopped/sorting/") for k in s3_keys(bucket, "results/"))


def _fail_in_postprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    from spikebatch.worker import postprocess

    def analyzer_fails(*args, **kwargs):
        raise MemoryError("analyzer: cannot allocate 12 GiB")

    monkeypatch.setattr(postprocess, "analyze", analyzer_fails)


def _count_sorts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from spikebatch.worker import sort

    calls: list[str] = []
    real = sort.run_sort

    def counted(recording, sorter, *args, **kwargs):
        calls.append(sorter)
        return real(recording, sorter, *args, **kwargs)

    monkeypatch.setattr(sort, "run_sort", counted)
    return calls


def _download_sorting(bucket: str, prefix: str, folder: Path):
    import spikeinterface as si

    from spikebatch import aws

    for key in (k for k in s3_keys(bucket, prefix) if k.startswith(f"{prefix}sorting/")):
        target = folder / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        aws.client("s3").download_file(bucket, key, str(target))
    return si.load(folder / "sorting")


def test_the_rerun_of_a_run_that_failed_after_its_sort_reuses_the_sort(
    archive, bucket, scratch, capsys, monkeypatch, tmp_path
):
    """The GPU hour is not paid twice: the same input, sorter and parameters, rerun under the
    same RUN_ID after a failure in postprocess, is analyzed from the kept sorting."""
    import numpy as np

    from spikebatch import aws

    env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), RUN_ID="again", **FAST_SORTER)
    with monkeypatch.context() as failing:
        _fail_in_postprocess(failing)
        assert _run(env, capsys)[0] == 1
    failed = s3_json(bucket, "results/again/run.json")
    assert failed["kept_after_failure"] == ["sorting/"]
    kept = _download_sorting(bucket, "results/again/", tmp_path / "kept")

    sorts = _count_sorts(monkeypatch)
    assert main(env) == 0
    record = s3_json(bucket, "results/again/run.json")
    assert sorts == [] and record["status"] == "succeeded"
    assert record["sort_reused"] == {
        "from_run_failed_at": failed["finished_at"],
        "sort_s": failed["timings_s"]["sort"],
        "cpu_s": failed["cpu_s"]["sort"],
        "parts": [None],
    }
    assert "kept_after_failure" not in record
    assert "results/again/units.nwb" in s3_keys(bucket, "results/again/")
    page = aws.client("s3").get_object(Bucket=bucket, Key="results/again/report/index.html")
    assert "reused from the failed run of" in page["Body"].read().decode()
    published = _download_sorting(bucket, "results/again/", tmp_path / "rerun")
    assert list(published.unit_ids) == list(kept.unit_ids)
    for unit in kept.unit_ids:
        assert np.array_equal(published.get_unit_spike_train(unit), kept.get_unit_spike_train(unit))


def test_a_rerun_with_other_sorter_parameters_sorts_again(
    archive, bucket, scratch, capsys, monkeypatch
):
    env = dandi_env(archive, bucket, SCRATCH_DIR=str(scratch), RUN_ID="other", **FAST_SORTER)
    with monkeypatch.context() as failing:
        _fail_in_postprocess(failing)
        assert _run(env, capsys)[0] == 1
    sorts = _count_sorts(monkeypatch)
    assert main({**env, "SORTER_PARAMS": '{"seed": 1}'}) == 0
    record = s3_json(bucket, "results/other/run.json")
    assert sorts == ["simple"] and "sort_reused" not in record

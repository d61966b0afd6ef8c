"""Studies on AWS Batch (moto): one array job per sorter entry, children carrying their own
input, run id and ground truth; resubmission skips what has a result or is in flight; status
and results read the results bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from spikebatch.cli import app
from spikebatch.contract import apply_array_child, derive_run_id
from spikebatch.study.cases import Case, make_cases, resolve_recordings
from spikebatch.study.spec import load_spec
from tests.submission.conftest import BUCKET, FakeStack, client
from tests.submission.conftest import archive as archive
from tests.submission.conftest import stack as stack
from tests.support.dandi_server import FakeDandiArchive

LABELS = ("tdc2", "sc2")
#: The NWB sessions of the submission tests' archive (dandiset 000409), in path order.
ASSETS = tuple(f"sub-{i}/sub-{i}_ecephys.nwb" for i in (1, 2, 3))


@pytest.fixture
def spec_file(stack: FakeStack, tmp_path: Path) -> Path:
    """3 recordings in the stack's bucket x 2 sorter entries (one with a timeout and size)."""
    for i in (1, 2, 3):
        client("s3").put_object(Bucket=BUCKET, Key=f"uploads/rec{i}.nwb", Body=b"nwb %d" % i)
    document = {
        "name": "aws",
        "snr_threshold": 4,
        "recordings": [
            {"name": f"rec{i}", "study": "synth", "input_uri": f"s3://{BUCKET}/uploads/rec{i}.nwb"}
            for i in (1, 2, 3)
        ],
        "sorters": [
            {
                "name": "tridesclous2",
                "label": "tdc2",
                "timeout_minutes": 30,
                "resources": {"vcpus": 4, "memory_gib": 16},
            },
            {"name": "spykingcircus2", "label": "sc2", "params": {"apply_preprocessing": False}},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def study(*args: str) -> Any:
    result = CliRunner().invoke(app, ["study", *map(str, args)], env={"COLUMNS": "160"})
    return result


def cases_of(spec_file: Path) -> dict[tuple[str, str], Case]:
    spec = load_spec(spec_file)
    return {(c.recording.name, c.label): c for c in make_cases(spec, resolve_recordings(spec))}


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


def manifest_of(job: dict[str, Any]) -> list[dict[str, str]]:
    uri = env_of(job)["ARRAY_MANIFEST_URI"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return json.loads(client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def put_run_json(case: Case, record: dict[str, Any], **extra: dict[str, Any]) -> None:
    prefix = f"results/{case.run_id}/"
    client("s3").put_object(Bucket=BUCKET, Key=prefix + "run.json", Body=json.dumps(record))
    for name, body in extra.items():
        client("s3").put_object(Bucket=BUCKET, Key=prefix + name, Body=json.dumps(body))


SUMMARY = {"num_true_units": 3, "well_detected": 2, "accuracy": 0.875, "precision": 0.9}


def succeeded(case: Case) -> dict[str, Any]:
    return {
        "run_id": case.run_id,
        "status": "succeeded",
        "started_at": "2026-12-01T10:00:00+00:00",
        "finished_at": "2026-12-01T10:05:00+00:00",
        "timings_s": {"sort": 120.0},
        "units": {"count": 4},
        "cost": {"actual_usd": 0.12},
        "ground_truth": {"source": "units", "snr_threshold": 4, "summary": SUMMARY},
    }


def test_each_sorter_entry_is_one_array_job_of_its_recordings(
    stack: FakeStack,
    spec_file: Path,
    tmp_path: Path,
) -> None:
    dry = study("run", spec_file, "--out", tmp_path / "out", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would submit study-aws-tdc2-3-cases-" in dry.output
    assert stack.jobs() == []

    result = study("run", spec_file, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "6 of 6 case(s) submitted" in result.output
    jobs = stack.jobs()
    assert len(jobs) == 2
    cases = cases_of(spec_file)
    etag = client("s3").head_object(Bucket=BUCKET, Key="uploads/rec1.nwb")["ETag"].strip('"')
    assert cases["rec1", "tdc2"].run_id == derive_run_id(
        source=f"s3://{BUCKET}/uploads/rec1.nwb",
        sorter="tridesclous2",
        sorter_params={},
        preprocessing=None,
        content=f"s3-etag:{etag}",
    )
    by_sorter = {env_of(job)["SORTER"]: job for job in jobs}
    for label, sorter in zip(LABELS, ("tridesclous2", "spykingcircus2"), strict=True):
        job = by_sorter[sorter]
        assert job["arrayProperties"]["size"] == 3
        env = env_of(job)
        assert env["OUTPUT_URI"] == f"s3://{BUCKET}/results"
        assert "INPUT_URI" not in env and "RUN_ID" not in env  # per child, in the manifest
        manifest = manifest_of(job)
        assert manifest == [
            {
                "INPUT_URI": f"s3://{BUCKET}/uploads/rec{i}.nwb",
                "RUN_ID": cases[f"rec{i}", label].run_id,
                "GROUND_TRUTH": "units",
                "GROUND_TRUTH_SNR_THRESHOLD": "4.0",
            }
            for i in (1, 2, 3)
        ]
    # What child 1 sees, as the worker reads it: its own input, run id and truth.
    settings = pytest.importorskip("spikebatch.worker.settings")
    child = apply_array_child(
        env_of(by_sorter["spykingcircus2"]) | {"AWS_BATCH_JOB_ARRAY_INDEX": "1"},
        manifest_of(by_sorter["spykingcircus2"]),
    )
    worker = settings.WorkerSettings.from_env(child)
    assert worker.run_id == cases["rec2", "sc2"].run_id
    assert worker.input_uri == f"s3://{BUCKET}/uploads/rec2.nwb"
    tdc2 = by_sorter["tridesclous2"]
    assert tdc2["timeout"]["attemptDurationSeconds"] == 30 * 60
    assert json.loads(env_of(by_sorter["spykingcircus2"])["SORTER_PARAMS"]) == {
        "apply_preprocessing": False
    }
    record = stack.get_json(f"runs/{cases['rec2', 'tdc2'].run_id}/request.json")
    assert record["job_id"] == f"{tdc2['jobId']}:1"
    assert record["results_uri"] == f"s3://{BUCKET}/results/{cases['rec2', 'tdc2'].run_id}/"

    # Nothing has run yet, but every case is in flight: nothing is submitted twice.
    again = study("run", spec_file, "--out", tmp_path / "out")
    assert again.exit_code == 0, again.output
    assert "nothing to submit" in again.output and "6 in flight" in again.output
    assert len(stack.jobs()) == 2


def test_a_second_run_submits_only_the_cases_without_a_result(
    stack: FakeStack,
    spec_file: Path,
    tmp_path: Path,
) -> None:
    cases = cases_of(spec_file)
    put_run_json(cases["rec2", "tdc2"], succeeded(cases["rec2", "tdc2"]))
    result = study("run", spec_file, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "5 of 6 case(s) submitted" in result.output
    manifests = {env_of(job)["SORTER"]: manifest_of(job) for job in stack.jobs()}
    assert [e["RUN_ID"] for e in manifests["tridesclous2"]] == [
        cases["rec1", "tdc2"].run_id,
        cases["rec3", "tdc2"].run_id,
    ]
    assert [e["RUN_ID"] for e in manifests["spykingcircus2"]] == [
        cases[f"rec{i}", "sc2"].run_id for i in (1, 2, 3)
    ]


def test_running_and_failed_cases_are_left_alone_unless_asked(
    stack: FakeStack,
    spec_file: Path,
    tmp_path: Path,
) -> None:
    cases = cases_of(spec_file)
    put_run_json(cases["rec1", "tdc2"], succeeded(cases["rec1", "tdc2"]))
    put_run_json(cases["rec2", "tdc2"], {"status": "running", "stage": "sort"})
    failed = {
        "status": "failed",
        "error": {"stage": "sort", "message": "boom"},
        "finished_at": "2026-01-01T00:00:00+00:00",
    }
    put_run_json(cases["rec3", "tdc2"], failed)
    result = study("run", spec_file, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    [job] = stack.jobs()
    assert env_of(job)["SORTER"] == "spykingcircus2" and job["arrayProperties"]["size"] == 3

    status = study("status", spec_file, "--out", tmp_path / "out")
    assert status.exit_code == 0, status.output
    assert "succeeded 0.875" in status.output and "failed" in status.output
    assert status.output.count("in flight") == 4

    retry = study("run", spec_file, "--out", tmp_path / "out", "--rerun-failed")
    assert retry.exit_code == 0, retry.output
    [new] = [j for j in stack.jobs() if j["jobId"] != job["jobId"]]
    env = env_of(new)  # one case: a plain job, everything in its own environment
    assert "arrayProperties" not in new or not new["arrayProperties"].get("size")
    assert env["RUN_ID"] == cases["rec3", "tdc2"].run_id
    assert env["INPUT_URI"] == f"s3://{BUCKET}/uploads/rec3.nwb"
    assert env["GROUND_TRUTH"] == "units"

    # Resubmitted after its failed run.json was written: in flight, not submitted again.
    jobs = len(stack.jobs())
    again = study("run", spec_file, "--out", tmp_path / "out", "--rerun-failed")
    assert again.exit_code == 0, again.output
    assert "nothing to submit" in again.output and "5 in flight" in again.output
    assert len(stack.jobs()) == jobs


def test_a_batch_failure_without_run_json_counts_as_failed_or_timed_out(
    stack: FakeStack,
    spec_file: Path,
    tmp_path: Path,
) -> None:
    from spikebatch.study.batch import aws_states

    cases = cases_of(spec_file)
    case = cases["rec1", "tdc2"]
    stack_json = {
        f"runs/{case.run_id}/request.json": {"run_id": case.run_id, "job_id": "j:0"},
        f"runs/{case.run_id}/status.json": {
            "status": "FAILED",
            "failure_kind": "timeout",
            "status_reason": "Job attempt duration exceeded timeout",
        },
    }
    for key, body in stack_json.items():
        client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body))
    spec = load_spec(spec_file)
    [state] = aws_states(spec, [case], f"s3://{BUCKET}/results", bucket=BUCKET)
    assert state.status == "timed_out"
    assert "exceeded timeout" in state.detail


def test_results_read_the_bucket(
    stack: FakeStack,
    spec_file: Path,
    tmp_path: Path,
) -> None:
    cases = cases_of(spec_file)
    done = cases["rec1", "sc2"]
    score = {
        "summary": SUMMARY,
        "units": [
            {"true_unit_id": 0, "snr": 8.5, "accuracy": 0.95, "best_match_unit_id": 3},
            {"true_unit_id": 1, "snr": 3.1, "accuracy": 0.8, "best_match_unit_id": 1},
        ],
    }
    put_run_json(done, succeeded(done), **{"ground_truth_score.json": score})
    out = tmp_path / "out"
    result = study("results", spec_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 of 6 case(s) finished" in result.output
    collected = json.loads((out / "study.json").read_text())
    assert collected["name"] == "aws"
    rows = {(c["recording"], c["label"]): c for c in collected["cases"]}
    assert len(rows) == 6
    row = rows["rec1", "sc2"]
    assert row["status"] == "succeeded" and row["run_id"] == done.run_id
    assert row["ground_truth"]["accuracy"] == 0.875
    assert row["cost_usd"] == 0.12
    assert row["results_uri"] == f"s3://{BUCKET}/results/{done.run_id}/"
    assert {c["status"] for k, c in rows.items() if k != ("rec1", "sc2")} == {"pending"}
    units = (out / "units.csv").read_text().splitlines()
    assert len(units) == 3 and units[1].startswith("rec1,spykingcircus2,sc2,0,8.5,0.95")
    assert (out / "index.html").is_file()


def test_file_recordings_cannot_go_to_batch(
    stack: FakeStack,
    tmp_path: Path,
) -> None:
    recording = tmp_path / "r.nwb"
    recording.write_bytes(b"nwb")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "local-only",
                "recordings": [{"name": "r", "input_uri": recording.as_uri()}],
                "sorters": [{"name": "tridesclous2"}],
            }
        )
    )
    result = study("run", spec, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "file:// URI is local" in result.stderr
    assert stack.jobs() == []


def test_dandi_recordings_resolve_on_the_given_archive_and_their_jobs_fetch_from_it(
    stack: FakeStack, archive: FakeDandiArchive, tmp_path: Path
) -> None:
    """One asset by path and a glob (read page by page: the archive pages by 2) of dandiset
    000409: each child fetches its own asset from the archive the cases were resolved on, and
    its run id carries the asset's id (immutable bytes), not only its path."""
    document = {
        "name": "dandi",
        "recordings": [
            {"name": "one", "study": "s", "dandiset_id": "000409", "asset": ASSETS[0]},
            {"name": "all", "study": "s", "dandiset_id": "000409", "asset_glob": "sub-*/*.nwb"},
        ],
        "sorters": [{"name": "tridesclous2", "label": "tdc2"}],
    }
    spec_file = tmp_path / "dandi.yaml"
    spec_file.write_text(yaml.safe_dump(document, sort_keys=False))

    result = study("run", spec_file, "--out", tmp_path / "out", "--dandi-api-url", archive.api_url)

    assert result.exit_code == 0, result.output
    assert "4 of 4 case(s) submitted" in result.output
    [job] = stack.jobs()
    assert env_of(job)["DANDI_API_URL"] == archive.api_url
    manifest = manifest_of(job)
    assert [(e["DANDISET_ID"], e["DANDI_ASSET_PATH"]) for e in manifest] == [
        ("000409", path) for path in (ASSETS[0], *ASSETS)
    ]
    ids = {a.path: a.asset_id for a in archive.assets("000409")}
    spec = load_spec(spec_file)
    [first, *_] = make_cases(spec, resolve_recordings(spec, api_url=archive.api_url))
    assert first.run_id == manifest[0]["RUN_ID"]
    assert first.recording.content == f"dandi-asset:{ids[ASSETS[0]]}"
    again = study("run", spec_file, "--out", tmp_path / "out", "--dandi-api-url", archive.api_url)
    assert "4 in flight" in again.output and len(stack.jobs()) == 1

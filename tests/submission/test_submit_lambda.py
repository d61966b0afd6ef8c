"""The S3-triggered submit Lambda: requests/ and uploads/ → Batch, once per object version."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from spikebatch import aws
from spikebatch.contract import dandi_source, derive_run_id
from spikebatch.control import records, submission
from spikebatch.control.dandi_assets import DandiUnavailableError
from tests.submission.conftest import BUCKET, FakeStack, Invoke, client
from tests.submission.faults import FakeClock
from tests.submission.lambda_support import (
    capture_logs,
    log_lines,
    nwb_bytes,
    upload_event,
)
from tests.support.dandi_server import FakeDandiArchive


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


REQUEST = {
    "input_uri": "s3://lab-bucket/raw/session-1.nwb",
    "sorter": "kilosort4",
    "sorter_params": {"Th_universal": 10},
    "max_duration_s": 120,
    "output_prefix": "lab",
    "resources": {"memory_gib": 60, "spot": False},
}


def test_valid_request_submits_exactly_one_job_with_the_contract_env(
    lambda_env: FakeStack, invoke: Invoke, submit_handler: Any
) -> None:
    # GIVEN a request file uploaded to requests/
    event = upload_event("requests/lab/run 1.json", json.dumps(REQUEST).encode())
    logs = capture_logs(submit_handler)
    # WHEN S3 notifies the Lambda
    result = invoke(event)
    # THEN one job runs with the worker-contract env, and the run is recorded
    run_id = derive_run_id(
        source=REQUEST["input_uri"],
        sorter="kilosort4",
        sorter_params={"Th_universal": 10},
        max_duration_s=120.0,
    )
    [outcome] = result["results"]
    assert outcome["status"] == "submitted" and outcome["run_ids"] == [run_id]
    [job] = lambda_env.jobs()
    assert job["jobId"] == outcome["job_id"]
    assert job["jobQueue"] == lambda_env.outputs["PriorityQueueArn"]
    assert job["jobDefinition"] == lambda_env.outputs["GpuJobDefinitionArn"]
    assert job["tags"]["spikebatch:run-id"] == run_id
    assert set(job["tags"]) == {"spikebatch:run-id", submission.CLAIM_TAG}
    env = env_of(job)
    assert {k: env[k] for k in env if k not in {"SCRATCH_DIR", "AWS_BATCH_JOB_ID"}} == {
        "INPUT_URI": "s3://lab-bucket/raw/session-1.nwb",
        "SORTER": "kilosort4",
        "SORTER_PARAMS": '{"Th_universal":10}',
        "MAX_DURATION_S": "120.0",
        "OUTPUT_URI": f"s3://{BUCKET}/results/lab",
        "RUN_ID": run_id,
    }
    record = lambda_env.get_json(f"runs/{run_id}/request.json")
    assert record["submitted_by"] == f"s3://{BUCKET}/requests/lab/run 1.json"
    assert record["job_id"] == job["jobId"]
    assert record["results_uri"] == f"s3://{BUCKET}/results/lab/{run_id}/"
    assert record["request"]["resources"] == {
        "memory_gib": 60.0,
        "spot": False,
        "timeout_hours": 12,
    }
    # AND the structured log says so, with the Lambda context injected
    [line] = [entry for entry in log_lines(logs) if entry["message"].startswith("submitted")]
    assert line["level"] == "INFO"
    assert line["function_name"] == "spikebatch-submit"
    assert line["outcome"]["run_ids"] == [run_id]


def test_asset_requests_are_checked_against_dandi(
    lambda_env: FakeStack,
    archive: FakeDandiArchive,
    monkeypatch: pytest.MonkeyPatch,
    invoke: Invoke,
) -> None:
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)
    request = {"dandiset_id": "000409", "asset_glob": "sub-*/*.nwb", "sorter": "kilosort3"}
    [outcome] = invoke(upload_event("requests/all.json", json.dumps(request).encode()))["results"]
    assert outcome["status"] == "submitted" and len(outcome["run_ids"]) == 3
    [job] = lambda_env.jobs()
    assert job["arrayProperties"]["size"] == 3
    manifest = lambda_env.get_json(f"manifests/{job['tags']['spikebatch:run-id']}.json")
    assert [m["DANDI_ASSET_PATH"] for m in manifest] == [
        f"sub-{i}/sub-{i}_ecephys.nwb" for i in (1, 2, 3)
    ]
    assert env_of(job)["DANDI_API_URL"] == archive.api_url

    missing = {"dandiset_id": "000409", "assets": ["sub-9/sub-9_ecephys.nwb"]}
    [outcome] = invoke(upload_event("requests/missing.json", json.dumps(missing).encode()))[
        "results"
    ]
    assert outcome["status"] == "rejected"
    assert outcome["errors"] == [
        {"field": "assets", "message": "not in dandiset 000409 (draft): sub-9/sub-9_ecephys.nwb"}
    ]
    assert len(lambda_env.jobs()) == 1


def test_bad_request_starts_no_job_and_explains_field_by_field(
    lambda_env: FakeStack, invoke: Invoke, submit_handler: Any
) -> None:
    body = json.dumps(
        {"dandiset_id": "409", "assets": ["a.nwb"], "resources": {"gpus": 0, "memory_gib": 512}}
    )
    logs = capture_logs(submit_handler)
    [outcome] = invoke(upload_event("requests/typo.json", body.encode()))["results"]
    assert lambda_env.jobs() == []
    assert outcome["status"] == "rejected"
    assert outcome["error_file"] == f"s3://{BUCKET}/errors/typo.json"
    document = lambda_env.get_json("errors/typo.json")
    assert document["object"] == f"s3://{BUCKET}/requests/typo.json"
    assert {e["field"] for e in document["errors"]} == {"dandiset_id", "resources.memory_gib"}
    assert "at most" not in json.dumps(document) and "128" in json.dumps(document)
    [line] = [e for e in log_lines(logs) if e["message"].startswith("rejected")]
    assert line["level"] == "WARNING" and line["outcome"]["errors"] == document["errors"]


def test_upload_of_an_nwb_file_is_sorted_with_the_stack_defaults(
    lambda_env: FakeStack, invoke: Invoke
) -> None:
    key = "uploads/my session/rec é.nwb"
    [outcome] = invoke(upload_event(key, nwb_bytes()))["results"]
    assert outcome["status"] == "submitted"
    [job] = lambda_env.jobs()
    env = env_of(job)
    assert env["INPUT_URI"] == f"s3://{BUCKET}/{key}"
    assert env["SORTER"] == "kilosort3" and env["SORTER_PARAMS"] == "{}"
    assert job["jobQueue"] == lambda_env.outputs["JobQueueArn"]  # spot by default
    assert env["RUN_ID"] == derive_run_id(source=f"s3://{BUCKET}/{key}", sorter="kilosort3")


def test_the_same_event_five_times_submits_once(lambda_env: FakeStack, invoke: Invoke) -> None:
    event = upload_event("requests/once.json", json.dumps(REQUEST).encode())
    statuses = [invoke(event)["results"][0]["status"] for _ in range(5)]
    assert statuses == ["submitted"] + ["duplicate"] * 4
    assert len(lambda_env.jobs()) == 1


@pytest.mark.usefixtures("atomic_dynamodb")
def test_concurrent_deliveries_submit_once(lambda_env: FakeStack, invoke: Invoke) -> None:
    event = upload_event("uploads/concurrent.nwb", nwb_bytes())
    aws.client("dynamodb"), aws.client("s3"), aws.client("batch")  # shared, thread-safe clients
    with ThreadPoolExecutor(max_workers=5) as pool:
        outcomes = list(pool.map(lambda _: invoke(event)["results"][0]["status"], range(5)))
    assert sorted(outcomes) == ["duplicate"] * 4 + ["submitted"]
    assert len(lambda_env.jobs()) == 1


def test_a_new_version_of_the_same_key_is_a_new_request(
    lambda_env: FakeStack, invoke: Invoke
) -> None:
    client("s3").put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = upload_event("requests/again.json", json.dumps(REQUEST).encode())
    second = upload_event(
        "requests/again.json", json.dumps({**REQUEST, "max_duration_s": 30}).encode()
    )
    assert first["Records"][0]["s3"]["object"]["versionId"]
    # The older version's event arrives after the newer one was written: it still reads
    # exactly the version it announces.
    results = [invoke(e)["results"][0] for e in (second, first, first)]
    assert [r["status"] for r in results] == ["submitted", "submitted", "duplicate"]
    durations = sorted(env_of(j)["MAX_DURATION_S"] for j in lambda_env.jobs())
    assert durations == ["120.0", "30.0"]


def test_a_failed_submit_is_retried_not_lost(
    lambda_env: FakeStack, monkeypatch: pytest.MonkeyPatch, invoke: Invoke
) -> None:
    event = upload_event("uploads/throttled.nwb", nwb_bytes())
    batch = aws.client("batch")
    real_submit = batch.submit_job
    calls = {"n": 0}

    def throttled_once(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 429},
                },
                "SubmitJob",
            )
        return real_submit(**kwargs)

    monkeypatch.setattr(batch, "submit_job", throttled_once)
    with pytest.raises(ClientError, match="Rate exceeded"):
        invoke(event)  # Lambda retries an async invocation that raised
    assert lambda_env.jobs() == []
    assert invoke(event)["results"][0]["status"] == "submitted"
    assert invoke(event)["results"][0]["status"] == "duplicate"
    assert len(lambda_env.jobs()) == 1


EXPECTED_KEYS = "expected requests/**.json, uploads/**.nwb or uploads/**.ap.meta (SpikeGLX)"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("requests/notes.txt", EXPECTED_KEYS),
        ("other/x.json", EXPECTED_KEYS),
        ("uploads/r_g0/r_g0_t0.imec0.ap.bin", EXPECTED_KEYS),
    ],
)
def test_other_keys_are_ignored_with_a_reason(
    lambda_env: FakeStack, key: str, reason: str, invoke: Invoke
) -> None:
    [outcome] = invoke(upload_event(key, b"{}"))["results"]
    assert outcome == {
        "status": "ignored",
        "object": f"s3://{BUCKET}/{key}",
        "errors": [{"field": "key", "message": reason}],
    }
    assert lambda_env.jobs() == []


def test_request_object_deleted_before_the_event_arrives(
    lambda_env: FakeStack, invoke: Invoke
) -> None:
    event = upload_event("requests/gone.json", json.dumps(REQUEST).encode())
    client("s3").delete_object(Bucket=BUCKET, Key="requests/gone.json")
    [outcome] = invoke(event)["results"]
    assert outcome["status"] == "rejected"
    assert outcome["errors"][0]["message"].startswith("the object is gone")
    assert lambda_env.jobs() == []


def test_a_dandi_source_request_names_the_source_in_its_record(
    lambda_env: FakeStack,
    archive: FakeDandiArchive,
    monkeypatch: pytest.MonkeyPatch,
    invoke: Invoke,
) -> None:
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)
    path = "sub-2/sub-2_ecephys.nwb"
    request = {"dandiset_id": "000409", "assets": [path]}
    [outcome] = invoke(upload_event("requests/one.json", json.dumps(request).encode()))["results"]
    [run_id] = outcome["run_ids"]
    record = lambda_env.get_json(f"runs/{run_id}/request.json")
    assert record["source"] == dandi_source("000409", "draft", path)


def test_requests_without_a_sorter_get_the_stacks_default(
    lambda_env: FakeStack, monkeypatch: pytest.MonkeyPatch, invoke: Invoke
) -> None:
    monkeypatch.setenv("DEFAULT_SORTER", "kilosort4")
    body = json.dumps({"input_uri": "s3://lab-bucket/raw/b.nwb"}).encode()
    [outcome] = invoke(upload_event("requests/default.json", body))["results"]
    assert outcome["status"] == "submitted"
    [job] = lambda_env.jobs()
    assert env_of(job)["SORTER"] == "kilosort4"


def test_records_that_cannot_be_completed_after_submit_job_are_completed_by_the_retry(
    lambda_env: FakeStack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    real_write = submission.write_submitted
    broken = {"on": True}

    def records_unwritable_once_submitted(plan: Any, job: Any, **kwargs: Any) -> None:
        if job is not None and broken["on"]:
            raise ClientError(
                {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                "PutObject",
            )
        real_write(plan, job, **kwargs)

    monkeypatch.setattr(submission, "write_submitted", records_unwritable_once_submitted)
    event = upload_event("uploads/records.nwb", nwb_bytes())
    with pytest.raises(submission.RecordsIncomplete):
        invoke(event)  # the job exists: Lambda retries to finish the records
    [job] = lambda_env.jobs()
    record = lambda_env.get_json(f"runs/{job['tags']['spikebatch:run-id']}/request.json")
    assert record["job_id"] is None and record["submitted_by"].endswith("uploads/records.nwb")
    broken["on"] = False
    clock.now += 60  # Lambda's first retry
    [outcome] = invoke(event)["results"]
    assert (outcome["status"], outcome["job_id"]) == ("recovered", job["jobId"])
    assert len(lambda_env.jobs()) == 1
    record = lambda_env.get_json(f"runs/{outcome['run_ids'][0]}/request.json")
    assert record["job_id"] == job["jobId"]
    assert invoke(event)["results"][0]["status"] == "duplicate"


def test_a_failed_submit_leaves_a_record_that_says_so(
    lambda_env: FakeStack, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = aws.client("batch")

    def refuse(**kwargs: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": "ClientException", "Message": "no"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "SubmitJob",
        )

    monkeypatch.setattr(batch, "submit_job", refuse)
    with pytest.raises(ClientError):
        invoke(upload_event("uploads/refused.nwb", nwb_bytes()))
    [key] = lambda_env.keys("runs/")
    record = records.load_run(BUCKET, key.split("/")[1])
    assert record.job_id is None and record.state == "NOT SUBMITTED"


@pytest.mark.parametrize(
    ("request_body", "field", "message"),
    [
        (
            {"dandiset_id": "000999", "assets": ["sub-1/sub-1_ecephys.nwb"]},
            "dandiset_id",
            "dandiset 000999 does not exist on {api} (DANDI: No Dandiset matches the given query.)",
        ),
        (
            {"dandiset_id": "000409", "version": "0.230101.0000", "asset_glob": "*"},
            "version",
            "dandiset 000409 has no published version '0.230101.0000' on {api}"
            " (DANDI: No Version matches the given query.); it has none, or use 'draft'",
        ),
    ],
)
def test_a_request_for_what_dandi_does_not_have_is_rejected_with_its_answer(
    lambda_env: FakeStack,
    archive: FakeDandiArchive,
    monkeypatch: pytest.MonkeyPatch,
    invoke: Invoke,
    request_body: dict[str, Any],
    field: str,
    message: str,
) -> None:
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)
    event = upload_event("requests/unknown.json", json.dumps(request_body).encode())
    [outcome] = invoke(event)["results"]
    expected = [{"field": field, "message": message.format(api=archive.api_url)}]
    assert outcome["status"] == "rejected" and outcome["errors"] == expected
    assert lambda_env.get_json("errors/unknown.json")["errors"] == expected
    assert lambda_env.jobs() == []


def test_an_archive_that_does_not_answer_is_retried_not_rejected(
    lambda_env: FakeStack,
    archive: FakeDandiArchive,
    monkeypatch: pytest.MonkeyPatch,
    invoke: Invoke,
) -> None:
    monkeypatch.setenv("DANDI_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    request = {"dandiset_id": "000409", "assets": ["sub-1/sub-1_ecephys.nwb"]}
    event = upload_event("requests/later.json", json.dumps(request).encode())
    with pytest.raises(DandiUnavailableError, match="cannot reach the DANDI API"):
        invoke(event)  # a function error: Lambda retries
    assert lambda_env.keys("errors/") == [] and lambda_env.jobs() == []
    monkeypatch.setenv("DANDI_API_URL", archive.api_url)  # the archive is back
    assert invoke(event)["results"][0]["status"] == "submitted"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the upload is empty (0 bytes)"),
        (b"PK\x03\x04" + b"\0" * 5000, "not an NWB (HDF5) file: no HDF5 signature in the first"),
        (nwb_bytes()[:20], "the HDF5 superblock is cut off (the upload is truncated)"),
        (nwb_bytes()[:3000], "truncated: its HDF5 superblock says the file is"),
    ],
)
def test_an_upload_that_is_not_a_complete_nwb_starts_no_job(
    lambda_env: FakeStack,
    invoke: Invoke,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    message: str,
) -> None:
    s3 = aws.client("s3")
    real_get = s3.get_object
    gets: list[dict[str, Any]] = []

    def get_object(**kwargs: Any) -> Any:
        gets.append(kwargs)
        return real_get(**kwargs)

    monkeypatch.setattr(s3, "get_object", get_object)
    [outcome] = invoke(upload_event("uploads/lab/bad.nwb", body))["results"]
    assert outcome["status"] == "rejected", outcome
    [error] = outcome["errors"]
    assert error["field"] == "upload" and error["message"].startswith(message)
    document = lambda_env.get_json("errors/uploads/lab/bad.nwb.json")
    assert document["errors"] == outcome["errors"]
    assert document["what_to_do"].startswith("upload the complete NWB file again")
    assert [g.get("Range") for g in gets] == ["bytes=0-4095"]  # the first bytes only
    assert lambda_env.jobs() == []

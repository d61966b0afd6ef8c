"""SpikeGLX and Open Ephys inputs through the submit Lambda: a probe's ``.ap.meta`` uploaded
after its ``.bin``, a request naming a recording folder, and a campaign over an S3 glob."""

from __future__ import annotations

import json
from typing import Any

import pytest

from spikebatch.contract import derive_run_id
from spikebatch.control.s3_inputs import match_files, match_folders
from tests.submission.campaign_support import mark
from tests.submission.conftest import BUCKET, FakeStack, Invoke, client
from tests.submission.lambda_support import upload_event

CHANNELS, SAMPLES = 385, 100
BIN_BYTES = CHANNELS * 2 * SAMPLES
LAB = "lab-rig-data"


def meta(file_size: int = BIN_BYTES, channels: int = CHANNELS) -> bytes:
    """A minimal SpikeGLX .meta: what the pair check reads."""
    return f"imSampRate=30000\nnSavedChans={channels}\nfileSizeBytes={file_size}\n".encode()


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


PROBE = "uploads/rig1/mouse1_g0/mouse1_g0_t0.imec0.ap"


def test_a_probe_uploaded_bin_then_meta_is_one_spikeglx_run(
    lambda_env: FakeStack, invoke: Invoke
) -> None:
    [first] = invoke(upload_event(f"{PROBE}.bin", b"\0" * BIN_BYTES))["results"]
    assert first["status"] == "ignored" and "uploads/**.ap.meta" in first["errors"][0]["message"]
    assert lambda_env.jobs() == []
    [outcome] = invoke(upload_event(f"{PROBE}.meta", meta()))["results"]
    assert outcome["status"] == "submitted", outcome
    [job] = lambda_env.jobs()
    env = env_of(job)
    uri = f"s3://{BUCKET}/{PROBE}.meta"
    assert env["INPUT_URI"] == uri and env["DATA_TYPE"] == "spikeglx"
    assert env["RUN_ID"] == derive_run_id(source=uri, sorter="kilosort3", data_type="spikeglx")
    assert lambda_env.keys("errors/") == []


@pytest.mark.parametrize(
    ("bin_bytes", "message"),
    [
        (None, "mouse1_g0_t0.imec0.ap.meta: its mouse1_g0_t0.imec0.ap.bin is missing"),
        (BIN_BYTES - 770, f"mouse1_g0_t0.imec0.ap.bin: {BIN_BYTES - 770} bytes, but its .meta"),
    ],
)
def test_a_meta_without_its_complete_bin_starts_nothing(
    lambda_env: FakeStack, invoke: Invoke, bin_bytes: int | None, message: str
) -> None:
    if bin_bytes is not None:
        client("s3").put_object(Bucket=BUCKET, Key=f"{PROBE}.bin", Body=b"\0" * bin_bytes)
    [outcome] = invoke(upload_event(f"{PROBE}.meta", meta()))["results"]
    assert outcome["status"] == "rejected"
    [error] = outcome["errors"]
    assert error["field"] == "upload" and error["message"].startswith(message)
    assert "\n" not in error["message"]
    document = lambda_env.get_json(f"errors/{PROBE}.meta.json")
    assert document["errors"] == outcome["errors"]
    assert document["what_to_do"].startswith("upload the complete .bin, then its .meta again")
    assert lambda_env.jobs() == []


def test_lf_and_ni_streams_are_ignored(lambda_env: FakeStack, invoke: Invoke) -> None:
    for key in ("uploads/r_g0/r_g0_t0.imec0.lf.meta", "uploads/r_g0/r_g0_t0.nidq.meta"):
        [outcome] = invoke(upload_event(key, meta()))["results"]
        assert outcome["status"] == "ignored"
    assert lambda_env.jobs() == []


def test_a_request_naming_a_folder_passes_the_format_and_reader_options(
    lambda_env: FakeStack, invoke: Invoke
) -> None:
    request = {
        "input_uri": "s3://lab-bucket/rig1/session3/",
        "data_type": "spikeglx",
        "read_recording_kwargs": {"stream_name": "imec0.ap"},
    }
    [outcome] = invoke(upload_event("requests/s3.json", json.dumps(request).encode()))["results"]
    assert outcome["status"] == "submitted", outcome
    [job] = lambda_env.jobs()
    env = env_of(job)
    assert env["INPUT_URI"] == "s3://lab-bucket/rig1/session3/"
    assert env["DATA_TYPE"] == "spikeglx"
    assert json.loads(env["READ_RECORDING_KWARGS"]) == {"stream_name": "imec0.ap"}
    assert env["RUN_ID"].startswith("session3-kilosort3-")


# -- campaigns over an S3 glob -------------------------------------------------------------


def spikeglx_run(folder: str, probes: int) -> dict[str, bytes]:
    """A SpikeGLX run folder: per probe an AP and an LF pair, and the NI stream."""
    stem = folder.rstrip("/").rsplit("/", 1)[-1] + "_t0"
    files = {f"{folder}{stem}.nidq.bin": b"\0" * 64, f"{folder}{stem}.nidq.meta": b"x=1\n"}
    for probe in range(probes):
        files[f"{folder}{stem}.imec{probe}.ap.bin"] = b"\0" * BIN_BYTES
        files[f"{folder}{stem}.imec{probe}.ap.meta"] = meta()
        files[f"{folder}{stem}.imec{probe}.lf.bin"] = b"\0" * 770
    return files


SESSIONS = {
    **spikeglx_run("rig1/s1/s1_g0/", probes=2),
    **spikeglx_run("rig1/s2/s2_g0/", probes=1),
    "rig1/s3/s3_g0/Record Node 101/experiment1/recording1/structure.oebin": b"{}",
    "rig1/s3/s3_g0/Record Node 101/experiment1/recording1/continuous/x/continuous.dat": b"\0"
    * 1000,
    "rig1/s4/s4_g0/README.txt": b"notes, no recording",
    "rig2/s5/s5_g0/s5_g0_t0.imec0.ap.bin": b"\0" * BIN_BYTES,  # another rig
}
GLOB = f"s3://{LAB}/rig1/*/*_g0/"


@pytest.fixture
def lab(lambda_env: FakeStack) -> FakeStack:
    """A lab bucket with three recordings under rig1/ (two SpikeGLX, one Open Ephys), a
    folder with only a README, and a recording under another rig."""
    s3 = client("s3")
    s3.create_bucket(Bucket=LAB)
    for key, body in SESSIONS.items():
        s3.put_object(Bucket=LAB, Key=key, Body=body)
    return lambda_env


def manifest_of(stack: FakeStack, job: dict[str, Any]) -> list[dict[str, str]]:
    return stack.get_json(env_of(job)["ARRAY_MANIFEST_URI"].removeprefix(f"s3://{BUCKET}/"))


def test_a_glob_over_session_folders_is_a_campaign_of_the_recordings(
    lab: FakeStack, invoke: Invoke
) -> None:
    body = json.dumps({"input_uri": GLOB, "sorter": "kilosort4"}).encode()
    [outcome] = invoke(upload_event("requests/rig1.json", body))["results"]
    assert outcome["status"] == "submitted", outcome
    assert outcome["counts"]["to run"] == 3
    [job] = lab.jobs()
    assert job["arrayProperties"]["size"] == 3
    manifest = manifest_of(lab, job)
    assert [m["INPUT_URI"] for m in manifest] == [
        f"s3://{LAB}/rig1/s{i}/s{i}_g0/" for i in (1, 2, 3)
    ]
    assert [m["RUN_ID"].split("-kilosort4-")[0] for m in manifest] == ["s1-g0", "s2-g0", "s3-g0"]
    assert "DATA_TYPE" not in env_of(job)  # told from the files, per recording

    # The runs succeed; the same request again skips them all.
    mark(lab, job, range(3), "SUCCEEDED")
    [again] = invoke(upload_event("requests/rig1-again.json", body))["results"]
    assert again["status"] == "skipped" and again["counts"]["done"] == 3
    assert len(lab.jobs()) == 1


def test_a_glob_over_probe_files_is_one_run_per_probe(lab: FakeStack, invoke: Invoke) -> None:
    body = json.dumps({"input_uri": f"s3://{LAB}/rig1/*/*_g0/*.ap.*"}).encode()
    [outcome] = invoke(upload_event("requests/probes.json", body))["results"]
    assert outcome["status"] == "submitted", outcome
    [job] = lab.jobs()
    assert [m["INPUT_URI"].rsplit("/", 1)[-1] for m in manifest_of(lab, job)] == [
        "s1_g0_t0.imec0.ap.meta",
        "s1_g0_t0.imec1.ap.meta",
        "s2_g0_t0.imec0.ap.meta",
    ]


def test_a_glob_that_matches_no_recording_is_rejected(lab: FakeStack, invoke: Invoke) -> None:
    glob = f"s3://{LAB}/rig1/*/nothing_*/"
    body = json.dumps({"input_uri": glob}).encode()
    [outcome] = invoke(upload_event("requests/none.json", body))["results"]
    assert outcome["status"] == "rejected"
    [error] = lab.get_json("errors/none.json")["errors"]
    assert error["field"] == "input_uri" and error["message"].startswith(f"{glob} matched no")
    assert lab.jobs() == []


def test_matching_is_segment_by_segment_and_sizes_count_the_ap_band() -> None:
    objects = [(key, len(body)) for key, body in SESSIONS.items()]
    assert match_folders("rig1/*/*_g0/", objects) == [
        ("rig1/s1/s1_g0/", 2 * BIN_BYTES),
        ("rig1/s2/s2_g0/", BIN_BYTES),
        ("rig1/s3/s3_g0/", 1002),
    ]
    assert match_folders("rig*/", objects) == [
        ("rig1/", sum(s for k, s in objects if k.startswith("rig1/") and ".ap.bin" in k)),
        ("rig2/", BIN_BYTES),
    ]
    assert match_files("rig*/*/*/*.ap.bin", objects) == [
        ("rig1/s1/s1_g0/s1_g0_t0.imec0.ap.bin", BIN_BYTES),
        ("rig1/s1/s1_g0/s1_g0_t0.imec1.ap.bin", BIN_BYTES),
        ("rig1/s2/s2_g0/s2_g0_t0.imec0.ap.bin", BIN_BYTES),
        ("rig2/s5/s5_g0/s5_g0_t0.imec0.ap.bin", BIN_BYTES),
    ]
    assert match_files("rig1/*/*.ap.meta", objects) == []  # * never crosses a /


def test_an_hour_of_two_probes_in_spikeglx_costs_what_the_same_traces_in_nwb_cost(
    lambda_env: FakeStack,
) -> None:
    """Sized from each probe's .meta (its AP channels, not the sync channel) before anything
    is downloaded: the same bytes, so the same stages, hours and dollars as the NWB file."""
    from spikebatch.cli.common import recording_sizes
    from spikebatch.control.request import parse_request
    from spikebatch.estimates import RecordingSize, estimate_runs

    frames = 3600 * 30_000
    for probe in ("imec0", "imec1"):
        body = (
            f"imSampRate=30000\nnSavedChans=385\nsnsApLfSy=384,0,1\n"
            f"fileSizeBytes={385 * 2 * frames}\n"
        ).encode()
        key = f"uploads/rig1/hour_g0/hour_g0_imec{probe[-1]}/hour_g0_t0.{probe}.ap.meta"
        client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    folder = parse_request(
        {"input_uri": f"s3://{BUCKET}/uploads/rig1/hour_g0/", "sorter": "kilosort4"}
    )
    nwb = parse_request({"input_uri": f"s3://{BUCKET}/hour.nwb", "sorter": "kilosort4"})
    [sglx_size] = recording_sizes(folder, [], None)
    assert sglx_size.size_bytes == 2 * 384 * 2 * frames
    [spikeglx] = estimate_runs(folder, [sglx_size], 384)
    [same] = estimate_runs(nwb, [RecordingSize("hour.nwb", 2 * 384 * 2 * frames)], 384)
    assert spikeglx.estimate is not None and same.estimate is not None
    assert spikeglx.duration_s == same.duration_s == 7200.0
    assert spikeglx.estimate.as_dict() == same.estimate.as_dict()
    assert spikeglx.scratch == same.scratch

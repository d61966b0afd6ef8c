"""``run-local --image`` and ``image`` without an engine: how a Batch job's environment maps
onto the local container, and what a user sees when no Docker engine answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spikebatch.cli import app
from spikebatch.cli.container_run import INPUT_MOUNT, OUTPUT_MOUNT, prepare
from spikebatch.cli.engine import NO_ENGINE_HINT, EngineError, connect
from spikebatch.worker_image import BATCH_RUNTIME

AWS_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")


def test_no_engine_is_one_line_that_says_how_to_get_one(no_engine: None) -> None:
    with pytest.raises(EngineError) as raised:
        connect()
    assert str(raised.value).startswith("no Docker engine answers (")
    assert str(raised.value).endswith(NO_ENGINE_HINT)
    assert "apt-get install docker.io && dockerd &" in NO_ENGINE_HINT


@pytest.mark.parametrize(
    "args",
    [
        ["image", "build", "--sorter", "kilosort4"],
        [
            "run-local",
            "--image",
            "spikebatch-worker:kilosort4",
            "--input-uri",
            "s3://lab-bucket/k.nwb",
        ],
    ],
)
def test_image_commands_without_an_engine_exit_1_with_one_line(
    no_engine: None, args: list[str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, [*args, *(["--scratch", str(tmp_path)] if "run-local" in args else [])]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Docker engine answers")


def test_unknown_image_sorter_is_refused_before_any_engine_call(no_engine: None) -> None:
    result = CliRunner().invoke(app, ["image", "build", "--sorter", "mountainsort5"])
    assert result.exit_code == 1
    assert "no worker image for it; choose from kilosort3, kilosort4" in result.output


def _job(input_uri: str, output_uri: str) -> dict[str, str]:
    return {"INPUT_URI": input_uri, "OUTPUT_URI": output_uri, "SORTER": "kilosort4", "RUN_ID": "r1"}


def test_local_files_are_mounted_and_no_aws_credentials_go_in(tmp_path: Path) -> None:
    nwb = tmp_path / "data" / "session 1.nwb"
    nwb.parent.mkdir()
    nwb.write_bytes(b"x")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    host = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "DANDI_API_KEY": "k"}

    job = prepare(_job(nwb.as_uri(), out.as_uri()), scratch=scratch, host_env=host, gpus=False)

    env = job.environment
    assert job.volumes[str(nwb.parent)] == {"bind": INPUT_MOUNT, "mode": "ro"}
    assert env["INPUT_URI"] == f"file://{INPUT_MOUNT}/session 1.nwb"
    assert job.volumes[str(out)] == {"bind": OUTPUT_MOUNT, "mode": "rw"}
    assert env["OUTPUT_URI"] == f"file://{OUTPUT_MOUNT}"
    assert job.volumes[str(scratch)] == {"bind": "/scratch", "mode": "rw"}
    assert env["SCRATCH_DIR"] == BATCH_RUNTIME.scratch_dir
    assert not AWS_VARS & set(env)  # nothing in S3: no credentials in the container
    assert env["DANDI_API_KEY"] == "k"
    assert job.network_mode is None and job.gpus is False


def test_s3_output_brings_credentials_and_loopback_endpoints_the_host_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    job = prepare(
        _job("https://example.org/a.nwb", "s3://bucket/results"),
        scratch=tmp_path / "scratch",
        gpus=True,
    )
    env = job.environment
    assert env["AWS_ACCESS_KEY_ID"] == "AKIATEST" and env["AWS_SECRET_ACCESS_KEY"] == "secret"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert env["OUTPUT_URI"] == "s3://bucket/results" and job.volumes.keys() == {
        str((tmp_path / "scratch").resolve())
    }
    assert job.network_mode == "host" and job.gpus is True


def test_a_missing_local_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="INPUT_URI: no such file"):
        prepare(_job((tmp_path / "gone.nwb").as_uri(), "s3://b/r"), scratch=tmp_path, gpus=False)

"""``spikebatch image build`` and ``image push`` against the real engine.

Push goes to a local registry on loopback (Debian's docker-registry) that stands in for the
stack's ECR repository: the stack's outputs and ECR's GetAuthorizationToken are answered by
moto, the layers are really pushed, and the tag names the image's content.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch import aws
from spikebatch.cli import app
from spikebatch.control.stack_outputs import REQUIRED_OUTPUTS
from spikebatch.worker_image import pushed_tag

STACK = "SpikeBatchImageTest"
#: A small local image to push (the same code path as the 5 GB worker, in seconds).
SMALL_IMAGE = "ghcr.io/astral-sh/uv:0.5.11"
#: The kilosort4 image's base (a failing build needs a shell, and nothing else).
CUDA_BASE = "nvidia/cuda:12.4.1-base-ubuntu22.04"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A docker-registry on 127.0.0.1 (the engine trusts loopback registries over HTTP)."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("push test skipped: no docker-registry here (apt-get install docker-registry)")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "blobs")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    proc = subprocess.Popen([exe, "serve", str(config)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _deploy_fake_stack(repository_uri: str) -> None:
    """A CloudFormation stack in moto with the outputs the CLI reads."""
    outputs = {key: {"Value": f"test-{key}"} for key in REQUIRED_OUTPUTS}
    outputs["WorkerRepositoryUri"] = {"Value": repository_uri}
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": outputs,
    }
    aws.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))


def test_image_build_uses_the_engine_and_reports_the_image(
    engine: Any, kilosort4_image: str
) -> None:
    result = CliRunner().invoke(app, ["image", "build", "--sorter", "kilosort4"])
    assert result.exit_code == 0, result.output
    image = engine.images.get(kilosort4_image)
    assert f"built {kilosort4_image} ({image.id[:19]}" in result.output


def _need_local(engine: Any, tag: str) -> None:
    """Skip, saying why, where ``tag`` is neither built nor pulled here (no registry reachable)."""
    if not any(tag in (i.tags or []) for i in engine.images.list()):
        pytest.skip(f"{tag} is not here (make image builds or pulls it)")


def test_a_failing_build_ends_in_one_line_naming_the_step(engine: Any, tmp_path: Path) -> None:
    _need_local(engine, CUDA_BASE)
    context = tmp_path / "repo"
    (context / "containers").mkdir(parents=True)
    (context / "containers" / "Dockerfile.kilosort4").write_text(f"FROM {CUDA_BASE}\nRUN exit 3\n")
    result = CliRunner().invoke(
        app, ["image", "build", "--sorter", "kilosort4", "--context", str(context), "--tag", "x:y"]
    )
    assert result.exit_code == 1
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: image build failed at step 2/2: RUN exit 3:")
    assert "returned a non-zero code: 3" in line and "(log: " in line


def test_image_push_tags_by_content_and_pushes_to_the_stacks_repository(
    engine: Any, registry: str, aws_endpoint: str
) -> None:
    _need_local(engine, SMALL_IMAGE)
    repository = f"{registry}/spikebatch-worker"
    _deploy_fake_stack(repository)
    args = ["image", "push", "--sorter", "kilosort4", "--tag", SMALL_IMAGE, "--stack-name", STACK]

    first = CliRunner().invoke(app, args)
    again = CliRunner().invoke(app, args)

    assert first.exit_code == 0, first.output
    tag = pushed_tag("kilosort4", engine.images.get(SMALL_IMAGE).id)
    assert f"pushed {repository}:{tag} (sha256:" in first.output
    assert f"npx cdk deploy -c spikebatch:worker_image_tag={tag}" in first.output
    with urllib.request.urlopen(f"http://{registry}/v2/spikebatch-worker/tags/list") as reply:
        assert json.load(reply)["tags"] == [tag]
    # Same content, same tag: pushing again changes nothing (ECR tags are immutable).
    assert again.exit_code == 0, again.output
    assert f"pushed {repository}:{tag}" in again.output

"""Shared fixtures: a loopback moto server that boto3 reaches through AWS_ENDPOINT_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixed dummy credentials/region so nothing ever reaches real AWS from a test.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("DANDI_NO_ET", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.pop("AWS_PROFILE", None)
# xdist workers get COLUMNS=80 and LINES=24, and rich fixes a console's size from them when it
# is created (at import): the CLI tests set the width for each invocation instead.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
# Under xdist two workers share the cores: a sorter's OpenMP threads (torch's, numba's) then
# spin against the other worker and run several times slower. One thread each is faster.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (random port) for the whole session; yields its URL.

    Tests point boto3 at it with ``monkeypatch.setenv("AWS_ENDPOINT_URL", url)`` so
    production code paths run unchanged.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every boto3 client created in this test at the loopback moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def bucket(aws_endpoint: str) -> str:
    """A fresh bucket on the loopback moto server; returns its name."""
    from spikebatch import aws

    name = f"results-{uuid.uuid4().hex[:12]}"
    aws.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A scratch folder (SCRATCH_DIR); a container mounts it at /scratch."""
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the real sorts (marker ``slow``: minutes of Kilosort4 on the CPU) go first,
    so they start on different workers and the short tests fill in around them; collected in
    order they met on one worker at the end and made ``make test`` 40% longer."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable

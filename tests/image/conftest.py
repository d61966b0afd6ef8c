"""Container tests: the built worker images, run by a real Docker engine.

They need an engine and the images ``make image`` builds; where either is missing every test
here is skipped with the reason. (``test_metadata_firewall.py`` needs no engine but root and
iptables in a network namespace; it is in this tier for that.) ``make test-image`` runs them; ``make test`` leaves them out. Servers the containers talk to (the fake DANDI archive, moto)
listen on 127.0.0.1, so the containers use the host network (``run-local --image`` picks it
for loopback URLs by itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spikebatch.worker_image import IMAGES

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is a container test (``-m docker`` selects them)."""
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def engine() -> Any:
    """The docker SDK client, or a skip that says how to get an engine."""
    from spikebatch.cli.engine import EngineError, connect

    try:
        return connect()
    except EngineError as exc:
        pytest.skip(f"container tests skipped: {exc}; then: make image && make test-image")


def _image(engine: Any, sorter: str) -> str:
    from docker.errors import ImageNotFound

    tag = IMAGES[sorter].local_tag
    try:
        engine.images.get(tag)
    except ImageNotFound:
        pytest.skip(f"container tests skipped: {tag} is not built here (run: make image)")
    return tag


@pytest.fixture(scope="session")
def kilosort4_image(engine: Any) -> str:
    return _image(engine, "kilosort4")


@pytest.fixture(scope="session")
def kilosort3_image(engine: Any) -> str:
    return _image(engine, "kilosort3")

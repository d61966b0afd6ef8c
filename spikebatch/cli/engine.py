"""The local Docker engine, through the docker SDK: one connection, one-line errors.

Only the CLI's image commands import this (the SDK is in the ``cli`` extra; never in the
Lambda assets or the worker image).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

NO_ENGINE_HINT = (
    "install Docker, or run as root: apt-get install docker.io && dockerd &; "
    "or point DOCKER_HOST at an engine"
)


class EngineError(RuntimeError):
    """No engine, or the engine refused: ``str()`` is one line that says what to do."""


def connect() -> Any:
    """A docker SDK client for the engine DOCKER_HOST (or the default socket) names."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # the cli extra is not installed
        raise EngineError(
            f"the docker SDK is missing (pip install 'spikebatch[cli]'): {exc}"
        ) from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineError(f"no Docker engine answers ({reason}): {NO_ENGINE_HINT}") from None
    return client


def api_error(exc: Exception) -> EngineError:
    """A docker SDK/API error as one line."""
    explanation = getattr(exc, "explanation", None) or str(exc)
    text = str(explanation).strip().splitlines()
    return EngineError(text[0] if text else type(exc).__name__)


def host_has_gpu() -> bool:
    """Whether this host has an NVIDIA GPU with a working driver (``nvidia-smi -L`` lists one).

    Containers then ask for it the way ``docker run --gpus all`` does, which needs the
    NVIDIA Container Toolkit; without it the engine says so in one line.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        listed = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def exit_unless_engine(who: str) -> None:
    """Exit with the one-line fix when no engine answers (``make image`` runs this first)."""
    import sys

    try:
        connect()
    except EngineError as exc:
        sys.exit(f"{who}: {exc}")

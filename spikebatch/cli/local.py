"""``spikebatch run-local``: one recording, with exactly the environment a Batch job gets.

In this process by default (needs the ``worker`` extra: SpikeInterface, Kilosort, ...; imported
only here, so the rest of the CLI works without it), or in the worker container with
``--image`` (:mod:`spikebatch.cli.container_run`).
"""

from __future__ import annotations

import os
from pathlib import Path

from spikebatch.contract import DEFAULT_DANDI_API_URL, Env, is_valid_run_id
from spikebatch.control.request import JobRequest
from spikebatch.control.submission import local_environment


def job_environment(
    request: JobRequest, output_uri: str, *, run_id: str | None = None
) -> dict[str, str]:
    """The job's environment; DANDI_API_URL from this shell when set (as for `submit`)."""
    api_url = os.environ.get(Env.DANDI_API_URL.value) or DEFAULT_DANDI_API_URL
    env = local_environment(request, output_uri, dandi_api_url=api_url)
    if run_id:
        if not is_valid_run_id(run_id):
            raise ValueError(
                f"--run-id: use letters, digits, '.', '_' or '-' (max 128), got {run_id!r}"
            )
        env[Env.RUN_ID.value] = run_id
    return env


def output_uri(output: Path, uri: str | None) -> str:
    """``--output-uri`` (s3:// or file://) if given, else the ``--output`` folder."""
    if uri:
        if not uri.startswith(("s3://", "file:///")):
            raise ValueError(
                f"--output-uri: expected s3://bucket/prefix or file:///path, got {uri!r}"
            )
        return uri.rstrip("/")
    return output.resolve().as_uri()


def run_locally(request: JobRequest, output: str, *, run_id: str | None = None) -> int:
    """Run the worker entry point in this process; its exit status."""
    try:
        from spikebatch.worker.__main__ import main as worker_main
    except ImportError as exc:
        raise ValueError(
            f"run-local needs the worker extra (pip install 'spikebatch[worker]'): {exc}"
        ) from None
    env = {**os.environ, **job_environment(request, output, run_id=run_id)}
    return int(worker_main(env) or 0)


def run_in_container(
    request: JobRequest,
    output: str,
    *,
    image: str,
    scratch: Path,
    gpus: bool | None,
    run_id: str | None = None,
) -> int:
    """Run the worker image on this machine's Docker engine; the container's exit status."""
    from spikebatch.cli import container_run

    env = job_environment(request, output, run_id=run_id)
    job = container_run.prepare(env, scratch=scratch, gpus=gpus)
    return container_run.run(image, job)

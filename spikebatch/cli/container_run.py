"""``spikebatch run-local --image``: the worker container, run here the way Batch runs it.

Same env contract as a Batch job (``spikebatch.control.submission.local_environment``), same
container settings as the job definitions (``spikebatch.worker_image.BATCH_RUNTIME``: uid 1000,
an init as PID 1, the job's /dev/shm). Local files are mounted: a ``file://`` input read-only
at /input, a local output folder at /output, the scratch folder at /scratch. AWS credentials
go in only when the job touches S3. The GPU is requested when this host has one. The log
streams to this terminal and the container's exit code is passed through.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from spikebatch.cli.engine import EngineError, api_error, connect, host_has_gpu
from spikebatch.contract import Env
from spikebatch.worker_image import BATCH_RUNTIME, ContainerRuntime

RUN_ID_LABEL = "org.spikebatch.run-id"
INPUT_MOUNT = "/input"
OUTPUT_MOUNT = "/output"
#: Host variables a job may need that the request does not carry.
PASSED_THROUGH = (
    Env.DANDI_API_KEY.value,
    Env.DANDI_API_KEY_SECRET_ARN.value,
    Env.INSTANCE_TYPE.value,
    "SPIKEBATCH_LOG_LEVEL",
)


@dataclass
class ContainerJob:
    """What ``docker run`` gets: the environment, the bind mounts, the network, the GPU."""

    environment: dict[str, str]
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    network_mode: str | None = None
    gpus: bool = False


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url or "").hostname
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _writable_by_worker(folder: Path, runtime: ContainerRuntime) -> None:
    """The container's user (uid 1000) writes here: make it so, or say how."""
    folder.mkdir(parents=True, exist_ok=True)
    uid, gid = (int(x) for x in runtime.user.split(":"))
    info = folder.stat()
    if info.st_uid == uid or info.st_mode & 0o002:
        return
    if os.geteuid() == 0:
        os.chown(folder, uid, gid)
    elif info.st_uid == os.geteuid():
        folder.chmod(info.st_mode | 0o777)
    else:
        raise EngineError(
            f"{folder} is not writable by the container's user (uid {uid}): "
            f"chmod a+rwx {folder}, or pick another folder"
        )


def _aws_environment() -> dict[str, str]:
    """This machine's AWS credentials and region, as plain variables for the container."""
    import boto3

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise EngineError(
            "the job reads or writes S3 but no AWS credentials are configured here "
            "(aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    frozen = credentials.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    if session.region_name:
        env["AWS_DEFAULT_REGION"] = env["AWS_REGION"] = session.region_name
    if os.environ.get("AWS_ENDPOINT_URL"):
        env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    return env


def prepare(
    job_env: Mapping[str, str],
    *,
    scratch: Path,
    host_env: Mapping[str, str] | None = None,
    gpus: bool | None = None,
    runtime: ContainerRuntime = BATCH_RUNTIME,
) -> ContainerJob:
    """Map a worker environment (with host ``file://`` URIs) onto a container's."""
    host_env = os.environ if host_env is None else host_env
    env = {k: str(v) for k, v in job_env.items()}
    env |= {k: host_env[k] for k in PASSED_THROUGH if host_env.get(k) and k not in env}
    job = ContainerJob(environment=env)
    source = env.get(Env.INPUT_URI.value, "")
    if source.startswith("file://"):
        path = Path(unquote(urlsplit(source).path)).resolve()
        if not path.is_file():
            raise EngineError(f"{Env.INPUT_URI}: no such file: {path}")
        job.volumes[str(path.parent)] = {"bind": INPUT_MOUNT, "mode": "ro"}
        env[Env.INPUT_URI.value] = f"file://{INPUT_MOUNT}/{path.name}"
    output = env[Env.OUTPUT_URI.value]
    if output.startswith("file://"):
        folder = Path(unquote(urlsplit(output).path)).resolve()
        _writable_by_worker(folder, runtime)
        job.volumes[str(folder)] = {"bind": OUTPUT_MOUNT, "mode": "rw"}
        env[Env.OUTPUT_URI.value] = f"file://{OUTPUT_MOUNT}"
    scratch = scratch.resolve()
    _writable_by_worker(scratch, runtime)
    job.volumes[str(scratch)] = {"bind": runtime.scratch_dir, "mode": "rw"}
    env[Env.SCRATCH_DIR.value] = runtime.scratch_dir
    touches_s3 = any(
        env.get(k, "").startswith("s3://")
        for k in (Env.INPUT_URI.value, Env.OUTPUT_URI.value, Env.ARRAY_MANIFEST_URI.value)
    ) or bool(env.get(Env.DANDI_API_KEY_SECRET_ARN.value))
    if touches_s3:
        env |= _aws_environment()
    urls = (env.get("AWS_ENDPOINT_URL"), env.get(Env.DANDI_API_URL.value), source)
    if any(_is_loopback(u) for u in urls):
        job.network_mode = "host"  # servers on this machine's loopback (tests, tunnels)
    job.gpus = host_has_gpu() if gpus is None else gpus
    return job


def run(
    image: str,
    job: ContainerJob,
    *,
    runtime: ContainerRuntime = BATCH_RUNTIME,
    stdout: Any = None,
    stderr: Any = None,
) -> int:
    """Run the worker container to the end, streaming its log; its exit code.

    Ctrl-C stops it the way Batch does (SIGTERM, then SIGKILL after the stop timeout), so
    the worker records the stop in run.json and exits 130.
    """
    import docker
    from docker.errors import APIError, ImageNotFound

    stdout = stdout or sys.stdout.buffer
    stderr = stderr or sys.stderr.buffer
    client = connect()
    kwargs: dict[str, Any] = {
        "environment": job.environment,
        "volumes": job.volumes,
        "user": runtime.user,
        "init": runtime.init_process,
        "shm_size": f"{runtime.shared_memory_mib}m",
        "detach": True,
        # `docker ps --filter label=org.spikebatch.run-id=<id>` finds a run's container.
        "labels": {RUN_ID_LABEL: job.environment.get(Env.RUN_ID.value, "")},
    }
    if job.network_mode:
        kwargs["network_mode"] = job.network_mode
    if job.gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        container = client.containers.run(image, **kwargs)
    except ImageNotFound:
        raise EngineError(
            f"no image {image!r} here: build it (spikebatch image build) or pull it"
        ) from None
    except APIError as exc:
        raise api_error(exc) from None
    try:
        try:
            output = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            for out_chunk, err_chunk in output:
                for stream, chunk in ((stdout, out_chunk), (stderr, err_chunk)):
                    if chunk:
                        stream.write(chunk)
                        stream.flush()
        except KeyboardInterrupt:
            container.stop(timeout=runtime.stop_timeout_s)
        return int(container.wait().get("StatusCode", 1))
    finally:
        container.remove(force=True)

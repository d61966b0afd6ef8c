"""``spikebatch image build`` / ``image push``: the worker images, with the docker SDK.

Build streams the engine's steps into a progress bar (the whole log goes to a file, named on
failure); push tags the image by its content and sends it to the deployed stack's
``WorkerRepositoryUri`` with an ECR token from boto3, then prints how jobs pick it up.
"""

from __future__ import annotations

import base64
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

import spikebatch
from spikebatch import aws
from spikebatch.cli.engine import EngineError, api_error, connect
from spikebatch.worker_image import IMAGES, WorkerImage, pushed_tag

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def default_context() -> Path:
    """The repository root (the build context): where ``containers/`` sits beside the package."""
    return Path(spikebatch.__file__).resolve().parent.parent


def worker_image(sorter: str) -> WorkerImage:
    try:
        return IMAGES[sorter]
    except KeyError:
        raise ValueError(
            f"--sorter {sorter!r}: no worker image for it; choose from {', '.join(IMAGES)}"
        ) from None


@dataclass(frozen=True, slots=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    log: Path


def build_image(
    image: WorkerImage,
    *,
    tag: str | None,
    context: Path,
    console: Console,
    no_cache: bool = False,
) -> BuiltImage:
    """Build ``image`` from ``context`` (the repository root) and tag it; raise EngineError."""
    dockerfile = context / image.dockerfile
    if not dockerfile.is_file():
        raise EngineError(
            f"{image.dockerfile} not found under {context}: image build needs a checkout of the "
            "spikebatch repository (pass --context DIR, or install it with pip install -e .)"
        )
    tag = tag or image.local_tag
    client = connect()
    previous = _image_id(client, tag)
    log = Path(tempfile.mkstemp(prefix=f"spikebatch-build-{image.name}-", suffix=".log")[1])
    stream = client.api.build(
        path=str(context),
        dockerfile=image.dockerfile,
        tag=tag,
        buildargs={"IMAGE_LABEL": tag},
        rm=True,
        forcerm=True,
        pull=False,  # local bases (or stand-ins) first; the engine pulls what it lacks
        nocache=no_cache,
        decode=True,
    )
    image_id = _follow_build(stream, log, console, f"building {tag}")
    size = int(client.images.get(image_id).attrs.get("Size") or 0)
    if previous and previous != image_id:
        _drop_replaced(client, previous)
    return BuiltImage(tag=tag, image_id=image_id, size_bytes=size, log=log)


def _image_id(client: Any, tag: str) -> str | None:
    from docker.errors import ImageNotFound

    try:
        return str(client.images.get(tag).id)
    except ImageNotFound:
        return None


def _drop_replaced(client: Any, image_id: str) -> None:
    """Remove the image this build's tag pointed to before, once nothing else names it.

    A rebuild leaves the old image untagged, and with it a 5 GB layer whenever the
    environment changed; left alone they fill the disk build after build."""
    from docker.errors import APIError

    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id, noprune=False)
    except APIError:
        pass  # still used by a container, or already gone: leave it to the engine


def _follow_build(stream: Iterable[dict[str, Any]], log: Path, console: Console, title: str) -> str:
    """Show the engine's build steps as progress; the image id, or EngineError in one line."""
    image_id, step, tail = None, "", []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with (
        log.open("w") as out,
        Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress,
    ):
        task = progress.add_task(title, total=None)
        for chunk in stream:
            text = chunk.get("stream") or chunk.get("status") or ""
            out.write(text if text.endswith("\n") else text + "\n")
            for line in text.splitlines():
                if line.strip():
                    tail = [*tail[-4:], line.strip()]
                if m := _STEP.match(line.strip()):
                    step = f"step {m[1]}/{m[2]}: {m[3][:70]}"
                    progress.update(task, completed=int(m[1]) - 1, total=int(m[2]))
                    progress.update(task, description=f"{title} · {step}")
                    if not console.is_terminal:  # CI logs: no live bar, so a line per step
                        console.print(f"{title} · {step}", highlight=False)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                out.write(f"ERROR: {detail}\n")
                where = f" at {step}" if step else ""
                raise EngineError(f"image build failed{where}: {_one_line(detail)} (log: {log})")
    if image_id is None:
        raise EngineError(f"the engine reported no image id (log: {log})")
    return image_id


def _one_line(text: str | None) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


@dataclass(frozen=True, slots=True)
class PushedImage:
    uri: str
    tag: str
    digest: str | None


def ecr_credentials(registry: str) -> dict[str, str]:
    """``auth_config`` for ``registry`` from ECR's GetAuthorizationToken (valid 12 hours)."""
    data = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return {"username": username, "password": password, "serveraddress": registry}


def push_image(local: str, repository_uri: str, *, sorter: str, console: Console) -> PushedImage:
    """Tag ``local`` by its content in ``repository_uri`` and push it; raise EngineError."""
    from docker.errors import APIError, ImageNotFound

    client = connect()
    try:
        image = client.images.get(local)
    except ImageNotFound:
        raise EngineError(
            f"no local image {local!r}: build it first (spikebatch image build)"
        ) from None
    except APIError as exc:
        raise api_error(exc) from None
    tag = pushed_tag(sorter, image.id)
    if not image.tag(repository_uri, tag=tag):
        raise EngineError(f"the engine could not tag {local} as {repository_uri}:{tag}")
    registry = repository_uri.split("/", 1)[0]
    stream = client.api.push(
        repository_uri,
        tag=tag,
        stream=True,
        decode=True,
        auth_config=ecr_credentials(registry),
    )
    digest = _follow_push(stream, console, f"pushing {repository_uri}:{tag}")
    return PushedImage(uri=f"{repository_uri}:{tag}", tag=tag, digest=digest)


def _follow_push(stream: Iterator[dict[str, Any]], console: Console, title: str) -> str | None:
    """Layer-by-layer push progress, summed; the pushed manifest digest."""
    layers: dict[str, tuple[int, int]] = {}
    digest = None
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, TransferSpeedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(title, total=None)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                raise EngineError(f"push failed: {_one_line(detail)}")
            detail = chunk.get("progressDetail") or {}
            if chunk.get("id") and detail.get("total"):
                layers[chunk["id"]] = (int(detail.get("current") or 0), int(detail["total"]))
            elif chunk.get("id") and chunk.get("status") in ("Pushed", "Layer already exists"):
                done = layers.get(chunk["id"], (0, 0))[1]
                layers[chunk["id"]] = (done, done)
            if layers:
                progress.update(
                    task,
                    completed=sum(c for c, _ in layers.values()),
                    total=sum(t for _, t in layers.values()),
                )
            if "aux" in chunk and "Digest" in chunk["aux"]:
                digest = chunk["aux"]["Digest"]
    return digest

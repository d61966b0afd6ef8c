"""``spikebatch image build|push``: thin commands over :mod:`spikebatch.cli.image`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spikebatch.cli.common import RegionOpt, StackOpt, deployed_stack, domain_errors, out
from spikebatch.cli.image import build_image, default_context, push_image, worker_image
from spikebatch.control.stack_outputs import DEFAULT_STACK_NAME
from spikebatch.worker_image import IMAGES

image_app = typer.Typer(
    help="Build the worker images with your Docker engine, and push them to the stack's ECR.",
    no_args_is_help=True,
)

SorterImageOpt = Annotated[
    str,
    typer.Option(
        "--sorter",
        help=f"Which worker image: {'; '.join(f'{n}: {i.description}' for n, i in IMAGES.items())}.",
    ),
]
TagOpt = Annotated[
    str | None,
    typer.Option("--tag", help="Local tag (default: spikebatch-worker:SORTER)."),
]


def _push(local: str, sorter: str, stack_name: str, region: str | None) -> None:
    stack = deployed_stack(stack_name, region)
    repository = stack.outputs.get("WorkerRepositoryUri")
    if not repository:
        raise ValueError(f"stack {stack_name!r} has no WorkerRepositoryUri output; redeploy it")
    pushed = push_image(local, repository, sorter=sorter, console=out)
    out.print(f"pushed {pushed.uri} ({pushed.digest or 'digest not reported'})", markup=False)
    out.print(
        "Jobs run it once the stack points at it (tags are immutable and name the content):\n"
        f"  npx cdk deploy -c spikebatch:worker_image_tag={pushed.tag}\n"
        f'  (or set "worker_image_tag": "{pushed.tag}" in cdk.json, then npx cdk deploy)',
        markup=False,
    )


@image_app.command("build")
def build(
    sorter: SorterImageOpt = "kilosort3",
    tag: TagOpt = None,
    push: Annotated[
        bool,
        typer.Option(
            "--push", help="Then push it to the deployed stack's WorkerRepositoryUri (ECR)."
        ),
    ] = False,
    context: Annotated[
        Path | None,
        typer.Option(
            "--context",
            file_okay=False,
            help="Repository checkout to build from (default: the one this CLI runs from).",
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Rebuild every layer (e.g. for a new base image).")
    ] = False,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Build a worker image (the same Dockerfile cdk deploy builds, or the Kilosort4 one)."""
    with domain_errors():
        image = worker_image(sorter)
        built = build_image(
            image, tag=tag, context=context or default_context(), console=out, no_cache=no_cache
        )
        out.print(
            f"built {built.tag} ({built.image_id[:19]}, {built.size_bytes / 1e9:.2f} GB); "
            f"build log: {built.log}",
            markup=False,
        )
        if push:
            _push(built.tag, image.name, stack_name, region)


@image_app.command("push")
def push(
    sorter: SorterImageOpt = "kilosort3",
    tag: TagOpt = None,
    stack_name: StackOpt = DEFAULT_STACK_NAME,
    region: RegionOpt = None,
) -> None:
    """Push a built worker image to the deployed stack's WorkerRepositoryUri (ECR)."""
    with domain_errors():
        image = worker_image(sorter)
        _push(tag or image.local_tag, image.name, stack_name, region)

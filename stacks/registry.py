"""The worker image the job definitions run, and the repository for images pushed with
``spikebatch image build --push``.

By default ``cdk deploy`` builds ``containers/Dockerfile`` as a CDK Docker image asset. With
the ``worker_image_tag`` setting the job definitions run that tag of this stack's repository
instead (pushed beforehand by ``spikebatch image build --push``), and nothing is built at
deploy time. Tags in the repository are immutable and name the image's content, so a tag
always means the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from spikebatch.worker_image import DEPLOYED_IMAGE

REPO_ROOT = Path(__file__).resolve().parent.parent


class Registry(Construct):
    """``self.image`` (what the job definitions run), ``self.image_uri`` (its URI, for
    run.json and the outputs), ``self.repository`` (pushed images) and
    ``self.pull_repositories`` (every repository a job's image may come from)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        removal_policy: RemovalPolicy,
        worker_image_tag: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.repository = ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.AES_256,
            removal_policy=removal_policy,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description="drop untagged layers a week after a push replaced them",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(7),
                    rule_priority=1,
                ),
                ecr.LifecycleRule(
                    description="keep the 20 most recent tagged images",
                    tag_status=ecr.TagStatus.ANY,
                    max_image_count=20,
                    rule_priority=2,
                ),
            ],
        )
        if worker_image_tag:
            self.pull_repositories: tuple[ecr.IRepository, ...] = (self.repository,)
            self.image = ecs.ContainerImage.from_ecr_repository(self.repository, worker_image_tag)
            self.image_uri = self.repository.repository_uri_for_tag(worker_image_tag)
            return
        # The repo root is the build context so the image can install the spikebatch
        # package; the root .dockerignore is an allowlist that keeps .venv etc. out.
        asset = ecr_assets.DockerImageAsset(
            self,
            "WorkerImage",
            directory=str(REPO_ROOT),
            file=DEPLOYED_IMAGE.dockerfile,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.pull_repositories = (self.repository, asset.repository)
        self.image = ecs.ContainerImage.from_docker_image_asset(asset)
        self.image_uri = asset.image_uri

"""The worker image: built from containers/ as a CDK asset, plus a repository for
images pushed outside CDK (e.g. the Kilosort4 variant)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from constructs import Construct

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_DOCKERFILE = "containers/Dockerfile"


class Registry(Construct):
    """``self.image`` (the job definitions' image) and ``self.repository``."""

    def __init__(self, scope: Construct, id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, id)
        # The repo root is the build context so the image can install the spikebatch
        # package; the root .dockerignore is an allowlist that keeps .venv etc. out.
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "WorkerImage",
            directory=str(REPO_ROOT),
            file=WORKER_DOCKERFILE,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.image = ecs.ContainerImage.from_docker_image_asset(self.asset)
        self.repository = ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.MUTABLE,
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

"""The data bucket (requests, uploads, manifests, results, run records) and its access logs.

The data bucket is versioned: a mistaken delete, or a rerun that replaced results, can be
undone for ``noncurrent_version_expiry_days`` (the replaced versions then expire). Each
upload's version id also names it in the submit Lambda's claims, so uploading the same
file again is a new upload.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from spikebatch.contract import SCRATCH_PREFIX
from stacks.nag import acknowledge_object_prefixes


class Storage(Construct):
    """One encrypted, SSL-only, private data bucket plus a bucket for its access logs."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        removal_policy: RemovalPolicy,
        noncurrent_version_expiry_days: int,
        scratch_expiry_days: int = 7,
        access_log_expiry_days: int = 90,
    ) -> None:
        super().__init__(scope, id)
        common = dict(
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal_policy,
        )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            **common,
            # Not versioned: S3's logging service only ever adds new keys and nothing else
            # may write here, so versions would only keep expired logs (and their cost).
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs", expiration=Duration.days(access_log_expiry_days)
                ),
            ],
        )
        self.bucket = s3.Bucket(
            self,
            "Data",
            **common,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="data-bucket/",
            event_bridge_enabled=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(2),
                ),
                s3.LifecycleRule(
                    id="expire-scratch",
                    prefix=SCRATCH_PREFIX,
                    expiration=Duration.days(scratch_expiry_days),
                ),
                s3.LifecycleRule(
                    id="expire-replaced-versions",
                    noncurrent_version_expiration=Duration.days(noncurrent_version_expiry_days),
                    expired_object_delete_marker=True,
                ),
            ],
        )


def allow_object_prefixes(
    role: iam.IRole,
    *,
    sid: str,
    actions: Sequence[str],
    bucket: s3.IBucket,
    prefixes: Sequence[str],
) -> None:
    """Let ``role`` do ``actions`` on objects under ``prefixes`` only, and tell cdk-nag
    why the ``<prefix>*`` wildcard is the least privilege S3 offers."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid=sid,
            actions=list(actions),
            resources=[bucket.arn_for_objects(f"{p}*") for p in prefixes],
        )
    )
    acknowledge_object_prefixes(role, bucket, prefixes, " and ".join(actions))


def allow_list_prefixes(
    role: iam.IRole, *, sid: str, bucket: s3.IBucket, prefixes: Sequence[str]
) -> None:
    """Let ``role`` list keys under ``prefixes`` only. Without ListBucket S3 answers 403
    instead of 404 for a missing key, which readers of run records must tell apart."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid=sid,
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
        )
    )

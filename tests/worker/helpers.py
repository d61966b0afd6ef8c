"""Helpers shared by the worker tests (kept out of conftest so they import normally)."""

from __future__ import annotations

import json
from typing import Any

DANDISET = "000999"
ASSET = "sub-sim01/sub-sim01_ses-gt_ecephys.nwb"


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    from spikebatch import aws

    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def s3_json(bucket: str, key: str) -> dict:
    from spikebatch import aws

    return json.loads(aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def dandi_env(archive: Any, bucket: str, **extra: str) -> dict[str, str]:
    """A valid worker environment for the archive's asset, results to the bucket."""
    return {
        "DANDISET_ID": DANDISET,
        "DANDI_ASSET_PATH": ASSET,
        "DANDI_API_URL": archive.api_url,
        "OUTPUT_URI": f"s3://{bucket}/results",
        **extra,
    }

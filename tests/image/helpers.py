"""Helpers for the container tests: run `spikebatch run-local --image` as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spikebatch import aws

CLI = [sys.executable, "-m", "spikebatch.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment (moto endpoint, test credentials) plus ``extra``."""
    return {**os.environ, "COLUMNS": "200", **extra}


def run_local(
    args: list[str], env: dict[str, str], timeout: float = 1500
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "run-local", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_run_local(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "run-local", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def s3_json(bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except aws.client("s3").exceptions.NoSuchKey:
        return None
    return json.loads(body)


def s3_keys(bucket: str, prefix: str) -> list[str]:
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def download_prefix(bucket: str, prefix: str, dest: Path) -> Path:
    for key in s3_keys(bucket, prefix):
        target = dest / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        aws.client("s3").download_file(bucket, key, str(target))
    return dest


def wait_for_stage(
    bucket: str, key: str, stage: str, proc: subprocess.Popen, timeout: float
) -> dict[str, Any]:
    """Poll run.json until the worker reports ``stage`` in progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"run-local exited early ({proc.returncode}): {proc.stderr.read()}"
            )
        record = s3_json(bucket, key)
        if record and record.get("stage") == stage:
            return record
        time.sleep(0.5)
    raise AssertionError(f"the worker never reached {stage}")

"""run.json: the manifest every run leaves behind, succeeded or not."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from spikebatch.contract import IMAGE_VAR
from spikebatch.worker.settings import WorkerSettings

SCHEMA = "spikebatch.run/1"
_PACKAGES = (
    "spikebatch",
    "spikeinterface",
    "kilosort",
    "torch",
    "numpy",
    "dandi",
    "neuroconv",
    "pynwb",
    "nwbinspector",
    "probeinterface",
)
_BATCH_VARS = {
    "job_id": "AWS_BATCH_JOB_ID",
    "attempt": "AWS_BATCH_JOB_ATTEMPT",
    "array_index": "AWS_BATCH_JOB_ARRAY_INDEX",
    "queue": "AWS_BATCH_JQ_NAME",
    "compute_environment": "AWS_BATCH_CE_NAME",
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def new_record(settings: WorkerSettings, run_id: str, environ: dict[str, str]) -> dict[str, Any]:
    """The manifest as it is first written (status running)."""
    started = now()
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "status": "running",
        "stage": "config",
        "started_at": started,
        "updated_at": started,
        "finished_at": None,
        "input": {"source": settings.source},
        "sorter": {"name": settings.sorter, "version": None, "params": settings.full_sorter_params},
        "preprocessing": {"steps": settings.preprocessing, "applied": None},
        "max_duration_s": settings.max_duration_s,
        "settings": settings.public_dict(),
        "versions": software_versions(),
        "image": environ.get(IMAGE_VAR, "local (not a container)"),
        "host": platform.node(),
        "batch": {k: environ.get(v) for k, v in _BATCH_VARS.items() if environ.get(v)},
        "instance": None,
        "timings_s": {},
        "units": None,
        "labels": None,
        "phy": None,
        "publish": None,
        "ground_truth": None,
        "outputs": [],
        "nwbinspector": None,
        "cost": None,
        "error": None,
        "pid": os.getpid(),
    }

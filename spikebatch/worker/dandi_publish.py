"""Publication to DANDI: the session's units NWB as an asset of a dandiset the user owns.

After a successful sort the worker (``PUBLISH_DANDISET_ID``) uploads ``units.nwb`` (units,
electrodes and the source session's metadata; never raw traces) with dandi's own Python API:

1. the asset path follows dandi's organize rules (``dandi.organize``) from the file's own
   metadata: ``sub-<subject>/sub-<subject>_ses-<session>_desc-<sorter>_ecephys.nwb``;
2. the file is validated as ``dandi upload`` validates it (pynwb, nwbinspector with
   DANDI's config, the path layout) before it is uploaded; an error stops the publication;
3. idempotency is decided from the run, not the bytes (NWB files differ at every write):
   the asset metadata carries a ``wasGeneratedBy`` activity whose identifier names the run
   and a fingerprint of its input and settings. A rerun of the same run finds its own
   asset and uploads nothing; another spikebatch run of the same session and sorter
   replaces it (DANDI keeps the draft's history in published versions); a file at that
   path that spikebatch did not write is never replaced;
4. the upload (``LocalFileAsset.upload``: initialize, parts with retries, complete,
   validate, asset create) goes through ``DandiAPIClient`` with the key given explicitly.

A failed publication does not fail the sort: :func:`publish_or_failure` returns
``{"status": "failed", "reason": ...}`` for run.json instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spikebatch.worker.errors import WorkerError, one_line

log = logging.getLogger(__name__)

#: Identifier prefix of the provenance activity spikebatch writes into asset metadata.
ACTIVITY_PREFIX = "spikebatch-run:"
ACTIVITY_NAME = "spikebatch spike sorting"


class PublishError(WorkerError):
    """Publication failed; the message is one line for run.json's ``publish.reason``."""


@dataclass(frozen=True, slots=True)
class Publication:
    """What was published (run.json's ``publish``)."""

    status: str  # published | replaced | unchanged
    dandiset_id: str
    version: str
    path: str
    asset_id: str
    digest: dict[str, str]
    url: str
    run_key: str
    replaced_asset_id: str | None = None
    validation_warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        status: str,
        asset: Any,
        metadata: Mapping[str, Any],
        dandiset_id: str,
        key: str,
        **extra: Any,
    ) -> Publication:
        """The publication of ``asset`` (a draft ``RemoteAsset``) with its ``metadata``."""
        return cls(
            status=status,
            dandiset_id=dandiset_id,
            version="draft",
            path=asset.path,
            asset_id=asset.identifier,
            digest=dict(metadata.get("digest") or {}),
            url=asset.api_url,
            run_key=key,
            **extra,
        )

    def record(self) -> dict[str, Any]:
        return asdict(self)


def run_key(record: Mapping[str, Any]) -> str:
    """``<run-id>:<fingerprint>``: the same run (id, input, sorter, parameters, settings that
    change the units) always gives the same key, whatever bytes its NWB file has."""
    rec_input = record.get("input") or {}
    settings = record.get("settings") or {}
    identity = {
        "run_id": record.get("run_id"),
        "source": rec_input.get("source"),
        "input_digest": (rec_input.get("digest") or {}).get("value"),
        "sorter": (record.get("sorter") or {}).get("name"),
        "sorter_params": (record.get("sorter") or {}).get("params"),
        "preprocessing": (record.get("preprocessing") or {}).get("steps"),
        "max_duration_s": record.get("max_duration_s"),
        "electrical_series_path": settings.get("ELECTRICAL_SERIES_PATH"),
        "quality_thresholds": settings.get("QUALITY_THRESHOLDS"),
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return f"{record.get('run_id')}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def description_entity(sorter: str) -> str:
    """The ``desc-`` value: the sorter name in BIDS-safe letters and digits."""
    cleaned = "".join(ch for ch in sorter.lower() if ch.isalnum())
    return cleaned or "spikesorting"


def asset_path(nwb: Path, *, sorter: str) -> str:
    """The asset path dandi's organize rules give this file, with session and sorter.

    ``organize`` adds ``ses-`` only to tell several files apart; one file is organized
    alone here, so ``session_id`` is required to keep two sessions of a subject apart.
    """
    from dandi.metadata.nwb import get_metadata
    from dandi.organize import create_unique_filenames_from_metadata

    metadata = dict(get_metadata(nwb))
    if not metadata.get("subject_id"):
        raise PublishError(
            "units NWB has no subject_id (the source session's Subject): DANDI's layout needs one"
        )
    metadata.update(path=str(nwb), description=description_entity(sorter))
    organized = create_unique_filenames_from_metadata(
        [metadata], required_fields=["session_id", "description"]
    )
    return str(organized[0]["dandi_path"])


def _has_raw_traces(nwb: Path) -> bool:
    import h5py

    found = False

    def visit(_: str, obj: Any) -> None:
        nonlocal found
        kind = obj.attrs.get("neurodata_type")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        found = found or kind == "ElectricalSeries"

    with h5py.File(nwb, "r") as f:
        f.visititems(visit)
    return found


def _stage(nwb: Path, staging: Path, path: str) -> Path:
    """Place the file at its asset path under a local "dandiset" folder (layout validation)."""
    staged = staging / path
    if staging.exists():
        shutil.rmtree(staging)
    staged.parent.mkdir(parents=True)
    try:
        os.link(nwb, staged)
    except OSError:
        shutil.copy2(nwb, staged)
    return staged


def _validate(local: Any) -> list[str]:
    """dandi's validation; raise on any ERROR, return the warnings' messages."""
    from dandi.validate._types import Severity

    results = local.get_validation_errors()
    errors = [r for r in results if r.severity is not None and r.severity >= Severity.ERROR]
    if errors:
        first = errors[0]
        raise PublishError(
            f"units NWB fails DANDI validation: {len(errors)} error(s), first: "
            f"{first.id}: {first.message}"
        )
    return [f"{r.id}: {r.message}" for r in results if r.severity == Severity.WARNING]


def _marker(metadata: Mapping[str, Any]) -> str | None:
    """The run key spikebatch recorded in an asset's metadata, if any."""
    for activity in metadata.get("wasGeneratedBy") or []:
        identifier = str(activity.get("identifier") or "")
        if identifier.startswith(ACTIVITY_PREFIX):
            return identifier.removeprefix(ACTIVITY_PREFIX)
    return None


def _activity(key: str, record: Mapping[str, Any]) -> dict[str, Any]:
    from spikebatch import __version__

    sorter = record.get("sorter") or {}
    rec_input = record.get("input") or {}
    software = [{"schemaKey": "Software", "name": "spikebatch", "version": __version__}]
    if sorter.get("name"):
        software.append(
            {
                "schemaKey": "Software",
                "name": str(sorter["name"]),
                "version": str(sorter.get("version") or "unknown"),
            }
        )
    activity = {
        "schemaKey": "Activity",
        "identifier": ACTIVITY_PREFIX + key,
        "name": ACTIVITY_NAME,
        "description": (
            f"Spike sorting of {rec_input.get('source')} with {sorter.get('name')} by "
            f"spikebatch run {record.get('run_id')} (input digest "
            f"{(rec_input.get('digest') or {}).get('value')})."
        ),
        "wasAssociatedWith": software,
    }
    for name, value in (
        ("startDate", record.get("started_at")),
        ("endDate", record.get("finished_at")),
    ):
        if value:
            activity[name] = value
    return activity


def _http_error(exc: Any, dandiset_id: str, api_url: str) -> PublishError:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401:
        return PublishError(f"DANDI rejected the API key (HTTP 401) at {api_url}")
    if status == 403:
        return PublishError(
            f"the API key's user may not write to dandiset {dandiset_id} (HTTP 403): "
            "publish to a dandiset you own"
        )
    if status == 404:
        return PublishError(f"no dandiset {dandiset_id} at {api_url} (HTTP 404)")
    text = (getattr(response, "text", "") or "").strip().replace("\n", " ")[:200]
    return PublishError(f"DANDI API error (HTTP {status}): {text or one_line(exc)}")


def publish_units(
    nwb: Path,
    *,
    dandiset_id: str,
    api_url: str,
    token: str | Callable[[], str | None] | None,
    record: Mapping[str, Any],
    staging: Path,
    jobs: int = 4,
) -> Publication:
    """Upload ``nwb`` to the draft of ``dandiset_id`` (or find this run's upload there).

    ``token``: the key, or a function that reads it (e.g. from Secrets Manager), so that
    a key that cannot be read is a failed publication, not a failed run. ``record`` is the
    run's run.json (for the run key and the provenance); ``staging`` a scratch folder for
    the layout check. Raises :class:`PublishError` with one line.
    """
    import requests
    from dandi.dandiapi import DandiAPIClient
    from dandi.exceptions import NotFoundError
    from dandi.files import dandi_file

    if callable(token):
        token = token()
    if not token:
        raise PublishError(
            "publishing to DANDI needs an API key: set DANDI_API_KEY or DANDI_API_KEY_SECRET_ARN"
        )
    if _has_raw_traces(nwb):
        raise PublishError(f"{nwb.name} holds an ElectricalSeries: only units are published")
    sorter = str((record.get("sorter") or {}).get("name") or "spikesorting")
    path = asset_path(nwb, sorter=sorter)
    local = dandi_file(_stage(nwb, staging, path), dandiset_path=staging)
    key = run_key(record)
    try:
        with DandiAPIClient(api_url=api_url, token=token) as client:
            dandiset = client.get_dandiset(dandiset_id, "draft", lazy=False)
            try:
                existing = dandiset.get_asset_by_path(path)
            except NotFoundError:
                existing = None
            replacing = None
            if existing is not None:
                metadata = existing.get_raw_metadata()
                marker = _marker(metadata)
                if marker == key:
                    log.info(
                        "publish: %s already holds this run (%s): nothing to upload", path, key
                    )
                    return Publication.of("unchanged", existing, metadata, dandiset_id, key)
                if marker is None:
                    raise PublishError(
                        f"dandiset {dandiset_id} already has {path}, not written by spikebatch: "
                        "not replacing it"
                    )
                log.info("publish: replacing %s (from run %s)", path, marker)
                replacing = existing
            # Validated only when it is to be uploaded (a rerun of this run uploads nothing).
            warnings = _validate(local)
            metadata = local.get_metadata(digest=local.get_digest()).model_dump(
                mode="json", exclude_none=True
            )
            metadata["wasGeneratedBy"] = [
                *(metadata.get("wasGeneratedBy") or []),
                _activity(key, record),
            ]
            log.info("publish: uploading %s to dandiset %s (%s)", path, dandiset_id, api_url)
            remote = local.upload(dandiset, metadata, jobs=jobs, replacing=replacing)
            published = remote.get_raw_metadata()
    except NotFoundError:
        raise PublishError(f"no dandiset {dandiset_id} at {api_url}") from None
    except requests.HTTPError as exc:
        raise _http_error(exc, dandiset_id, api_url) from None
    except requests.ConnectionError as exc:
        raise PublishError(f"cannot reach DANDI at {api_url}: {one_line(exc)}") from None
    return Publication.of(
        "replaced" if replacing is not None else "published",
        remote,
        published,
        dandiset_id,
        key,
        replaced_asset_id=replacing.identifier if replacing is not None else None,
        validation_warnings=warnings,
    )


def publish_or_failure(nwb: Path, *, dandiset_id: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`publish_units` for run.json: what was published, or ``status: failed`` and the
    reason. Never raises for a publication problem: the sorting stands on its own."""
    try:
        return publish_units(nwb, dandiset_id=dandiset_id, **kwargs).record()
    except PublishError as exc:
        reason = str(exc)
    except Exception as exc:  # dandi internals: still a record, never a failed sort
        log.exception("publish: unexpected error")
        reason = one_line(exc)
    log.warning("publish: failed: %s", reason)
    return {"status": "failed", "dandiset_id": dandiset_id, "reason": reason}

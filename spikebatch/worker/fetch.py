"""Fetch stage: resolve the input (a DANDI asset or INPUT_URI) and download it, verified.

DANDI assets are resolved with the real ``dandi`` client (custom ``api_url``, explicit
token) to a blob URL, a size and the archive's digests; :func:`spikebatch.transfer.download`
then fetches with parallel ranged GETs, resumes, and checks the sha256/etag (a mismatch is
retried, then raised, so corrupt bytes are never sorted).
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import requests

from spikebatch import transfer
from spikebatch.contract import UNSET_SECRET_VALUE
from spikebatch.worker.errors import InputError
from spikebatch.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

#: Digest names in DANDI asset metadata that the transfer layer verifies.
DANDI_DIGESTS = ("dandi:sha2-256", "dandi:dandi-etag")


@dataclass(frozen=True, slots=True)
class ResolvedInput:
    """What to download, and how to check it."""

    source: str
    url: str
    filename: str
    expected_size: int | None = None
    digests: dict[str, str] = field(default_factory=dict)
    dandi_asset_id: str | None = None


def dandi_api_key(settings: WorkerSettings) -> str | None:
    """DANDI_API_KEY, else the key held in the DANDI_API_KEY_SECRET_ARN secret."""
    if settings.dandi_api_key is not None:
        return settings.dandi_api_key.get_secret_value()
    if settings.dandi_api_key_secret_arn is None:
        return None
    from spikebatch import aws

    secret = aws.client("secretsmanager").get_secret_value(
        SecretId=settings.dandi_api_key_secret_arn
    )["SecretString"]
    if secret.strip() in ("", UNSET_SECRET_VALUE):  # the stack's placeholder: no key set
        return None
    try:  # a bare key, or a JSON object with one value (the console's key/value form)
        parsed = json.loads(secret)
    except json.JSONDecodeError:
        return secret.strip()
    if isinstance(parsed, dict) and len(parsed) == 1:
        return str(next(iter(parsed.values())))
    if isinstance(parsed, dict) and "DANDI_API_KEY" in parsed:
        return str(parsed["DANDI_API_KEY"])
    raise InputError(
        "DANDI_API_KEY_SECRET_ARN: the secret must hold the key, or JSON with one value"
    )


def nearest_paths(wanted: str, paths: list[str], n: int = 5) -> list[str]:
    """The asset paths closest to ``wanted`` (same folder first, then by similarity)."""
    folder = str(PurePosixPath(wanted).parent)
    close = difflib.get_close_matches(wanted, paths, n=n, cutoff=0.4)
    same_folder = [p for p in paths if str(PurePosixPath(p).parent) == folder and p not in close]
    return (close + same_folder)[:n] or sorted(paths)[:n]


def resolve_dandi(settings: WorkerSettings) -> ResolvedInput:
    """Look the asset up in the archive; a missing one lists the nearest paths."""
    from dandi.dandiapi import DandiAPIClient
    from dandi.exceptions import NotFoundError

    assert settings.dandiset_id is not None and settings.dandi_asset_path is not None
    client = DandiAPIClient(api_url=settings.dandi_api_url, token=dandi_api_key(settings))
    dandiset = client.get_dandiset(settings.dandiset_id, settings.dandiset_version)
    where = f"dandiset {settings.dandiset_id}/{settings.dandiset_version}"
    try:
        asset = dandiset.get_asset_by_path(settings.dandi_asset_path)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise InputError(
                f"{where} is embargoed or private: set DANDI_API_KEY or "
                f"DANDI_API_KEY_SECRET_ARN (HTTP {status})"
            ) from None
        raise
    except NotFoundError:
        try:
            paths = [a.path for a in dandiset.get_assets()]
        except NotFoundError:
            raise InputError(f"no {where} at {settings.dandi_api_url}") from None
        hint = ", ".join(nearest_paths(settings.dandi_asset_path, paths)) or "(no assets)"
        raise InputError(
            f"DANDI_ASSET_PATH: no asset {settings.dandi_asset_path!r} in {where}; nearest: {hint}"
        ) from None
    metadata = asset.get_raw_metadata()
    digests = {k: v for k, v in (metadata.get("digest") or {}).items() if k in DANDI_DIGESTS}
    if not digests:
        raise InputError(f"asset {asset.path!r} has no sha256/etag digest to verify against")
    # The archive's download endpoint redirects to a (pre-signed) blob URL; resolve it with
    # the client's session so an embargoed asset's token is sent to the API only.
    response = client.session.head(asset.download_url, allow_redirects=False, timeout=60)
    if response.status_code in (401, 403):
        raise InputError(f"{where} needs a valid DANDI_API_KEY (HTTP {response.status_code})")
    url = response.headers.get("Location") or asset.download_url
    return ResolvedInput(
        source=settings.source,
        url=url,
        filename=PurePosixPath(asset.path).name,
        expected_size=asset.size,
        digests=digests,
        dandi_asset_id=asset.identifier,
    )


def resolve(settings: WorkerSettings) -> ResolvedInput:
    """The input as a URL + size + digests, whichever source the job names."""
    if settings.input_uri is None:
        return resolve_dandi(settings)
    name = PurePosixPath(unquote(urlparse(settings.input_uri).path)).name or "input.nwb"
    return ResolvedInput(source=settings.input_uri, url=settings.input_uri, filename=name)


def fetch(resolved: ResolvedInput, scratch: Path) -> transfer.DownloadResult:
    """Download into ``scratch/input/`` (resumable), verified against the digests."""
    dest = scratch / "input" / resolved.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info(
        "fetch: %s -> %s (%s bytes)", resolved.source, dest, resolved.expected_size or "unknown"
    )
    try:
        return transfer.download(
            resolved.url,
            dest,
            expected_size=resolved.expected_size,
            digests=resolved.digests or None,
            progress=True,
        )
    except transfer.NotFoundError as exc:
        raise InputError(f"input not found: {exc}") from None
    except transfer.DigestMismatchError as exc:
        raise InputError(
            f"download does not match the archive's digest, not sorting it: {exc}"
        ) from None

"""Resolve DANDI asset paths and globs to concrete assets, over the DANDI REST API.

The submit Lambda cannot carry the ``dandi`` package, so this is plain ``urllib`` against
the same endpoints ``dandi.dandiapi.DandiAPIClient.get_assets_by_glob`` and
``get_asset_by_path`` call (``GET /dandisets/{id}/versions/{v}/assets/?glob=`` / ``?path=``,
paginated through ``next``). The glob semantics are the archive's own (server-side); the
CLI and the Lambda both call this module, so there is one home for them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from spikebatch.contract import DEFAULT_DANDI_API_URL
from spikebatch.control.request import MAX_CAMPAIGN_INPUTS, DandisetSelection, JobRequest

PAGE_SIZE = 1000  # the archive's largest page: 12,000 assets are 12 requests
TIMEOUT_S = 30.0
MAX_ASSETS = MAX_CAMPAIGN_INPUTS  # one request (a campaign of several arrays) at most
FEW_PATHS = 20  # up to this many paths are looked up one by one


class DandiLookupError(RuntimeError):
    """The archive does not have what was asked for, or refused access (one line).

    ``field`` names the request field at fault (``dandiset_id``, ``version``, ``assets``).
    """

    def __init__(self, message: str, *, field: str = "assets") -> None:
        super().__init__(message)
        self.field = field


class DandiUnavailableError(DandiLookupError):
    """The archive could not answer (unreachable, 5xx, not JSON): try again later."""


class _NotFound(LookupError):
    """A 404, with the archive's own words (``detail``)."""


@dataclass(frozen=True, slots=True)
class DandiAsset:
    path: str
    size: int
    asset_id: str


def _get(url: str, token: str | None) -> Any:
    headers = {"Accept": "application/json", "User-Agent": "spikebatch"}
    if token:
        headers["Authorization"] = f"token {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise _NotFound(_detail(exc)) from None
        if exc.code in (401, 403):
            raise DandiLookupError(
                f"DANDI refused access ({exc.code}) to {url}: embargoed? set DANDI_API_KEY"
            ) from None
        if exc.code < 500 and exc.code != 429:
            raise DandiLookupError(
                f"DANDI API error {exc.code} for {url}: {_detail(exc)}"
            ) from None
        raise DandiUnavailableError(f"DANDI API error {exc.code} for {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DandiUnavailableError(f"cannot reach the DANDI API at {url}: {reason}") from None
    except ValueError:
        raise DandiUnavailableError(
            f"the DANDI API sent something that is not JSON: {url}"
        ) from None


def _detail(exc: urllib.error.HTTPError) -> str:
    """The archive's own explanation: the ``detail`` of its JSON error body, else the reason."""
    try:
        body = json.loads(exc.read(4096) or b"{}")
    except (ValueError, OSError):
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or exc.reason or exc.code)


def _missing(
    api_url: str, dandiset_id: str, version: str, answer: str, token: str | None
) -> NoReturn:
    """Why a version's asset listing is a 404: no such dandiset, or no such version."""
    base = api_url.rstrip("/")
    try:
        record = _get(f"{base}/dandisets/{dandiset_id}/", token)
    except _NotFound as exc:
        raise DandiLookupError(
            f"dandiset {dandiset_id} does not exist on {base} (DANDI: {exc})", field="dandiset_id"
        ) from None
    published = (record.get("most_recent_published_version") or {}).get("version")
    hint = f"its latest published version is {published}" if published else "it has none"
    what = "no draft" if version == "draft" else f"no published version {version!r}"
    raise DandiLookupError(
        f"dandiset {dandiset_id} has {what} on {base} (DANDI: {answer}); {hint}, or use 'draft'",
        field="version",
    )


def _listing(
    api_url: str, dandiset_id: str, version: str, params: dict[str, str], token: str | None
) -> Iterator[DandiAsset]:
    base = f"{api_url.rstrip('/')}/dandisets/{dandiset_id}/versions/{version}/assets/"
    query = {**params, "order": "path", "page_size": str(PAGE_SIZE)}
    url: str | None = f"{base}?{urllib.parse.urlencode(query)}"
    while url:
        try:
            page = _get(url, token)
        except _NotFound as exc:
            _missing(api_url, dandiset_id, version, str(exc), token)
        for item in page.get("results") or []:
            yield DandiAsset(
                path=str(item["path"]), size=int(item.get("size") or 0), asset_id=item["asset_id"]
            )
        url = page.get("next")


def glob_assets(
    dandiset_id: str,
    version: str,
    pattern: str,
    *,
    api_url: str = DEFAULT_DANDI_API_URL,
    token: str | None = None,
) -> list[DandiAsset]:
    """Assets whose path matches ``pattern`` (the archive's glob), sorted by path."""
    found = []
    for asset in _listing(api_url, dandiset_id, version, {"glob": pattern}, token):
        found.append(asset)
        if len(found) > MAX_ASSETS:
            raise DandiLookupError(
                f"{pattern!r} matches more than {MAX_ASSETS} assets (one request's limit); "
                "narrow the glob"
            )
    return found


def get_assets(
    dandiset_id: str,
    version: str,
    paths: Sequence[str],
    *,
    api_url: str = DEFAULT_DANDI_API_URL,
    token: str | None = None,
) -> list[DandiAsset]:
    """The assets at exactly ``paths``; one error naming every path that is not there."""
    if len(paths) > FEW_PATHS:  # one listing of the dandiset beats a query per path
        listed = {a.path: a for a in _listing(api_url, dandiset_id, version, {}, token)}
    else:
        listed = {
            a.path: a
            for path in paths
            for a in _listing(api_url, dandiset_id, version, {"path": path}, token)
        }
    found = [listed[path] for path in paths if path in listed]
    missing = [path for path in paths if path not in listed]
    if missing:
        raise DandiLookupError(
            f"not in dandiset {dandiset_id} ({version}): {', '.join(missing[:5])}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return found


def resolve_selection(
    selection: DandisetSelection, *, api_url: str, token: str | None = None
) -> list[DandiAsset]:
    """One dandiset's assets: its paths checked, or the union of its globs (sorted by path)."""
    if selection.assets is not None:
        return get_assets(
            selection.dandiset_id, selection.version, selection.assets, api_url=api_url, token=token
        )
    found: dict[str, DandiAsset] = {}
    for pattern in selection.globs:
        for asset in glob_assets(
            selection.dandiset_id, selection.version, pattern, api_url=api_url, token=token
        ):
            found.setdefault(asset.path, asset)
    return [found[path] for path in sorted(found)]


def resolve_selections(
    request: JobRequest, *, api_url: str, token: str | None = None
) -> list[tuple[DandisetSelection, list[DandiAsset]]]:
    """Every dandiset part of a request with its assets; [] for an ``input_uri``."""
    resolved = []
    total = 0
    for selection in request.selections():
        assets = resolve_selection(selection, api_url=api_url, token=token)
        total += len(assets)
        if total > MAX_ASSETS:
            raise DandiLookupError(f"the request names more than {MAX_ASSETS} assets; split it")
        resolved.append((selection, assets))
    return resolved


def resolve_request_assets(
    request: JobRequest, *, api_url: str, token: str | None = None
) -> list[DandiAsset]:
    """The DANDI assets a request names (globs resolved, paths checked); [] for URIs."""
    return [
        asset
        for _, assets in resolve_selections(request, api_url=api_url, token=token)
        for asset in assets
    ]

"""A loopback HTTP server that follows the DANDI REST API closely enough for the real client.

``dandi.dandiapi.DandiAPIClient(api_url=archive.api_url, token=...)`` works against it:
server info, token check, dandisets and versions, paginated asset listings with the
``path`` / ``glob`` filters, asset metadata (``digest`` with ``dandi:sha2-256`` and
``dandi:dandi-etag``, ``contentSize``, ``contentUrl``) and ``/assets/{id}/download/``
redirecting to a blob URL that honours HTTP ``Range``. Digests are computed from the files
served with dandi's own helpers (NWB bytes are not reproducible, so never a constant).

Knobs for tests and benchmarks: a per-connection rate cap (S3 gives ~100 MB/s per stream),
a required token (embargoed dandisets), and :meth:`FakeDandiArchive.corrupt` to serve
altered bytes under the original digests.

Usage::

    with FakeDandiArchive() as archive:
        asset = archive.add_asset("000409", "sub-1/sub-1_ecephys.nwb", Path("x.nwb"))
        DandiAPIClient(api_url=archive.api_url)  # -> the dandiset, its assets, the blob
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.loopback_http import LoopbackServer, parse_range, send_range

_TIMESTAMP = "2024-01-01T12:00:00.000000Z"


@dataclass
class FakeAsset:
    """One blob asset of one dandiset version."""

    asset_id: str
    blob_id: str
    dandiset_id: str
    version: str
    path: str
    file: Path
    size: int
    sha256: str
    etag: str
    corrupt: bool = False

    def listing(self) -> dict[str, Any]:
        return {
            "asset_id": self.asset_id,
            "blob": self.blob_id,
            "zarr": None,
            "path": self.path,
            "size": self.size,
            "created": _TIMESTAMP,
            "modified": _TIMESTAMP,
        }


@dataclass
class _Dandiset:
    identifier: str
    embargoed: bool
    assets: dict[str, list[FakeAsset]] = field(default_factory=dict)  # version -> assets


class FakeDandiArchive(LoopbackServer):
    """A threaded DANDI API on 127.0.0.1 (random port); stops when the ``with`` block ends.

    ``rate_limit_bps`` caps each connection's blob throughput (bytes/s); ``token`` makes
    every API call require ``Authorization: token <token>``; ``page_size`` is the default
    page size of asset listings (small values exercise the client's pagination).
    """

    def __init__(
        self,
        *,
        rate_limit_bps: float | None = None,
        token: str | None = None,
        page_size: int = 100,
    ) -> None:
        super().__init__()
        self.rate_limit_bps = rate_limit_bps
        self.token = token
        self.page_size = page_size
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._dandisets: dict[str, _Dandiset] = {}
        self._lock = threading.Lock()

    thread_name = "fake-dandi"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("_BoundHandler", (_Handler,), {"archive": self})

    @property
    def api_url(self) -> str:
        """What to pass as ``DandiAPIClient(api_url=...)`` / ``DANDI_API_URL``."""
        return f"{self.base_url}/api"

    # ---- content ---------------------------------------------------------------------
    def add_asset(
        self,
        dandiset_id: str,
        path: str,
        file: Path,
        *,
        version: str = "draft",
        embargoed: bool = False,
    ) -> FakeAsset:
        """Serve ``file`` as asset ``path`` of ``dandiset_id``/``version``; digests from its bytes."""
        from dandi.support.digests import get_digest

        file = Path(file)
        asset = FakeAsset(
            asset_id=str(uuid.uuid4()),
            blob_id=str(uuid.uuid4()),
            dandiset_id=dandiset_id,
            version=version,
            path=path,
            file=file,
            size=file.stat().st_size,
            sha256=get_digest(file, "sha256"),
            etag=get_digest(file, "dandi-etag"),
        )
        with self._lock:
            ds = self._dandisets.setdefault(dandiset_id, _Dandiset(dandiset_id, embargoed))
            ds.embargoed = ds.embargoed or embargoed
            ds.assets.setdefault(version, []).append(asset)
            ds.assets.setdefault("draft", [])
        return asset

    def corrupt(self, path: str, dandiset_id: str | None = None) -> None:
        """Serve the asset at ``path`` with one byte flipped (its metadata keeps the true digests)."""
        hits = [a for a in self._all_assets() if a.path == path]
        hits = [a for a in hits if dandiset_id in (None, a.dandiset_id)]
        if not hits:
            raise KeyError(path)
        for asset in hits:
            asset.corrupt = True

    def blob_requests(self) -> list[tuple[str, str, str | None]]:
        """The requests made for blob bytes (method, path, Range) so far."""
        return [r for r in self.requests if r[1].startswith("/blobs/")]

    def _all_assets(self) -> list[FakeAsset]:
        with self._lock:
            return [a for ds in self._dandisets.values() for v in ds.assets.values() for a in v]

    def _asset_metadata(self, asset: FakeAsset) -> dict[str, Any]:
        return {
            "id": f"dandiasset:{asset.asset_id}",
            "identifier": asset.asset_id,
            "schemaKey": "Asset",
            "path": asset.path,
            "encodingFormat": "application/x-nwb",
            "contentSize": asset.size,
            "digest": {"dandi:sha2-256": asset.sha256, "dandi:dandi-etag": asset.etag},
            "contentUrl": [
                f"{self.api_url}/assets/{asset.asset_id}/download/",
                f"{self.base_url}/blobs/{asset.blob_id}",
            ],
            "dateModified": _TIMESTAMP,
            "blobDateModified": _TIMESTAMP,
        }

    def _version_record(self, ds: _Dandiset, version: str) -> dict[str, Any]:
        assets = ds.assets.get(version, [])
        return {
            "version": version,
            "name": f"Simulated dandiset {ds.identifier}",
            "asset_count": len(assets),
            "size": sum(a.size for a in assets),
            "created": _TIMESTAMP,
            "modified": _TIMESTAMP,
            "status": "Valid" if version == "draft" else "Published",
        }

    def _dandiset_record(self, ds: _Dandiset) -> dict[str, Any]:
        published = sorted(v for v in ds.assets if v != "draft")
        return {
            "identifier": ds.identifier,
            "created": _TIMESTAMP,
            "modified": _TIMESTAMP,
            "contact_person": "Ground Truth",
            "embargo_status": "EMBARGOED" if ds.embargoed else "OPEN",
            "most_recent_published_version": (
                self._version_record(ds, published[-1]) if published else None
            ),
            "draft_version": self._version_record(ds, "draft"),
        }


class _Handler(BaseHTTPRequestHandler):
    archive: FakeDandiArchive
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ---- plumbing ------------------------------------------------------------------
    def _send_json(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, what: str = "Not found.") -> None:
        self._send_json({"detail": what}, HTTPStatus.NOT_FOUND)

    def _authorized(self) -> bool:
        token = self.archive.token
        return token is None or self.headers.get("Authorization") == f"token {token}"

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.archive.requests.append((self.command, url.path, self.headers.get("Range")))
        if url.path.startswith("/blobs/"):
            return self._blob(url.path.removeprefix("/blobs/"))
        if url.path in ("/server-info", "/api/info/"):
            return self._send_json(
                {
                    "version": "0.0.0-fake",
                    "cli-minimal-version": "0.0.0",
                    "cli-bad-versions": [],
                    "services": {"api": {"url": self.archive.api_url}},
                }
            )
        if not self._authorized():
            return self._send_json(
                {"detail": "Authentication credentials were not provided."},
                HTTPStatus.UNAUTHORIZED,
            )
        route = url.path.removeprefix("/api").rstrip("/")
        if route == "/auth/token":
            return self._send_json({"detail": "ok"})
        m = re.fullmatch(r"/assets/([^/]+)(/download|/info)?", route)
        if m:
            return self._asset(m.group(1), m.group(2), None)
        m = re.fullmatch(
            r"/dandisets/([^/]+)(?:/versions/([^/]+)(/info|/assets(?:/([^/]+)(/download|/info)?)?)?)?",
            route,
        )
        if not m:
            return self._not_found()
        dandiset_id, version, tail, asset_id, asset_tail = m.groups()
        with self.archive._lock:
            ds = self.archive._dandisets.get(dandiset_id)
        if ds is None:
            return self._not_found("No Dandiset matches the given query.")
        if version is None:
            return self._send_json(self.archive._dandiset_record(ds))
        if version not in ds.assets:
            return self._not_found("No Version matches the given query.")
        if tail is None:
            return self._send_json(
                {
                    "schemaKey": "Dandiset",
                    "identifier": f"DANDI:{ds.identifier}",
                    "name": f"Simulated dandiset {ds.identifier}",
                    "version": version,
                }
            )
        if tail == "/info":
            return self._send_json(
                {
                    **self.archive._version_record(ds, version),
                    "asset_validation_errors": [],
                    "version_validation_errors": [],
                    "dandiset": self.archive._dandiset_record(ds),
                    "metadata": {},
                }
            )
        if asset_id is not None:
            return self._asset(asset_id, asset_tail, (dandiset_id, version))
        return self._listing(ds.assets[version], url.path, query)

    def _listing(self, assets: list[FakeAsset], path: str, query: dict[str, str]) -> None:
        selected = sorted(assets, key=lambda a: a.path)
        if query.get("path"):
            selected = [a for a in selected if a.path.startswith(query["path"])]
        if "glob" in query:
            selected = [a for a in selected if fnmatch.fnmatchcase(a.path, query["glob"])]
        if query.get("order", "").lstrip("-") in ("path", "created", "modified"):
            selected.sort(key=lambda a: a.path, reverse=query["order"].startswith("-"))
        page = int(query.get("page", 1))
        size = int(query.get("page_size", self.archive.page_size))
        chunk = selected[(page - 1) * size : page * size]
        next_url = None
        if page * size < len(selected):
            next_url = f"{self.archive.base_url}{path}?{urlencode({**query, 'page': page + 1})}"
        self._send_json(
            {
                "count": len(selected),
                "next": next_url,
                "previous": None,
                "results": [a.listing() for a in chunk],
            }
        )

    def _asset(self, asset_id: str, tail: str | None, scope: tuple[str, str] | None) -> None:
        asset = next((a for a in self.archive._all_assets() if a.asset_id == asset_id), None)
        if asset is None or (scope and scope != (asset.dandiset_id, asset.version)):
            return self._not_found("No Asset matches the given query.")
        if tail == "/download":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", f"{self.archive.base_url}/blobs/{asset.blob_id}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        metadata = self.archive._asset_metadata(asset)
        if tail == "/info":
            return self._send_json({**asset.listing(), "metadata": metadata})
        return self._send_json(metadata)

    def _blob(self, blob_id: str) -> None:
        asset = next((a for a in self.archive._all_assets() if a.blob_id == blob_id), None)
        if asset is None:
            return self._not_found()
        wanted = parse_range(self.headers.get("Range"), asset.size)
        if wanted is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{asset.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end, ranged = wanted
        length = end - start + 1
        self.send_response(HTTPStatus.PARTIAL_CONTENT if ranged else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", f'"{asset.etag}"')
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{asset.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        send_range(
            self,
            asset.file,
            start,
            length,
            rate_bps=self.archive.rate_limit_bps,
            flip_at=asset.size // 2 if asset.corrupt else -1,
        )

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

Uploads follow the archive's own views (dandi-archive ``dandiapi/api/views/upload.py`` and
``asset.py``), so ``dandi``'s ``LocalFileAsset.upload`` runs unchanged against it:
``POST /uploads/initialize/`` (409 + ``Location`` when the blob exists), ``PUT`` of each
part to its "presigned" URL (answering the part's MD5 as ``ETag``), ``POST
/uploads/{id}/complete/`` and the S3-style completion it points to, ``POST
/uploads/{id}/validate/`` (mints the blob), and ``POST``/``PUT`` of the asset on the draft
version. Writes need a registered user's token (:meth:`FakeDandiArchive.add_user`; an
unknown token is a 401) who owns the dandiset (:meth:`FakeDandiArchive.add_dandiset`; else
403). :meth:`FakeDandiArchive.fail_part_uploads` makes the next part PUTs answer 500.

Usage::

    with FakeDandiArchive() as archive:
        asset = archive.add_asset("000409", "sub-1/sub-1_ecephys.nwb", Path("x.nwb"))
        DandiAPIClient(api_url=archive.api_url)  # -> the dandiset, its assets, the blob

        archive.add_user("alice", token="alice-key")
        archive.add_dandiset("000500", owners=["alice"])  # alice may upload to 000500
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable
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
    #: Metadata the client sent when it created the asset (uploads); None for add_asset.
    metadata: dict[str, Any] | None = None

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
    owners: set[str] = field(default_factory=set)


@dataclass
class _Blob:
    blob_id: str
    file: Path
    size: int
    sha256: str
    etag: str


@dataclass
class _Upload:
    upload_id: str
    dandiset_id: str
    etag: str
    size: int
    parts: list[tuple[int, int]]  # (part_number, size)
    received: dict[int, bytes] = field(default_factory=dict)
    assembled: Path | None = None


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
        self.users: dict[str, str] = {}  # token -> user name
        self._dandisets: dict[str, _Dandiset] = {}
        self._blobs: dict[str, _Blob] = {}
        self._uploads: dict[str, _Upload] = {}
        self._part_failures = 0
        self._blob_dir = Path(tempfile.mkdtemp(prefix="fake-dandi-blobs-"))
        self._lock = threading.Lock()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self._blob_dir, ignore_errors=True)

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
            self._blobs.setdefault(
                asset.blob_id, _Blob(asset.blob_id, file, asset.size, asset.sha256, asset.etag)
            )
        return asset

    def add_assets(
        self, dandiset_id: str, paths: Iterable[str], file: Path, *, version: str = "draft"
    ) -> int:
        """Serve ``file`` under each of ``paths`` (one blob, digests computed once): a
        dandiset of thousands of assets, as campaigns list them. Returns how many."""
        template = self.add_asset(dandiset_id, "_template", file, version=version)
        made = [
            FakeAsset(
                asset_id=str(uuid.uuid4()),
                blob_id=template.blob_id,
                dandiset_id=dandiset_id,
                version=version,
                path=path,
                file=template.file,
                size=template.size,
                sha256=template.sha256,
                etag=template.etag,
            )
            for path in paths
        ]
        with self._lock:
            listed = self._dandisets[dandiset_id].assets[version]
            listed.remove(template)
            listed.extend(made)
        return len(made)

    def add_user(self, name: str, *, token: str) -> None:
        """A user whose ``Authorization: token <token>`` may write to dandisets they own."""
        with self._lock:
            self.users[token] = name

    def add_dandiset(
        self, dandiset_id: str, *, owners: Iterable[str] = (), embargoed: bool = False
    ) -> None:
        """An (empty) dandiset with a draft version, owned by ``owners``."""
        with self._lock:
            ds = self._dandisets.setdefault(dandiset_id, _Dandiset(dandiset_id, embargoed))
            ds.owners.update(owners)
            ds.assets.setdefault("draft", [])

    def fail_part_uploads(self, count: int = 1) -> None:
        """The next ``count`` part uploads answer HTTP 500 (the client must retry them)."""
        with self._lock:
            self._part_failures = count

    def assets(self, dandiset_id: str, version: str = "draft") -> list[FakeAsset]:
        """The assets of a dandiset version now (uploads included)."""
        with self._lock:
            return list(self._dandisets[dandiset_id].assets.get(version, []))

    def upload_requests(self) -> list[tuple[str, str, str | None]]:
        """The requests that wrote something (uploads, parts, asset creation), in order."""
        return [r for r in self.requests if r[0] in ("POST", "PUT", "DELETE")]

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
            **(asset.metadata or {}),
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

    def _token(self) -> str | None:
        header = self.headers.get("Authorization")
        return header.removeprefix("token ").strip() if header else None

    def _authorized(self) -> bool:
        """Reads: the archive's required token if it has one; a token nobody holds is
        refused once the archive knows tokens (as DANDI answers 401 to a bad key)."""
        token, required = self._token(), self.archive.token
        known = token is not None and (token == required or token in self.archive.users)
        if token is not None and (required is not None or self.archive.users) and not known:
            return False
        return required is None or known

    def _unauthorized(self) -> None:
        self._send_json(
            {"detail": "Authentication credentials were not provided."}, HTTPStatus.UNAUTHORIZED
        )

    def _writer(self, dandiset_id: str) -> _Dandiset | None:
        """The dandiset if the caller may write to it; otherwise answers 401/403/404."""
        user = self.archive.users.get(self._token() or "")
        if user is None:
            self._unauthorized()
            return None
        with self.archive._lock:
            ds = self.archive._dandisets.get(dandiset_id)
        if ds is None:
            self._not_found("No Dandiset matches the given query.")
            return None
        if user not in ds.owners:
            self._send_json({"detail": "Action not allowed"}, HTTPStatus.FORBIDDEN)
            return None
        return ds

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        body = self._body()
        return json.loads(body) if body else {}

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.archive.requests.append((self.command, url.path, self.headers.get("Range")))
        if url.path.startswith("/blobs/"):
            return self._blob(url.path.removeprefix("/blobs/"))
        if url.path in ("/server-info", "/api/info/"):
            from dandischema.consts import DANDI_SCHEMA_VERSION

            return self._send_json(
                {
                    "version": "0.0.0-fake",
                    "schema_version": DANDI_SCHEMA_VERSION,
                    "cli-minimal-version": "0.0.0",
                    "cli-bad-versions": [],
                    "services": {"api": {"url": self.archive.api_url}},
                }
            )
        if not self._authorized():
            return self._unauthorized()
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

    # ---- uploads (dandi-archive's upload and asset views) --------------------------------
    def do_POST(self) -> None:
        url = urlsplit(self.path)
        self.archive.requests.append(("POST", url.path, None))
        if url.path.startswith("/upload-complete/"):
            return self._s3_complete(url.path.removeprefix("/upload-complete/"))
        if not self._authorized():
            self._body()
            return self._unauthorized()
        route = url.path.removeprefix("/api").rstrip("/")
        if route == "/uploads/initialize":
            return self._initialize(self._json_body())
        m = re.fullmatch(r"/uploads/([^/]+)/(complete|validate)", route)
        if m:
            upload = self.archive._uploads.get(m.group(1))
            body = self._json_body()
            if upload is None:
                return self._not_found("No Upload matches the given query.")
            if self._writer(upload.dandiset_id) is None:
                return None
            if m.group(2) == "complete":
                return self._complete(upload, body)
            return self._validate(upload)
        m = re.fullmatch(r"/dandisets/([^/]+)/versions/([^/]+)/assets", route)
        if m:
            return self._create_asset(m.group(1), m.group(2), self._json_body(), None)
        self._body()
        return self._not_found()

    def do_PUT(self) -> None:
        url = urlsplit(self.path)
        self.archive.requests.append(("PUT", url.path, None))
        m = re.fullmatch(r"/upload-parts/([^/]+)/(\d+)", url.path)
        if m:
            return self._part(m.group(1), int(m.group(2)))
        if not self._authorized():
            self._body()
            return self._unauthorized()
        route = url.path.removeprefix("/api").rstrip("/")
        m = re.fullmatch(r"/dandisets/([^/]+)/versions/([^/]+)/assets/([^/]+)", route)
        if m:
            return self._create_asset(m.group(1), m.group(2), self._json_body(), m.group(3))
        self._body()
        return self._not_found()

    def _initialize(self, body: dict[str, Any]) -> None:
        from dandischema.digests.dandietag import PartGenerator

        digest = body.get("digest") or {}
        size = body.get("contentSize")
        if digest.get("algorithm") != "dandi:dandi-etag" or not isinstance(size, int) or size < 1:
            return self._send_json(["Unsupported Digest Type or size"], HTTPStatus.BAD_REQUEST)
        if self._writer(str(body.get("dandiset"))) is None:
            return None
        with self.archive._lock:
            existing = next(
                (b for b in self.archive._blobs.values() if b.etag == digest["value"]), None
            )
        if existing is not None:
            payload = b'"Blob already exists."'
            self.send_response(HTTPStatus.CONFLICT)
            self.send_header("Location", existing.blob_id)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return None
        upload_id = str(uuid.uuid4())
        parts = [(p.number, p.size) for p in PartGenerator.for_file_size(size)]
        with self.archive._lock:
            self.archive._uploads[upload_id] = _Upload(
                upload_id, str(body["dandiset"]), digest["value"], size, parts
            )
        base = self.archive.base_url
        return self._send_json(
            {
                "upload_id": upload_id,
                "parts": [
                    {
                        "part_number": number,
                        "size": part_size,
                        "upload_url": f"{base}/upload-parts/{upload_id}/{number}",
                    }
                    for number, part_size in parts
                ],
            }
        )

    def _part(self, upload_id: str, number: int) -> None:
        """S3's presigned part PUT: store the bytes, answer their MD5 as the ETag."""
        body = self._body()
        upload = self.archive._uploads.get(upload_id)
        if upload is None:
            return self._not_found()
        with self.archive._lock:
            fail = self.archive._part_failures > 0
            if fail:
                self.archive._part_failures -= 1
        if fail:
            return self._send_json({"detail": "injected part failure"}, 500)
        upload.received[number] = body
        self.send_response(HTTPStatus.OK)
        self.send_header("ETag", f'"{hashlib.md5(body).hexdigest()}"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def _complete(self, upload: _Upload, body: dict[str, Any]) -> None:
        sent = {p["part_number"]: p for p in body.get("parts") or []}
        for number, size in upload.parts:
            data = upload.received.get(number)
            part = sent.get(number)
            if data is None or part is None or part.get("size") != size or len(data) != size:
                return self._send_json([f"part {number} missing or wrong size"], 400)
            if part.get("etag") != hashlib.md5(data).hexdigest():
                return self._send_json([f"part {number}: ETag mismatch"], 400)
        return self._send_json(
            {
                "complete_url": f"{self.archive.base_url}/upload-complete/{upload.upload_id}",
                "body": "<CompleteMultipartUpload>"
                + "".join(f"<Part><PartNumber>{n}</PartNumber></Part>" for n, _ in upload.parts)
                + "</CompleteMultipartUpload>",
            }
        )

    def _s3_complete(self, upload_id: str) -> None:
        """S3's CompleteMultipartUpload: join the parts, answer the multipart ETag."""
        self._body()
        upload = self.archive._uploads.get(upload_id)
        if upload is None:
            return self._not_found()
        target = self.archive._blob_dir / upload_id
        digests = b""
        with target.open("wb") as fh:
            for number, _ in upload.parts:
                fh.write(upload.received[number])
                digests += hashlib.md5(upload.received[number]).digest()
        upload.assembled = target
        etag = f"{hashlib.md5(digests).hexdigest()}-{len(upload.parts)}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<ETag>&quot;{etag}&quot;</ETag></CompleteMultipartUploadResult>"
        ).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)
        return None

    def _validate(self, upload: _Upload) -> None:
        """Check the assembled object against the upload's size and ETag; mint the blob."""
        from dandi.support.digests import get_digest

        target = upload.assembled
        if target is None or not target.exists():
            return self._send_json(["Object does not exist."], 400)
        if target.stat().st_size != upload.size:
            return self._send_json([f"Size {upload.size} does not match"], 400)
        actual = get_digest(target, "dandi-etag")
        if actual != upload.etag:
            return self._send_json([f"ETag {upload.etag} does not match {actual}"], 400)
        blob = _Blob(upload.upload_id, target, upload.size, get_digest(target, "sha256"), actual)
        with self.archive._lock:
            self.archive._blobs[blob.blob_id] = blob
            self.archive._uploads.pop(upload.upload_id, None)
        return self._send_json(
            {"blob_id": blob.blob_id, "etag": blob.etag, "sha256": blob.sha256, "size": blob.size}
        )

    def _create_asset(
        self, dandiset_id: str, version: str, body: dict[str, Any], replaces: str | None
    ) -> None:
        """``POST .../assets/`` (create) or ``PUT .../assets/{id}/`` (replace) on the draft."""
        ds = self._writer(dandiset_id)
        if ds is None:
            return None
        if version != "draft":
            return self._send_json(["Only draft versions can be modified."], 405)
        metadata = dict(body.get("metadata") or {})
        path = metadata.get("path")
        blob = self.archive._blobs.get(str(body.get("blob_id")))
        if not path or blob is None:
            return self._send_json(["metadata.path and a validated blob_id are required"], 400)
        with self.archive._lock:
            draft = ds.assets.setdefault("draft", [])
            old = next((a for a in draft if a.asset_id == replaces), None) if replaces else None
            if replaces and old is None:
                return self._not_found("No Asset matches the given query.")
            clash = next((a for a in draft if a.path == path and a is not old), None)
            if clash is not None:
                return self._send_json(["An asset with that path already exists"], 409)
            asset = FakeAsset(
                asset_id=str(uuid.uuid4()),
                blob_id=blob.blob_id,
                dandiset_id=dandiset_id,
                version="draft",
                path=path,
                file=blob.file,
                size=blob.size,
                sha256=blob.sha256,
                etag=blob.etag,
                metadata=metadata,
            )
            if old is not None:
                draft.remove(old)
            draft.append(asset)
        return self._send_json({**asset.listing(), "metadata": self.archive._asset_metadata(asset)})

"""A spec's matrix as cases: each recording x sorter entry is one job request and one run id.

Here the recordings are resolved (an ``asset_glob`` becomes one recording per asset) and
each gets its **content identity**, which enters the run id (``derive_run_id(content=...)``):

* ``file://``: ``sha256:<hex>`` of the file (remembered per path, size and mtime in
  ``<out>/.digests.json``, so an unchanged file is hashed once);
* DANDI: ``dandi-asset:<asset_id>`` (an asset id names immutable bytes: a changed file at the
  same path is a new asset);
* ``s3://``: ``s3-etag:<ETag>``; ``https://``: its ``ETag`` (else size and Last-Modified).
* a folder (a SpikeGLX run, an Open Ephys recording; ``file://`` or an ``s3://`` prefix ending
  in ``/``): the sha256 of its files' paths and digests (sha256, or the S3 ETags).

So "done" is simply "a succeeded run.json under this run id": a recording whose bytes changed
has another run id and runs again, while the sorter, params and preprocessing already enter
the id through the one derivation every level uses.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikebatch.contract import (
    DEFAULT_DANDI_API_URL,
    Env,
    dandi_source,
    run_results_uri,
)
from spikebatch.control.dandi_assets import DandiAsset, get_assets, glob_assets
from spikebatch.control.request import JobRequest, parse_request
from spikebatch.control.submission import local_environment, request_run_id
from spikebatch.study.spec import OWN_UNITS, RecordingEntry, SorterEntry, StudySpec, StudySpecError

DIGESTS_FILE = ".digests.json"


@dataclass(frozen=True, slots=True)
class Recording:
    """One row of the matrix, resolved: its input fields, source, size and content identity."""

    name: str
    study: str
    inputs: dict[str, Any]
    source: str
    ground_truth: str | None
    size: int | None
    content: str | None


@dataclass(frozen=True, slots=True)
class Case:
    """One cell: a recording sorted by one sorter entry."""

    recording: Recording
    sorter: SorterEntry
    request: JobRequest
    run_id: str

    @property
    def label(self) -> str:
        return self.sorter.key

    def results_uri(self, output_uri: str) -> str:
        return run_results_uri(output_uri, self.run_id)

    def worker_env(
        self, spec: StudySpec, output_uri: str, *, dandi_api_url: str = DEFAULT_DANDI_API_URL
    ) -> dict[str, str]:
        """Exactly what ``run-local`` would give the worker, plus the run id and the truth."""
        env = local_environment(self.request, output_uri, dandi_api_url=dandi_api_url)
        return env | {Env.RUN_ID.value: self.run_id} | self.truth_env(spec)

    def truth_env(self, spec: StudySpec) -> dict[str, str]:
        """GROUND_TRUTH and its knobs for a scored case; nothing for ``ground_truth: none``."""
        if self.recording.ground_truth is None:
            return {}
        return {Env.GROUND_TRUTH.value: self.recording.ground_truth} | spec.ground_truth_env()


class DigestCache:
    """sha256 of local files, remembered by (path, size, mtime) so a rerun hashes nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, Any] = {}
        if path is not None and path.is_file():
            try:
                self.known = json.loads(path.read_text())
            except ValueError:
                self.known = {}

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = self.known.get(str(file))
        if entry and entry.get("stamp") == stamp:
            return str(entry["sha256"])
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while block := handle.read(8 << 20):
                digest.update(block)
        self.known[str(file)] = {"stamp": stamp, "sha256": digest.hexdigest()}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.known, indent=1))
        return digest.hexdigest()


def _uri_identity(uri: str, digests: DigestCache) -> tuple[int | None, str | None]:
    """(size, content identity) of an input URI."""
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        if path.is_dir():  # a SpikeGLX run or an Open Ephys recording: every file in it
            files = sorted(p for p in path.rglob("*") if p.is_file())
            lines = [f"{p.relative_to(path).as_posix()} {digests.sha256(p)}" for p in files]
            tree = hashlib.sha256("\n".join(lines).encode()).hexdigest()
            return sum(p.stat().st_size for p in files), f"sha256-tree:{tree}"
        if not path.is_file():
            raise StudySpecError(f"{uri}: no such file or folder")
        return path.stat().st_size, f"sha256:{digests.sha256(path)}"
    if uri.startswith("s3://") and uri.endswith("/"):  # a folder: its objects' ETags
        from spikebatch.transfer import s3

        objects = s3.list_objects(uri)
        if not objects:
            raise StudySpecError(f"{uri}: nothing under this prefix")
        lines = sorted(f"{o.key} {o.size} {o.etag}" for o in objects)
        tree = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        return sum(o.size for o in objects), f"s3-tree:{tree}"
    if uri.startswith("s3://"):
        from spikebatch import aws

        bucket, _, key = uri.removeprefix("s3://").partition("/")
        head = aws.client("s3").head_object(Bucket=bucket, Key=key)
        etag = str(head["ETag"]).strip('"')
        return int(head["ContentLength"]), f"s3-etag:{etag}"
    request = urllib.request.Request(uri, method="HEAD", headers={"User-Agent": "spikebatch"})
    with urllib.request.urlopen(request, timeout=30) as response:
        size = response.headers.get("Content-Length")
        tag = response.headers.get("ETag") or f"{size}/{response.headers.get('Last-Modified')}"
    tag = tag.strip('"')
    return (int(size) if size else None), f"http:{tag}"


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".nwb") else name


def _truth(entry: RecordingEntry) -> str | None:
    return entry.ground_truth if entry.scored else None


def resolve_recordings(
    spec: StudySpec,
    *,
    api_url: str = DEFAULT_DANDI_API_URL,
    token: str | None = None,
    digests: DigestCache | None = None,
    identify: bool = True,
) -> list[Recording]:
    """Every recording of the spec, globs expanded (DANDI's listing), with its identity.

    ``identify=False`` skips hashing and HEAD requests (the identity is then None): for
    listing a study without touching the inputs.
    """
    digests = digests or DigestCache(None)
    found: list[Recording] = []
    for entry in spec.recordings:
        if entry.input_uri is not None:
            assert entry.name is not None
            size, content = _uri_identity(entry.input_uri, digests) if identify else (None, None)
            found.append(
                Recording(
                    entry.name,
                    entry.study,
                    {"input_uri": entry.input_uri},
                    entry.input_uri,
                    _truth(entry),
                    size,
                    content,
                )
            )
            continue
        assert entry.dandiset_id is not None
        assets: Sequence[DandiAsset]
        if entry.asset is not None:
            assets = get_assets(
                entry.dandiset_id, entry.version, [entry.asset], api_url=api_url, token=token
            )
        else:
            assert entry.asset_glob is not None
            assets = glob_assets(
                entry.dandiset_id, entry.version, entry.asset_glob, api_url=api_url, token=token
            )
            if not assets:
                raise StudySpecError(
                    f"recordings: asset_glob {entry.asset_glob!r} matched nothing in dandiset "
                    f"{entry.dandiset_id} ({entry.version})"
                )
        for asset in assets:
            name = entry.name if entry.asset is not None else _stem(asset.path)
            found.append(
                Recording(
                    str(name),
                    entry.study,
                    {
                        "dandiset_id": entry.dandiset_id,
                        "version": entry.version,
                        "assets": [asset.path],
                    },
                    dandi_source(entry.dandiset_id, entry.version, asset.path),
                    _truth(entry),
                    asset.size,
                    f"dandi-asset:{asset.asset_id}",
                )
            )
    if doubles := sorted(n for n, c in Counter(r.name for r in found).items() if c > 1):
        raise StudySpecError(f"recordings: two recordings are named {doubles[0]!r}")
    return found


def make_cases(
    spec: StudySpec, recordings: Sequence[Recording], only: Sequence[str] | None = None
) -> list[Case]:
    """The matrix, recording by recording; ``only`` keeps those sorter labels."""
    entries = [spec.sorter(label) for label in only] if only else list(spec.sorters)
    cases = []
    for recording in recordings:
        for entry in entries:
            request = parse_request(recording.inputs | entry.request_fields())
            run_id = request_run_id(request, recording.source, content=recording.content)
            cases.append(Case(recording, entry, request, run_id))
    return cases


def check_with_worker(spec: StudySpec, cases: Sequence[Case]) -> None:
    """Each sorter entry's params and preprocessing, and each truth, as the worker checks
    SORTER_PARAMS / PREPROCESSING / GROUND_TRUTH (against SpikeInterface's own defaults);
    skipped where the worker extra is not installed (the worker checks them then)."""
    try:
        from spikebatch.worker.settings import ConfigError, WorkerSettings
    except ImportError:
        return
    seen: set[tuple[str, str | None]] = set()
    for case in cases:
        key = (case.label, case.recording.ground_truth)
        if key in seen:
            continue
        seen.add(key)
        env = case.worker_env(spec, "file:///tmp/spikebatch-study-check")
        try:
            WorkerSettings.from_env(env)
        except ConfigError as exc:
            where = {
                Env.SORTER_PARAMS.value: f"sorters[{case.label}].params",
                Env.PREPROCESSING.value: f"sorters[{case.label}].preprocessing",
                Env.SORTER.value: f"sorters[{case.label}].name",
                Env.GROUND_TRUTH.value: f"recordings[{case.recording.name}].ground_truth",
            }.get(str(exc).split(":", 1)[0], f"case {case.recording.name} x {case.label}")
            raise StudySpecError(f"{where}: {exc}") from None


__all__ = [
    "OWN_UNITS",
    "Case",
    "DigestCache",
    "Recording",
    "check_with_worker",
    "make_cases",
    "resolve_recordings",
]

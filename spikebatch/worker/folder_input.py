"""Fetch stage for an input that is a folder: a SpikeGLX run or an Open Ephys recording in an
S3 prefix or a local folder, or one SpikeGLX ``.ap.bin``/``.ap.meta`` pair.

The input is listed, its format told from the file names (``DATA_TYPE`` overrides), and only
what the sort needs is picked: each probe's spike-band stream and its metadata (SpikeGLX's
``.ap.bin`` + ``.ap.meta``; Open Ephys's ``structure.oebin``, ``settings.xml`` and the AP
streams' ``continuous/`` files), never LF, NI or event streams. The metadata comes first and
is checked before any byte of the traces moves (a ``.meta`` against its ``.bin``:
:func:`spikebatch.input_format.spikeglx_pair_problem`); it also gives each stream's shape, so
the scratch budget is checked before the download. The traces then come down with the same
transfer as an NWB file, each object checked against its S3 ETag, into the folder layout the
readers expect. A local folder is read where it is (nothing copied, nothing deleted).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from spikebatch import transfer
from spikebatch.input_format import (
    OPENEPHYS_STRUCTURE,
    formats_in,
    openephys_spike_band,
    parse_spikeglx_meta,
    spikeglx_pair_problem,
    spikeglx_shape,
)
from spikebatch.transfer import s3
from spikebatch.transfer.uris import local_path
from spikebatch.worker.errors import InputError
from spikebatch.worker.layout import SPIKE_BAND_MIN_HZ, SeriesInfo
from spikebatch.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_PAIR_SUFFIXES = (".ap.bin", ".ap.meta")
_OE_STREAM_FILES = ("continuous.dat", "sample_numbers.npy", "timestamps.npy")


@dataclass(frozen=True, slots=True)
class ListedFile:
    """One file of the input: its path inside the local layout, where it is, its size."""

    rel: str
    uri: str
    size: int
    etag: str = ""


@dataclass
class FolderPlan:
    """What the fetch stage downloads (or reads in place) and what it will find there."""

    uri: str
    data_type: str
    files: list[ListedFile]
    #: Each sorted stream's shape, from the metadata (for the scratch budget).
    series: list[SeriesInfo]
    #: A local folder read in place (None: downloaded under scratch).
    in_place: Path | None = None
    skipped: list[str] = field(default_factory=list)
    #: The folder the files are laid out under in scratch (the prefix's, or for Open Ephys
    #: the one above its Record Node).
    root_name: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def is_folder_input(settings: WorkerSettings) -> bool:
    """Does this job's input go through this module (not the single-file NWB path)?"""
    uri = settings.input_uri
    if uri is None:
        return False
    if uri.endswith("/") or _pair_file(uri) or settings.data_type in ("spikeglx", "openephys"):
        return True
    if uri.startswith("file://"):
        return local_path(uri).is_dir()
    return False


def _pair_file(uri: str) -> bool:
    return uri.lower().endswith(_PAIR_SUFFIXES)


# ---- listing -------------------------------------------------------------------------------
def _listing(uri: str) -> tuple[str, list[ListedFile]]:
    """The folder's URI (ending in '/') and every file under it."""
    folder = uri.rsplit("/", 1)[0] + "/" if _pair_file(uri) else uri.rstrip("/") + "/"
    if folder.startswith("s3://"):
        found = [
            ListedFile(
                _rel(o.key, folder), f"s3://{s3.split_s3(folder)[0]}/{o.key}", o.size, o.etag
            )
            for o in s3.list_objects(folder)
            if not o.key.endswith("/")
        ]
    elif folder.startswith("file://"):
        root = local_path(folder)
        if not root.is_dir():
            raise InputError(f"input not found: {uri} (no such folder)")
        found = [
            ListedFile(p.relative_to(root).as_posix(), p.as_uri(), p.stat().st_size)
            for p in sorted(root.rglob("*"))
            if p.is_file()
        ]
    else:
        raise InputError(
            f"INPUT_URI: a folder input must be an s3:// prefix or a file:// folder, got {uri}"
        )
    if not found:
        raise InputError(f"INPUT_URI: nothing under {folder} (an empty prefix or folder)")
    if _pair_file(uri):
        stem = PurePosixPath(uri).name.rsplit(".", 2)[0]
        found = [f for f in found if PurePosixPath(f.rel).name.rsplit(".", 2)[0] == stem]
    return folder, found


def _rel(key: str, folder: str) -> str:
    return key[len(s3.split_s3(folder)[1]) :]


# ---- planning ------------------------------------------------------------------------------
def plan(settings: WorkerSettings, scratch: Path) -> FolderPlan:
    """List the input, tell its format, pick and check what the sort needs, fetch the
    metadata (into ``scratch``), and read each stream's shape from it."""
    assert settings.input_uri is not None
    folder, listed = _listing(settings.input_uri)
    data_type = settings.data_type or _detect(folder, listed)
    kwargs = (
        settings.read_recording_kwargs.reader_kwargs() if settings.read_recording_kwargs else {}
    )
    in_place = folder.startswith("file://")
    layout = _Layout(scratch / "input", in_place)
    if data_type == "spikeglx":
        result = _plan_spikeglx(folder, listed, kwargs, layout)
    elif data_type == "openephys":
        result = _plan_openephys(folder, listed, kwargs, layout)
    else:
        hint = _nwb_hint(listed)
        raise InputError(
            f"INPUT_URI: {folder} is a folder; an NWB input is one file: give its URI"
            + (f" ({hint})" if hint else "")
        )
    result.in_place = local_path(folder) if in_place else None
    log.info(
        "fetch: %s: %s, %d files (%.1f MB) for %s",
        folder,
        data_type,
        len(result.files),
        result.total_bytes / 1e6,
        ", ".join(s.describe() for s in result.series),
    )
    return result


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a plan's files are (read in place) or go (under ``scratch/input/<root>``)."""

    scratch_input: Path
    in_place: bool

    def text(self, listed: ListedFile, root_name: str) -> str:
        """A small metadata file's text; downloaded (verified) into the layout if remote."""
        if self.in_place:
            path = local_path(listed.uri)
        else:
            path = self.scratch_input / root_name / listed.rel
            _download(listed, path, progress=False)
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InputError(f"cannot read {listed.rel}: {exc}") from None


def _folder_name(folder: str) -> str:
    return PurePosixPath(folder.rstrip("/").split("://", 1)[1]).name or "input"


def _nwb_hint(listed: list[ListedFile]) -> str:
    return ", ".join(f.rel for f in listed if f.rel.lower().endswith(".nwb"))[:200]


def _detect(folder: str, listed: list[ListedFile]) -> str:
    kinds = formats_in(f.rel for f in listed)
    if len(kinds) == 1:
        return kinds[0]
    if not kinds:
        sample = ", ".join(f.rel for f in listed[:8]) + (" ..." if len(listed) > 8 else "")
        raise InputError(
            f"no recording under {folder}: expected a SpikeGLX run (*.ap.bin + *.ap.meta), an "
            f"Open Ephys recording (structure.oebin) or an .nwb; found: {sample}"
        )
    raise InputError(
        f"{folder} holds several formats ({', '.join(kinds)}): set DATA_TYPE (data_type) to "
        "the one to sort"
    )


def _plan_spikeglx(
    folder: str, listed: list[ListedFile], kwargs: dict[str, Any], layout: _Layout
) -> FolderPlan:
    root_name = _folder_name(folder)
    streams: dict[str, dict[str, ListedFile]] = {}  # "<stem>|<stream>" -> {"bin"|"meta": file}
    for f in listed:
        parsed = _spikeglx_name(PurePosixPath(f.rel).name)
        if parsed is not None:
            stem, stream, ext = parsed
            streams.setdefault(f"{stem}|{stream}", {})[ext] = f
    wanted = kwargs.get("stream_name") or kwargs.get("stream_id")
    chosen = {
        k: v
        for k, v in streams.items()
        if (k.split("|")[1] == wanted if wanted else k.endswith(".ap"))
    }
    if not chosen:
        found = sorted({k.split("|")[1] for k in streams}) or ["none"]
        what = f"no stream {wanted!r}" if wanted else "no probe's AP stream (*.imecN.ap.bin)"
        raise InputError(f"{what} under {folder}; found: {', '.join(found)}")
    runs = sorted({k.split("|")[0] for k in chosen})
    if len(runs) > 1:
        raise InputError(
            f"{folder} holds {len(runs)} SpikeGLX runs ({', '.join(runs)}): point INPUT_URI "
            "at one run's folder (or one .ap.meta)"
        )
    files, series = [], []
    for key, pair in sorted(chosen.items()):
        meta, binary = pair.get("meta"), pair.get("bin")
        if meta is None:
            assert binary is not None
            raise InputError(f"{binary.rel}: its .meta is missing (SpikeGLX writes one per .bin)")
        text = layout.text(meta, root_name)
        problem = spikeglx_pair_problem(meta.rel, text, binary.size if binary else None)
        if problem:
            raise InputError(problem)
        assert binary is not None
        files += [meta, binary]
        shape = spikeglx_shape(parse_spikeglx_meta(text), binary.size)
        series.append(
            SeriesInfo(key.split("|")[1], shape.n_frames, shape.n_channels, 2, shape.rate_hz)
        )
    return FolderPlan(folder, "spikeglx", files, series, root_name=root_name)


def _spikeglx_name(name: str) -> tuple[str, str, str] | None:
    """``(stem, stream, ext)`` of a SpikeGLX file name: ``x_g0_t0.imec0.ap.bin`` ->
    ``("x_g0_t0", "imec0.ap", "bin")``, ``x_g0_t0.nidq.meta`` -> ``(..., "nidq", "meta")``."""
    base, dot, ext = name.rpartition(".")
    if not dot or ext not in ("bin", "meta"):
        return None
    parts = base.split(".")
    if len(parts) >= 3 and parts[-1] in ("ap", "lf") and parts[-2].startswith("imec"):
        return ".".join(parts[:-2]), ".".join(parts[-2:]), ext
    if len(parts) >= 2 and (parts[-1] == "nidq" or parts[-1].startswith("obx")):
        return ".".join(parts[:-1]), parts[-1], ext
    return None


def _plan_openephys(
    folder: str, listed: list[ListedFile], kwargs: dict[str, Any], layout: _Layout
) -> FolderPlan:
    structures = [f for f in listed if PurePosixPath(f.rel).name == OPENEPHYS_STRUCTURE]
    if len(structures) > 1:
        where = ", ".join(str(PurePosixPath(f.rel).parent) for f in structures[:6])
        raise InputError(
            f"{folder} holds {len(structures)} Open Ephys recordings ({where}): point "
            "INPUT_URI at one recording's folder"
        )
    # The readers name streams after the Record Node folder and find settings.xml in it:
    # lay the files out from the node's parent down, wherever INPUT_URI points inside it.
    oebin_path = _uri_path(structures[0].uri)
    node_dir = oebin_path.parent.parent.parent
    listed = _reroot(listed, node_dir.parent)
    oebin = next(f for f in listed if f.uri == structures[0].uri)
    recording_dir = PurePosixPath(oebin.rel).parent
    root_name = node_dir.parent.name or "input"
    try:
        structure = json.loads(layout.text(oebin, root_name))
    except json.JSONDecodeError as exc:
        raise InputError(f"{oebin.rel}: not valid JSON ({exc.msg})") from None
    node = node_dir.name if node_dir.name.startswith("Record") else ""
    wanted = kwargs.get("stream_name") or kwargs.get("stream_id")
    files, series, skipped = [oebin], [], []
    for info in structure.get("continuous") or []:
        folder_name = str(info.get("folder_name", "")).strip("/")
        name = f"{node}#{folder_name}" if node else folder_name
        rate = float(info.get("sample_rate") or 0) or None
        if wanted:
            keep = wanted in (name, folder_name)
        else:
            keep = (rate or 0) >= SPIKE_BAND_MIN_HZ and openephys_spike_band(folder_name)
        if not keep:
            skipped.append(name)
            continue
        stream_dir = recording_dir / "continuous" / folder_name
        stream_files = [
            f
            for f in listed
            if PurePosixPath(f.rel).parent == stream_dir
            and PurePosixPath(f.rel).name in _OE_STREAM_FILES
        ]
        dat = next((f for f in stream_files if f.rel.endswith("continuous.dat")), None)
        if dat is None:
            raise InputError(f"{stream_dir}/continuous.dat is missing")
        n_channels = int(info.get("num_channels") or len(info.get("channels") or []))
        if n_channels <= 0 or dat.size % (2 * n_channels):
            raise InputError(
                f"{dat.rel}: {dat.size} bytes is not a whole number of {n_channels}-channel "
                "int16 samples (structure.oebin's num_channels)"
            )
        files += stream_files
        series.append(SeriesInfo(name, dat.size // (2 * n_channels), n_channels, 2, rate))
    if not series:
        found = ", ".join(skipped) or "no continuous streams"
        what = f"no stream {wanted!r}" if wanted else "no spike-band (AP) continuous stream"
        raise InputError(f"{what} in {oebin.rel}; found: {found}")
    files += _settings_files(oebin, listed, node_dir)
    return FolderPlan(folder, "openephys", files, series, skipped=skipped, root_name=root_name)


def _uri_path(uri: str) -> PurePosixPath:
    """A URI's path, the bucket first for s3:// (so paths of one listing compare)."""
    path = uri.split("://", 1)[1].lstrip("/")
    return PurePosixPath("/" + (unquote(path) if uri.startswith("file://") else path))


def _reroot(listed: list[ListedFile], anchor: PurePosixPath) -> list[ListedFile]:
    """The same files, their ``rel`` taken from ``anchor`` (a folder above the listing)."""
    return [
        ListedFile(_uri_path(f.uri).relative_to(anchor).as_posix(), f.uri, f.size, f.etag)
        for f in listed
    ]


def _settings_files(
    oebin: ListedFile, listed: list[ListedFile], node_dir: PurePosixPath
) -> list[ListedFile]:
    """The node's ``settings*.xml`` (the probe's geometry): from the listing, or looked up
    beside the node when INPUT_URI points below it."""
    node_rel = PurePosixPath(oebin.rel).parent.parent.parent
    found = [
        f
        for f in listed
        if PurePosixPath(f.rel).parent == node_rel
        and PurePosixPath(f.rel).name.startswith("settings")
        and f.rel.endswith(".xml")
    ]
    if found:
        return found
    scheme = oebin.uri.split("://", 1)[0]
    node_uri = Path(node_dir).as_uri() + "/" if scheme == "file" else f"s3:/{node_dir}/"
    try:
        _, around = _listing(node_uri)
    except InputError:
        around = []
    return [
        ListedFile((node_rel / f.rel).as_posix(), f.uri, f.size, f.etag)
        for f in around
        if f.rel.startswith("settings") and f.rel.endswith(".xml") and "/" not in f.rel
    ]


# ---- fetching ------------------------------------------------------------------------------
def fetch(plan: FolderPlan, scratch: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The reader's folder, with every planned file in it, and what each download checked
    (run.json's ``input.files``)."""
    if plan.in_place is not None:
        return plan.in_place, [{"path": f.rel, "size": f.size} for f in plan.files]
    root = scratch / "input" / plan.root_name
    record = []
    for listed in plan.files:
        result = _download(listed, root / listed.rel, progress=listed.size > (64 << 20))
        record.append(
            {
                "path": listed.rel,
                "size": result.size,
                "digest": {"name": result.digest_name, "value": result.digest_value},
                "verified": result.digest_name is not None,
                "download_s": round(result.seconds, 2),
            }
        )
    return root, record


def _download(listed: ListedFile, dest: Path, *, progress: bool) -> transfer.DownloadResult:
    digests = s3.etag_digests(listed.uri, listed.etag) if listed.uri.startswith("s3://") else None
    try:
        return transfer.download(
            listed.uri, dest, expected_size=listed.size, digests=digests, progress=progress
        )
    except transfer.NotFoundError as exc:
        raise InputError(f"input not found: {exc}") from None
    except transfer.DigestMismatchError as exc:
        raise InputError(
            f"{listed.rel} does not match its S3 ETag, not sorting it: {exc}"
        ) from None

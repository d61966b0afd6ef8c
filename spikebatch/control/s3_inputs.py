"""S3 globs in a request's ``input_uri``: one run per recording that a pattern matches.

``s3://lab/rig1/*/*_g0/`` lists the bucket once, under the literal prefix before the first
glob character, and matches every key segment by segment (``fnmatch`` per path segment, so
``*`` never crosses a ``/``). A pattern ending in ``/`` matches folders, and a folder counts
only if it holds a recording (:func:`spikebatch.input_format.formats_in`: SpikeGLX AP files,
an Open Ephys ``structure.oebin`` anywhere below it, or an ``.nwb``). A pattern ending in a
file name matches objects: ``.nwb`` files and SpikeGLX AP files, one run per probe (a
``.bin`` whose ``.meta`` also matched is that probe already). Nothing is read, only listed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from botocore.exceptions import BotoCoreError, ClientError

from spikebatch import aws
from spikebatch.control.request import MAX_CAMPAIGN_INPUTS, FieldError, RequestError, first_glob
from spikebatch.input_format import (
    formats_in,
    openephys_spike_band,
    parse_spikeglx_meta,
    spikeglx_ap_part,
    spikeglx_shape,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Match:
    """One recording a glob matched: its URI (a folder's ends with ``/``) and bytes."""

    uri: str
    size: int | None


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def is_s3_glob(uri: str | None) -> bool:
    """Whether a campaign expands ``uri``: an s3:// URI whose key holds ``*``, ``?`` or ``[``
    (https URIs keep their ``?`` query; a literal ``[`` is written ``[[]``)."""
    return uri is not None and uri.startswith("s3://") and first_glob(split_s3_uri(uri)[1]) >= 0


def _segments_match(parts: list[str], patterns: list[str]) -> bool:
    return len(parts) == len(patterns) and all(map(fnmatchcase, parts, patterns))


def match_folders(pattern: str, objects: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Folders (``key/``) that match ``pattern`` (ending in ``/``) and hold a recording,
    each with the size of its SpikeGLX AP ``.bin`` files, or of all its objects."""
    patterns = pattern.rstrip("/").split("/")
    below: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, size in objects:
        parts = key.split("/")
        if len(parts) > len(patterns) and _segments_match(parts[: len(patterns)], patterns):
            folder = "/".join(parts[: len(patterns)]) + "/"
            if name := key[len(folder) :]:
                below[folder].append((name, size))
    return [
        (folder, _recording_size(entries))
        for folder, entries in sorted(below.items())
        if formats_in(name for name, _ in entries)
    ]


def _recording_size(entries: list[tuple[str, int]]) -> int:
    """The bytes a sort reads: the AP band of a SpikeGLX run, else everything."""
    ap = [size for name, size in entries if spikeglx_ap_part(name) == "bin"]
    return sum(ap) if ap else sum(size for _, size in entries)


def match_files(pattern: str, objects: Iterable[tuple[str, int]]) -> list[tuple[str, int | None]]:
    """Objects that match ``pattern`` and are a recording (``.nwb``, SpikeGLX AP file), one
    per probe; a ``.meta``'s size is its ``.bin``'s, when listed."""
    patterns = pattern.split("/")
    sizes = dict(objects)
    found = {
        key: size
        for key, size in sizes.items()
        if _segments_match(key.split("/"), patterns)
        and set(formats_in([key])) & {"nwb", "spikeglx"}
    }
    out: list[tuple[str, int | None]] = []
    for key, size in sorted(found.items()):
        ext = spikeglx_ap_part(key)
        if ext == "bin" and key.removesuffix(".bin") + ".meta" in found:
            continue  # its .meta is the probe's run
        out.append((key, sizes.get(key.removesuffix(".meta") + ".bin") if ext == "meta" else size))
    return out


def _listing(bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, 1000 a page."""
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}
    ):
        for item in page.get("Contents", []):
            yield item["Key"], int(item.get("Size") or 0)


def expand(uri: str) -> list[Match]:
    """Every recording an s3:// glob matches; :class:`RequestError` (``input_uri``) when it
    matches none, too many, or the bucket cannot be listed."""
    bucket, pattern = split_s3_uri(uri)
    prefix = pattern[: first_glob(pattern)]
    try:
        objects = list(_listing(bucket, prefix))
    except ClientError as exc:
        code = aws.error_code(exc)
        if code not in {"NoSuchBucket", "AccessDenied", "403", "404", "AllAccessDisabled"}:
            raise  # throttling, 5xx: the Lambda's retry lists again
        raise _error(f"{uri}: cannot list s3://{bucket}/{prefix} ({code})") from None
    pairs = (
        match_folders(pattern, objects) if pattern.endswith("/") else match_files(pattern, objects)
    )
    if not pairs:
        raise _error(
            f"{uri} matched no recordings (folders holding SpikeGLX AP files, an Open Ephys"
            " structure.oebin or an .nwb; or .nwb / SpikeGLX AP files)"
        )
    if len(pairs) > MAX_CAMPAIGN_INPUTS:
        raise _error(
            f"{uri} matched {len(pairs):,} recordings; a request is at most {MAX_CAMPAIGN_INPUTS:,}"
        )
    return [Match(f"s3://{bucket}/{key}", size) for key, size in pairs]


def _error(message: str) -> RequestError:
    return RequestError([FieldError("input_uri", message)])


def recording_bytes(uri: str) -> int | None:
    """The int16 traces one recording's sort reads, for its estimate: an NWB object's size;
    a SpikeGLX run's (or one probe's) AP channels, from each ``.meta`` (without the sync
    channel: what an NWB file of the same traces holds); an Open Ephys recording's AP
    ``continuous.dat`` files. None when the URI is not an S3 recording we can size."""
    if not uri.startswith("s3://") or is_s3_glob(uri):
        return None
    try:
        return _recording_bytes(*split_s3_uri(uri))
    except ClientError as exc:  # no access to list or read it: the estimate says "unknown"
        log.info("estimate: cannot size %s (%s)", uri, aws.error_code(exc))
    except BotoCoreError as exc:  # no network, no credentials: likewise
        log.info("estimate: cannot size %s (%s)", uri, exc)
    return None


def _recording_bytes(bucket: str, key: str) -> int | None:
    pair = spikeglx_ap_part(key) is not None
    folder = key.rsplit("/", 1)[0] + "/" if pair or not key.endswith("/") else key
    if key.lower().endswith(".nwb"):
        objects = dict(_listing(bucket, key))
        return objects.get(key)
    objects = dict(_listing(bucket, folder))
    if pair:
        stem = key.rsplit(".", 2)[0]
        objects = {k: v for k, v in objects.items() if k.rsplit(".", 2)[0] == stem}
    metas = [k for k in objects if spikeglx_ap_part(k) == "meta"]
    if metas:
        s3 = aws.client("s3")
        total = 0
        for meta_key in metas:
            body = s3.get_object(Bucket=bucket, Key=meta_key, Range="bytes=0-1048575")["Body"]
            meta = parse_spikeglx_meta(body.read().decode("utf-8", errors="replace"))
            bin_size = objects.get(meta_key.removesuffix(".meta") + ".bin")
            try:
                total += spikeglx_shape(meta, bin_size).sorted_bytes
            except (KeyError, ValueError, ZeroDivisionError):
                return None
        return total
    dats = [
        size
        for k, size in objects.items()
        if k.endswith("/continuous.dat") and openephys_spike_band(k.rsplit("/", 2)[-2])
    ]
    return sum(dats) if dats else None

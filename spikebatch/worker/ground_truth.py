"""``GROUND_TRUTH``: read the true spike trains before the sort, score each part after it.

The truth is ``units`` (the input NWB's own units table) or a URI: an NWB file whose units
table holds it (``file://``, ``s3://``, ``https://``), or a SpikeInterface sorting folder
(``sorting.save``; ``file://`` or an ``s3://`` prefix), or a folder of such folders, one
per part, named like the parts' ``probes/<key>/``.

It is read and checked in the ``open`` stage, while the input NWB is still here: a truth
that cannot be used (no units table, spike times outside the recording, an unknown format)
fails the run before anything is sorted. NWB spike times are seconds on the session clock;
they become sample indices the way SpikeInterface's NWB sorting extractor reads them,
against the sorted series' own ``starting_time``/``rate`` or ``timestamps``. With several
parts (probes, or shanks), each part is scored against the true units of its own electrode
groups: the units table's ``electrode_group`` column, else the groups of its ``electrodes``
(a sorting folder's ``group``/``electrode_group``/``group_name`` property).
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from spikebatch.worker.errors import InputError

log = logging.getLogger(__name__)

OWN_UNITS = "units"
_SCHEMES = ("s3://", "https://", "http://", "file://")
_GROUP_PROPERTIES = ("electrode_group", "group_name", "group")


def parse_ground_truth(raw: str) -> str:
    """``GROUND_TRUTH`` checked at config time (a ``ValueError`` says why); nothing is read."""
    value = raw.strip()
    if value == OWN_UNITS:
        return value
    if value.startswith(_SCHEMES) and len(value.split("://", 1)[1]) >= 2:
        if value.startswith("file://") and not value.removeprefix("file://").startswith("/"):
            raise ValueError(f"file:// URIs need an absolute path (file:///...), got {raw!r}")
        return value.rstrip("/") if not value.endswith("://") else value
    raise ValueError(
        "expected 'units' (the input NWB's own units table) or an s3://, https:// or file:// "
        f"URI of an NWB file or a SpikeInterface sorting folder, got {raw!r}"
    )


@dataclass(frozen=True, slots=True)
class TimeBase:
    """A series' clock: how NWB seconds become its sample indices (as SpikeInterface does)."""

    rate: float
    t_start: float
    n_frames: int
    timestamps: np.ndarray | None = None

    @property
    def span(self) -> tuple[float, float]:
        if self.timestamps is not None:
            return float(self.timestamps[0]), float(self.timestamps[-1])
        return self.t_start, self.t_start + (self.n_frames - 1) / self.rate

    def frames(self, times: np.ndarray) -> np.ndarray:
        """SpikeInterface's ``NwbSortingSegment._times_to_samples``."""
        if self.timestamps is not None:
            return np.searchsorted(self.timestamps, times, side="right") - 1
        return np.round((times - self.t_start) * self.rate).astype("int64")


@dataclass
class PartTruth:
    """One part's true units, as sample indices of its series."""

    sorting: Any  # a NumpySorting in memory (the NWB is deleted before the sort)
    groups: list[str] = field(default_factory=list)


@dataclass
class Truth:
    """What ``load`` read: each part's true units, and how it read them (for run.json)."""

    source: str
    parts: dict[str, PartTruth]
    detail: dict[str, Any] = field(default_factory=dict)


def load(value: str, nwb: Path, parts: list[Any], scratch: Path) -> Truth:
    """Read and check the truth for every part (``recording.SortPart``); InputError if unusable."""
    where = "the input NWB" if value == OWN_UNITS else value
    try:
        if value == OWN_UNITS:
            truth = _from_nwb(nwb, nwb, parts, own=True)
        else:
            local = _fetch(value, scratch / "ground_truth")
            if local.is_file():
                if not _is_hdf5(local):
                    raise InputError(f"{value} is neither an NWB (HDF5) file nor a sorting folder")
                truth = _from_nwb(local, nwb, parts, own=False)
            else:
                truth = _from_folder(local, nwb, parts)
    except InputError as exc:
        raise InputError(f"GROUND_TRUTH: {exc}") from None
    truth.source = value
    total = sum(p.sorting.get_num_units() for p in truth.parts.values())
    if total == 0:
        raise InputError(f"GROUND_TRUTH: {where} holds no true units for the sorted series")
    log.info(
        "ground truth: %d true units from %s (%s)",
        total,
        where,
        ", ".join(f"{k or 'all'}: {p.sorting.get_num_units()}" for k, p in truth.parts.items()),
    )
    gc.collect()  # extractors that held the NWB open: it is deleted after preprocessing
    return truth


# ---- sources -----------------------------------------------------------------------------
def _fetch(uri: str, folder: Path) -> Path:
    """The truth on local disk: a file:// path as is; an s3:// prefix or a URL downloaded."""
    from spikebatch import transfer

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.exists():
            raise InputError(f"no such file or folder: {path}")
        return path
    name = Path(unquote(parsed.path)).name or "truth"
    folder.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "s3" and not _s3_is_object(uri):
        return _download_s3_prefix(uri, folder / name)
    try:
        transfer.download(uri, folder / name, progress=False)
    except transfer.NotFoundError:
        raise InputError(f"not found: {uri}") from None
    except transfer.TransferError as exc:
        raise InputError(f"cannot download {uri}: {exc}") from None
    return folder / name


def _s3_is_object(uri: str) -> bool:
    from spikebatch import aws

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        aws.client("s3").head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return True


def _download_s3_prefix(uri: str, dest: Path) -> Path:
    from spikebatch import aws

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    s3 = aws.client("s3")
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    if not keys:
        raise InputError(f"not found: {uri} (no object, and no folder under it)")
    for key in keys:
        target = dest / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
    return dest


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def time_base(nwb: Any, series_path: str) -> TimeBase:
    """The series' clock, from the file (what SpikeInterface's extractors read)."""
    import h5py

    from spikebatch.worker import recording

    source = recording.as_source(nwb)
    if not source.is_nwb:  # a SpikeGLX / Open Ephys stream: the extractor's own clock
        stream = recording.open_recording(source, series_path)
        return TimeBase(
            rate=float(stream.sampling_frequency),
            t_start=float(stream.get_time_info().get("t_start") or 0.0),
            n_frames=int(stream.get_num_samples()),
        )
    nwb = source.path

    with h5py.File(nwb, "r") as h5:
        series = h5[series_path]
        n_frames = int(series["data"].shape[0])
        if "starting_time" in series:
            return TimeBase(
                rate=float(series["starting_time"].attrs["rate"]),
                t_start=float(series["starting_time"][()]),
                n_frames=n_frames,
            )
        timestamps = np.asarray(series["timestamps"][:], dtype=float)
    rate = float(1.0 / np.median(np.diff(timestamps[:1000])))
    return TimeBase(
        rate=rate, t_start=float(timestamps[0]), n_frames=n_frames, timestamps=timestamps
    )


def _from_nwb(truth_nwb: Path, input_nwb: Path, parts: list[Any], *, own: bool) -> Truth:
    """Each part's units from an NWB units table, on its series' clock."""
    import h5py
    from spikeinterface.core import NumpySorting

    with h5py.File(truth_nwb, "r") as h5:
        if "units" not in h5 or "spike_times" not in h5["units"]:
            raise InputError(f"{'the input NWB' if own else truth_nwb.name} has no units table")
    unit_groups = _nwb_unit_groups(truth_nwb)
    by_series: dict[str, Any] = {}
    for series_path in dict.fromkeys(p.series.path for p in parts):
        base = time_base(input_nwb, series_path)
        sorting = _own_units(truth_nwb, series_path) if own else _foreign_units(truth_nwb, base)
        mine = None  # with several series, check only the units on this one's groups
        if unit_groups is not None and len(parts) > 1:
            groups = {
                g for p in parts if p.series.path == series_path for g in _part_groups(input_nwb, p)
            }
            mine = {u for u, g in unit_groups.items() if g in groups}
        _check_inside(sorting, base, series_path, truth_nwb, mine)
        by_series[series_path] = NumpySorting.from_sorting(sorting)
        del sorting
    return Truth("", _split(parts, by_series, unit_groups, input_nwb))


def _own_units(nwb: Path, series_path: str) -> Any:
    """SpikeInterface's own reading: the units on ``series_path``'s time base."""
    from spikeinterface.extractors import read_nwb_sorting

    return read_nwb_sorting(
        file_path=str(nwb), electrical_series_path=series_path, load_unit_properties=False
    )


def _foreign_units(nwb: Path, base: TimeBase) -> Any:
    """Another file's units: their seconds mapped onto the input series' clock."""
    from spikeinterface.core import NumpySorting

    ids, trains = _nwb_spike_times(nwb)
    frames = [base.frames(t) for t in trains]
    return NumpySorting.from_unit_dict([dict(zip(ids, frames, strict=True))], base.rate)


def _nwb_spike_times(nwb: Path) -> tuple[list[Any], list[np.ndarray]]:
    import h5py

    with h5py.File(nwb, "r") as h5:
        units = h5["units"]
        if "unit_name" in units:
            ids = [v.decode() if isinstance(v, bytes) else v for v in units["unit_name"][:]]
        else:
            ids = [int(i) for i in units["id"][:]]
        times = np.asarray(units["spike_times"][:], dtype=float)
        ends = np.asarray(units["spike_times_index"][:], dtype="int64")
    starts = np.concatenate([[0], ends[:-1]])
    return ids, [times[s:e] for s, e in zip(starts, ends, strict=True)]


def _check_inside(
    sorting: Any, base: TimeBase, series_path: str, nwb: Path, only: set[Any] | None = None
) -> None:
    """Every true spike (of ``only``, when given) within the recording; else one line saying
    which and where."""
    first, last = base.span
    half = 0.5 / base.rate
    ids, trains = _nwb_spike_times(nwb)
    for unit_id, times in zip(ids, trains, strict=True):
        if only is not None and unit_id not in only:
            continue
        outside = (times < first - half) | (times > last + half)
        if outside.any():
            raise InputError(
                f"{outside.sum()} spike times of true unit {unit_id} (e.g. {times[outside][0]:.4f} s) "
                f"fall outside {series_path} ({first:.4f}-{last:.4f} s on the session clock)"
            )
    if only is not None:
        sorting = sorting.select_units([u for u in sorting.unit_ids if _plain(u) in only])
    _check_frames(sorting, base.n_frames, series_path)


def _check_frames(sorting: Any, n_frames: int, series_path: str) -> None:
    spikes = sorting.to_spike_vector()
    bad = (spikes["sample_index"] < 0) | (spikes["sample_index"] >= n_frames)
    if bad.any():
        unit = sorting.unit_ids[spikes["unit_index"][bad][0]]
        raise InputError(
            f"{bad.sum()} true spikes (e.g. of unit {unit}, sample {spikes['sample_index'][bad][0]}) "
            f"fall outside {series_path}'s {n_frames} samples"
        )


def _nwb_unit_groups(nwb: Path) -> dict[Any, str] | None:
    """Each unit's electrode group name (``electrode_group``, else its ``electrodes``' groups)."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(nwb), "r", load_namespaces=True) as io:
        units = io.read().units
        if units is None:
            return None
        names = units["unit_name"].data[:] if "unit_name" in units.colnames else units.id[:]
        ids = [n.decode() if isinstance(n, bytes) else n for n in names]
        ids = [int(i) if isinstance(i, np.integer) else i for i in ids]
        if "electrode_group" in units.colnames:
            groups = [g.name for g in units["electrode_group"].data[:]]
            return dict(zip(ids, groups, strict=True))
        if "electrodes" in units.colnames:
            groups = []
            for row in range(len(ids)):
                electrodes = units["electrodes"][row]
                names = [g.name if hasattr(g, "name") else str(g) for g in electrodes["group"]]
                groups.append(Counter(names).most_common(1)[0][0] if names else "")
            return dict(zip(ids, groups, strict=True))
    return None


def _from_folder(folder: Path, input_nwb: Path, parts: list[Any]) -> Truth:
    """A SpikeInterface sorting folder, or one per part (named by part key or series)."""
    from spikeinterface.core import NumpySorting

    per_part = {}
    for part in parts:
        for name in (part.key, part.series.name):
            if name and (folder / name).is_dir():
                per_part[part.key] = folder / name
                break
    if per_part and len(per_part) == len(parts):
        result = {}
        for part in parts:
            sorting = NumpySorting.from_sorting(_load_sorting(per_part[part.key]))
            _check_rate_and_frames(sorting, part, input_nwb)
            result[part.key] = PartTruth(sorting, _part_groups(input_nwb, part))
        return Truth("", result, {"per_part_folders": True})
    sorting = NumpySorting.from_sorting(_load_sorting(folder), with_metadata=True)
    if "main_channel_id" in sorting.get_property_keys():
        # The channel ids of whatever made the truth (a generator's "0".."31"), not the
        # input's: SpikeInterface would look them up in the recording and fail.
        sorting.delete_property("main_channel_id")
    groups = next(
        (sorting.get_property(p) for p in _GROUP_PROPERTIES if p in sorting.get_property_keys()),
        None,
    )
    unit_groups = None
    if groups is not None:
        unit_groups = {u: str(g) for u, g in zip(sorting.unit_ids, groups, strict=True)}
    for series_path in dict.fromkeys(p.series.path for p in parts):
        part = next(p for p in parts if p.series.path == series_path)
        _check_rate_and_frames(sorting, part, input_nwb)
    by_series = dict.fromkeys((p.series.path for p in parts), sorting)
    return Truth("", _split(parts, by_series, unit_groups, input_nwb))


def _load_sorting(folder: Path) -> Any:
    import spikeinterface as si

    try:
        sorting = si.load(folder)
    except Exception as exc:
        raise InputError(
            f"{folder.name} is not a SpikeInterface sorting folder ({type(exc).__name__})"
        ) from None
    if not hasattr(sorting, "get_unit_spike_train"):
        raise InputError(f"{folder.name} holds a {type(sorting).__name__}, not a sorting")
    return sorting


def _check_rate_and_frames(sorting: Any, part: Any, input_nwb: Path) -> None:
    base = time_base(input_nwb, part.series.path)
    if abs(sorting.sampling_frequency - base.rate) > 1e-6 * base.rate:
        raise InputError(
            f"the true sorting's sampling frequency ({sorting.sampling_frequency:g} Hz) is not "
            f"{part.series.path}'s ({base.rate:g} Hz)"
        )
    _check_frames(sorting, base.n_frames, part.series.path)


def _part_groups(input_nwb: Any, part: Any) -> list[str]:
    """The electrode groups of the part's channels."""
    if part.group is not None:
        return [part.group]
    from spikeinterface.extractors import read_nwb_recording

    from spikebatch.worker import recording as recordings

    source = recordings.as_source(input_nwb)
    if source.is_nwb:
        recording = read_nwb_recording(
            file_path=str(source.path),
            electrical_series_path=part.series.path,
            load_channel_properties=False,
        )
    else:
        recording = recordings.open_recording(source, part.series.path)
    return [str(g) for g in dict.fromkeys(recording.get_channel_groups())]


def _split(
    parts: list[Any],
    by_series: dict[str, Any],
    unit_groups: dict[Any, str] | None,
    input_nwb: Path,
) -> dict[str, PartTruth]:
    """Each part's true units: all of its series' units, or those of its electrode groups."""
    result: dict[str, PartTruth] = {}
    for part in parts:
        sorting = by_series[part.series.path]
        groups = _part_groups(input_nwb, part)
        if len(parts) == 1:
            result[part.key] = PartTruth(sorting, groups)
            continue
        if unit_groups is None:
            raise InputError(
                "the true units have no electrode_group or electrodes column (or group "
                f"property): cannot tell which of the {len(parts)} parts each one is on"
            )
        keep = [u for u in sorting.unit_ids if unit_groups.get(_plain(u)) in groups]
        result[part.key] = PartTruth(sorting.select_units(keep), groups)
    return result


def _plain(unit_id: Any) -> Any:
    return int(unit_id) if isinstance(unit_id, np.integer) else unit_id


def prepare(settings: Any, nwb: Any, parts: list[Any], scratch: Path) -> Any:
    """The run's :class:`~spikebatch.worker.scoring.Scorer`, truth read and checked; None
    without ``GROUND_TRUTH``. ``nwb`` is the input (a path, or a ``recording.Source``)."""
    from spikebatch.worker.recording import as_source
    from spikebatch.worker.scoring import Scorer

    if settings.ground_truth is None:
        return None
    source = as_source(nwb)
    if not source.is_nwb and settings.ground_truth == OWN_UNITS:
        raise InputError(
            f"GROUND_TRUTH: a {source.data_type} recording has no units table; give the "
            "truth's URI (an NWB file's units, or a SpikeInterface sorting folder)"
        )
    nwb = source.path if source.is_nwb else source
    return Scorer(load(settings.ground_truth, nwb, parts, scratch), settings.score_params)

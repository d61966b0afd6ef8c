"""Open stage: the parts to sort (one per probe, or per shank) opened with their geometry.

Which series are sorted is :mod:`spikebatch.worker.layout`'s rule: ``ELECTRICAL_SERIES_PATH``
if set, else every raw spike-band acquisition series (one per probe). With ``SORT_BY_GROUP``
each series is split by channel group (the electrodes table's electrode group: a shank),
and each group is sorted on its own. Each series' contact positions
(:mod:`~spikebatch.worker.geometry`) and the meaning of its samples
(:mod:`~spikebatch.worker.traces`) are decided once, when the parts are planned, and
recorded in run.json (``input.series``).

The input is a :class:`Source`: an NWB file, or the folder of a SpikeGLX run or an Open Ephys
recording (:mod:`~spikebatch.worker.acquisition`), where each probe's AP stream plays the
part a series plays in an NWB file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.worker import geometry, layout, traces
from spikebatch.worker.geometry import Geometry, ProbeSetting
from spikebatch.worker.layout import SeriesInfo
from spikebatch.worker.traces import TraceScale

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Source-session metadata that units.nwb links back to."""

    identifier: str
    session_description: str
    session_start_time: datetime
    session_id: str | None
    lab: str | None
    institution: str | None
    subject: dict[str, Any] | None
    #: name -> {"description", "manufacturer"}: the probes, as the source file names them.
    devices: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: name -> {"description", "location", "device"}: each probe's (or shank's) group.
    electrode_groups: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: Who ran the experiment, what it was and its keywords, as the source file says (None
    #: where it says nothing; SpikeGLX and Open Ephys never do).
    experimenter: tuple[str, ...] | None = None
    experiment_description: str | None = None
    keywords: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """The fetched input: an NWB file, or the folder of a SpikeGLX run / Open Ephys recording."""

    path: Path
    data_type: str = "nwb"
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    #: The input is the user's own folder, read in place: never deleted.
    in_place: bool = False

    @property
    def is_nwb(self) -> bool:
        return self.data_type == "nwb"


def as_source(given: Path | Source) -> Source:
    """A path is an NWB file (what every caller before folder inputs passes)."""
    return given if isinstance(given, Source) else Source(Path(given))


@dataclass(frozen=True, slots=True)
class SortPart:
    """One sort: a series, or one channel group (shank) of it, and where its results go."""

    series: SeriesInfo
    group: str | None = None
    #: Folder of its results under ``probes/`` ("" for a run with one part: today's layout).
    key: str = ""
    #: Where the series' contact positions come from (None: decided when opened).
    geometry: Geometry | None = None
    #: What its samples mean, and how they reach the sorter (None: as stored).
    scale: TraceScale | None = None

    @property
    def label(self) -> str:
        return self.series.path + (f" group {self.group}" if self.group is not None else "")


def electrical_series_paths(nwb_path: Path) -> list[str]:
    """Every ElectricalSeries in the file, acquisition first (HDF5 paths without leading '/')."""
    return [s.path for s in layout.local_series(nwb_path)]


def choose_series(nwb_path: Path, requested: str | None) -> list[str]:
    """The series this job sorts (``layout.choose``'s rule) as HDF5 paths."""
    return [s.path for s in layout.choose(layout.local_series(nwb_path), requested, nwb_path.name)]


def plan_parts(
    source: Path | Source,
    series: list[SeriesInfo],
    *,
    by_group: bool,
    probe: ProbeSetting | None = None,
) -> list[SortPart]:
    """One part per series, or per channel group of each series; keys once there are several.

    Each series' geometry and sample scale are decided here (an ``InputError`` if it has no
    contact positions), so the open stage fails before anything is converted.
    """
    source = as_source(source)
    parts: list[SortPart] = []
    for info in series:
        recording = _read(source, info.path)
        if source.is_nwb:
            decided = geometry.decide(recording, geometry.electrode_columns(recording), probe)
            scale = traces.decide(source.path, info.path, recording)
        else:  # int16 as the acquisition software wrote it; its probe in its metadata
            decided = geometry.decide_from_files(recording, probe, source.data_type)
            scale = traces.stored_integers(recording, f"{source.data_type}'s gains")
        groups: list[str | None] = [None]
        if by_group:
            groups = [str(g) for g in dict.fromkeys(recording.get_channel_groups())]
        del recording
        parts += [SortPart(info, group, geometry=decided, scale=scale) for group in groups]
    if len(parts) == 1:
        return parts
    return [SortPart(p.series, p.group, _part_key(p), p.geometry, p.scale) for p in parts]


def series_record(parts: list[SortPart]) -> dict[str, dict[str, Any]]:
    """run.json's ``input.series``: per series, where its geometry came from and its samples."""
    record: dict[str, dict[str, Any]] = {}
    for part in parts:
        entry: dict[str, Any] = {}
        if part.geometry is not None:
            entry["geometry"] = part.geometry.as_record()
        if part.scale is not None:
            entry["traces"] = part.scale.as_record()
        record[part.series.path] = entry
    return record


def _part_key(part: SortPart) -> str:
    name = part.series.name if part.group is None else f"{part.series.name}-{part.group}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "part"


def open_part(source: Path | Source, part: SortPart) -> Any:
    """The part's recording as the sorter gets it: its series with the decided geometry and
    int16 samples, cut to its channel group when it has one."""
    recording = open_recording(source, part.series.path, part.geometry)
    if part.scale is not None:
        recording = traces.to_sorter_input(recording, part.scale)
    if part.group is None:
        return recording
    groups = np.asarray([str(g) for g in recording.get_channel_groups()])
    ids = recording.channel_ids[groups == part.group]
    return recording.select_channels(ids)


def open_recording(
    source: Path | Source,
    series_path: str,
    decided: Geometry | None = None,
    probe: ProbeSetting | None = None,
) -> Any:
    """The series as a SpikeInterface recording, with its probe (see :mod:`geometry`)."""
    source = as_source(source)
    recording = _read(source, series_path)
    if decided is None and source.is_nwb:
        decided = geometry.decide(recording, geometry.electrode_columns(recording), probe)
    elif decided is None:
        decided = geometry.decide_from_files(recording, probe, source.data_type)
    recording = geometry.apply(recording, decided)
    log.info(
        "open: %s: %d channels, %.1f s at %.0f Hz, %s; positions from %s",
        series_path,
        recording.get_num_channels(),
        recording.get_total_duration(),
        recording.sampling_frequency,
        recording.get_dtype(),
        decided.source,
    )
    return recording


def _read(source: Source, series_path: str) -> Any:
    if not source.is_nwb:
        from spikebatch.worker import acquisition

        return acquisition.read(source.data_type, source.path, series_path, source.reader_kwargs)
    from spikeinterface.extractors import read_nwb_recording

    return read_nwb_recording(file_path=source.path, electrical_series_path=series_path)


def read_session(source: Path | Source, series: list[SeriesInfo] | None = None) -> SessionInfo:
    """The source session's identity, for units.nwb and run.json."""
    from pynwb import NWBHDF5IO

    source = as_source(source)
    if not source.is_nwb:
        from spikebatch.worker import acquisition

        return SessionInfo(
            **acquisition.session_fields(source.data_type, source.path, series or [])
        )
    with NWBHDF5IO(source.path, mode="r", load_namespaces=True) as io:
        nwb = io.read()
        subject = None
        if nwb.subject is not None:
            subject = {
                k: getattr(nwb.subject, k)
                for k in ("subject_id", "species", "sex", "age", "description", "strain")
                if getattr(nwb.subject, k, None) is not None
            }
        return SessionInfo(
            identifier=nwb.identifier,
            session_description=nwb.session_description,
            session_start_time=nwb.session_start_time,
            session_id=nwb.session_id,
            lab=nwb.lab,
            institution=nwb.institution,
            subject=subject,
            devices={
                name: {"description": d.description, "manufacturer": d.manufacturer}
                for name, d in nwb.devices.items()
            },
            electrode_groups={
                name: {
                    "description": g.description,
                    "location": g.location,
                    "device": g.device.name if g.device is not None else None,
                }
                for name, g in nwb.electrode_groups.items()
            },
            experimenter=_strings(nwb.experimenter),
            experiment_description=nwb.experiment_description or None,
            keywords=_strings(nwb.keywords),
        )


def _strings(value: Any) -> tuple[str, ...] | None:
    """A text array of the file (read lazily by pynwb) as a tuple; None when empty or absent."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value[:]
    texts = tuple(str(v) for v in values if str(v).strip())
    return texts or None

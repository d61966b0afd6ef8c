"""Recordings as the acquisition software wrote them: a SpikeGLX run, an Open Ephys recording.

Read with SpikeInterface's extractors (``read_spikeglx``, ``read_openephys``: neo underneath),
never a parser of our own. What is sorted is every probe's spike band: SpikeGLX's
``imec<N>.ap`` streams, Open Ephys's continuous streams at >= 10 kHz that are not LFP, ADC
or NI-DAQ streams (LF, NI and sync streams carry no spikes to sort); with
``read_recording_kwargs.stream_name`` (or ``stream_id``), that stream alone. Each stream is
one part of the run, as each probe's series of a multi-probe NWB file is.

Contact positions come from the files (SpikeGLX's IMRO table and geometry map, Open Ephys's
``settings.xml`` probe), read by the extractor. Each probe's channels are labelled with the
probe's name (``group``: ``imec0``, or ``imec0-s1`` per shank), so units.nwb gets one
electrode group per probe (or shank) and each unit is tied to its own.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.input_format import openephys_spike_band, parse_spikeglx_meta
from spikebatch.worker.errors import InputError
from spikebatch.worker.layout import SPIKE_BAND_MIN_HZ, SeriesInfo

log = logging.getLogger(__name__)

#: The neo reader behind each format (``get_neo_streams``'s name).
_NEO_NAMES = {"spikeglx": "spikeglx", "openephys": "openephysbinary"}


def stream_names(data_type: str, folder: Path, reader_kwargs: dict[str, Any]) -> list[str]:
    """Every stream the reader finds in ``folder`` (its names)."""
    from spikeinterface.extractors import get_neo_streams

    kwargs = {"block_index": reader_kwargs["block_index"]} if "block_index" in reader_kwargs else {}
    try:
        names, _ids = get_neo_streams(_NEO_NAMES[data_type], str(folder), **kwargs)
    except Exception as exc:
        raise InputError(f"{data_type}: cannot read {folder.name}: {_reason(exc)}") from None
    return [str(n) for n in names]


def read(data_type: str, folder: Path, stream: str, reader_kwargs: dict[str, Any]) -> Any:
    """One stream as a SpikeInterface recording (its probe attached by the extractor)."""
    from spikeinterface.extractors import read_openephys, read_spikeglx

    kwargs = {k: v for k, v in reader_kwargs.items() if k not in ("stream_name", "stream_id")}
    try:
        if data_type == "spikeglx":
            recording = read_spikeglx(folder, stream_name=stream, **kwargs)
        else:
            recording = read_openephys(folder, stream_name=stream, **kwargs)
    except Exception as exc:
        raise InputError(f"{data_type}: cannot read {stream}: {_reason(exc)}") from None
    if recording.get_num_segments() != 1:
        raise InputError(
            f"{stream}: {recording.get_num_segments()} segments (several recordings or "
            "triggers); point input_uri at one, or set read_recording_kwargs.block_index"
        )
    return _label_groups(recording, probe_name(data_type, stream))


def spike_band(
    data_type: str, folder: Path, reader_kwargs: dict[str, Any], where: str
) -> list[SeriesInfo]:
    """The streams this job sorts (module docstring), with their shapes."""
    names = stream_names(data_type, folder, reader_kwargs)
    wanted = reader_kwargs.get("stream_name") or reader_kwargs.get("stream_id")
    if wanted is not None:
        if wanted not in names:
            raise InputError(
                f"read_recording_kwargs: no stream {wanted!r} in {where}; found: {', '.join(names)}"
            )
        chosen = [wanted]
    else:
        chosen = [n for n in names if _is_spike_band_name(data_type, n)]
    series = [_series(data_type, folder, name, reader_kwargs) for name in chosen]
    if wanted is None:
        series = [s for s in series if s.rate_hz is None or s.rate_hz >= SPIKE_BAND_MIN_HZ]
    if not series:
        raise InputError(
            f"no spike-band (AP) stream in {where}: found {', '.join(names) or 'no streams'}; "
            "set read_recording_kwargs.stream_name to sort one anyway"
        )
    for skipped in sorted(set(names) - {s.path for s in series}):
        log.info("acquisition: not sorting %s (not a probe's spike band)", skipped)
    return series


def _is_spike_band_name(data_type: str, name: str) -> bool:
    if data_type == "spikeglx":
        return name.endswith(".ap")
    return openephys_spike_band(name)


def _series(data_type: str, folder: Path, name: str, reader_kwargs: dict[str, Any]) -> SeriesInfo:
    recording = read(data_type, folder, name, reader_kwargs)
    return SeriesInfo(
        path=name,
        n_frames=int(recording.get_num_samples()),
        n_channels=int(recording.get_num_channels()),
        itemsize=int(np.dtype(recording.get_dtype()).itemsize),
        rate_hz=float(recording.sampling_frequency),
    )


def probe_name(data_type: str, stream: str) -> str:
    """``imec0`` for SpikeGLX's ``imec0.ap``; Open Ephys's ``ProbeA`` for
    ``Record Node 101#Neuropix-PXI-100.ProbeA-AP``; else the stream's own name."""
    if data_type == "spikeglx":
        return stream.split(".")[0]
    name = stream.split("#")[-1]
    name = name.rsplit(".", 1)[-1] if "." in name else name
    for suffix in ("-AP", "_AP"):
        name = name.removesuffix(suffix)
    return name or stream


def _label_groups(recording: Any, probe: str) -> Any:
    """Channel groups named after the probe (and shank): one electrode group per probe."""
    shanks = recording.get_channel_groups()
    distinct = list(dict.fromkeys(str(s) for s in shanks)) if shanks is not None else []
    if len(distinct) > 1:
        labels = [f"{probe}-s{s}" for s in shanks]
    else:
        labels = [probe] * recording.get_num_channels()
    recording.set_property("group", np.asarray(labels))
    return recording


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# ---- the session, for units.nwb and run.json -----------------------------------------------
def session_fields(data_type: str, folder: Path, series: list[SeriesInfo]) -> dict[str, Any]:
    """``SessionInfo``'s fields from the files: the run's name and start, each probe's device
    and electrode group (a probe per stream; shanks become groups of the same device)."""
    devices: dict[str, dict[str, str | None]] = {}
    groups: dict[str, dict[str, str | None]] = {}
    start: datetime | None = None
    for info in series:
        probe = probe_name(data_type, info.path)
        device, description, when = _probe_device(data_type, folder, info.path, probe)
        start = start or when
        devices[device] = {"description": description, "manufacturer": _manufacturer(data_type)}
        groups[probe] = {
            "description": f"{probe}: {description}",
            "location": "unknown",
            "device": device,
        }
    identifier = _run_name(data_type, folder)
    return {
        "identifier": identifier,
        "session_description": f"{_FORMAT_NAMES[data_type]} recording {identifier}",
        "session_start_time": start or _folder_time(folder),
        "session_id": identifier,
        "lab": None,
        "institution": None,
        "subject": None,
        "devices": devices,
        "electrode_groups": groups,
        "experimenter": None,
        "experiment_description": None,
        "keywords": None,
    }


_FORMAT_NAMES = {"spikeglx": "SpikeGLX", "openephys": "Open Ephys"}


def _manufacturer(data_type: str) -> str:
    return "IMEC" if data_type == "spikeglx" else "Open Ephys"


def _probe_device(
    data_type: str, folder: Path, stream: str, probe: str
) -> tuple[str, str, datetime | None]:
    """The device's name and description, and the recording's start where the files give it."""
    if data_type == "spikeglx":
        meta_path = next(folder.rglob(f"*.{stream}.meta"), None)
        meta = parse_spikeglx_meta(meta_path.read_text(errors="replace")) if meta_path else {}
        part = meta.get("imDatPrb_pn") or meta.get("imProbeOpt") or "unknown part"
        serial = meta.get("imDatPrb_sn") or "unknown"
        description = f"Neuropixels probe {part}, serial {serial} (SpikeGLX {stream})"
        return f"Neuropixels {probe}", description, _spikeglx_time(meta.get("fileCreateTime"))
    return f"{probe}", f"Open Ephys stream {stream}", None


def _spikeglx_time(value: str | None) -> datetime | None:
    """``fileCreateTime`` (the acquisition machine's local time, no zone): read as UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _run_name(data_type: str, folder: Path) -> str:
    if data_type == "spikeglx":
        meta = next(folder.rglob("*.ap.meta"), None)
        if meta is not None:
            return meta.name.split(".")[0]
    return folder.name


def _folder_time(folder: Path) -> datetime:
    """Open Ephys names its top folder ``YYYY-MM-DD_HH-MM-SS``: the start, where it is one."""
    for part in (folder, *folder.parents):
        try:
            return datetime.strptime(part.name[:19], "%Y-%m-%d_%H-%M-%S").replace(tzinfo=UTC)
        except ValueError:
            continue
    return datetime.fromtimestamp(folder.stat().st_mtime, tz=UTC)

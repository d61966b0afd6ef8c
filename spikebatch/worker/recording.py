"""Open stage: pick the ElectricalSeries to sort and open it with its probe geometry.

The raw acquisition series is chosen unless ``ELECTRICAL_SERIES_PATH`` names one; with
several candidates and none named, the error lists them so the user can pick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikebatch.worker.errors import InputError

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


def electrical_series_paths(nwb_path: Path) -> list[str]:
    """Every ElectricalSeries in the file, acquisition first (HDF5 paths without leading '/')."""
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and _attr(obj, "neurodata_type") == "ElectricalSeries":
            found.append(name)

    try:
        with h5py.File(nwb_path, "r") as f:
            f.visititems(visit)
    except OSError as exc:
        raise InputError(f"not a readable NWB (HDF5) file: {nwb_path.name}: {exc}") from None
    return sorted(found, key=lambda p: (not p.startswith("acquisition/"), p))


def _attr(obj: Any, name: str) -> str | None:
    value = obj.attrs.get(name)
    return value.decode() if isinstance(value, bytes) else value


def choose_series(nwb_path: Path, requested: str | None) -> str:
    """``requested`` if present, else the single raw acquisition series."""
    paths = electrical_series_paths(nwb_path)
    if requested is not None:
        wanted = requested.strip("/")
        if wanted not in paths:
            raise InputError(
                f"ELECTRICAL_SERIES_PATH: {requested!r} is not an ElectricalSeries in the file; "
                f"found: {', '.join(paths) or 'none'}"
            )
        return wanted
    if not paths:
        raise InputError(f"no ElectricalSeries in {nwb_path.name}")
    raw = [p for p in paths if p.startswith("acquisition/")]
    candidates = raw or paths
    if len(candidates) > 1:
        raise InputError(
            f"several ElectricalSeries in {nwb_path.name}: {', '.join(candidates)}; "
            "set ELECTRICAL_SERIES_PATH to the one to sort"
        )
    return candidates[0]


def open_recording(nwb_path: Path, series_path: str) -> Any:
    """The series as a SpikeInterface recording, with the probe from the electrodes table."""
    from spikeinterface.extractors import read_nwb_recording

    recording = read_nwb_recording(file_path=nwb_path, electrical_series_path=series_path)
    if not recording.has_probe():
        locations = recording.get_property("location")
        if locations is None or not np.isfinite(np.asarray(locations, dtype=float)).all():
            raise InputError(
                f"{series_path}: the electrodes table has no contact positions "
                "(rel_x/rel_y); the sorter needs the probe geometry"
            )
        recording = _attach_probe(recording, np.asarray(locations, dtype=float))
    log.info(
        "open: %s: %d channels, %.1f s at %.0f Hz, %s",
        series_path,
        recording.get_num_channels(),
        recording.get_total_duration(),
        recording.sampling_frequency,
        recording.get_dtype(),
    )
    return recording


def _attach_probe(recording: Any, locations: np.ndarray) -> Any:
    from probeinterface import Probe

    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=locations[:, :2], shapes="circle", shape_params={"radius": 6})
    probe.set_device_channel_indices(np.arange(recording.get_num_channels()))
    return recording.set_probe(probe, in_place=False)


def read_session(nwb_path: Path) -> SessionInfo:
    """The source session's identity, for units.nwb and run.json."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(nwb_path, mode="r", load_namespaces=True) as io:
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
        )

"""What an NWB file holds for sorting: its ElectricalSeries, their shape and rate, and which
of them a job sorts.

Read from the local file, or, before the download, from the file's HDF5 metadata over HTTP
ranges (h5py on :class:`spikebatch.transfer.ranged_file.RangedFile`: a few blocks of object
headers, not the traces), so the scratch budget is checked against the real shape before
the recording is fetched.

Which series are sorted: ``ELECTRICAL_SERIES_PATH`` if set; else every raw acquisition
series in the spike band (one per probe). Series sampled below 10 kHz are LFP (e.g. a
SpikeGLX conversion's ``ElectricalSeriesLF``) and are skipped: no spikes to sort there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikebatch.scratch import Part
from spikebatch.worker.errors import InputError

log = logging.getLogger(__name__)

#: Below this rate a series is LFP, not the spike band Kilosort needs.
SPIKE_BAND_MIN_HZ = 10_000.0


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One ElectricalSeries: where it is and what sorting it costs."""

    path: str  # HDF5 path without the leading '/'
    n_frames: int
    n_channels: int
    itemsize: int
    rate_hz: float | None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def in_acquisition(self) -> bool:
        return self.path.startswith("acquisition/")

    def part(self) -> Part:
        return Part(
            n_frames=self.n_frames,
            n_channels=self.n_channels,
            sampling_frequency=self.rate_hz or 30_000.0,
            itemsize=self.itemsize,
        )

    def describe(self) -> str:
        rate = f"{self.rate_hz / 1000:g} kHz" if self.rate_hz else "rate unknown"
        return f"{self.path} ({self.n_channels} ch, {rate})"


def _attr(obj: Any, name: str) -> str | None:
    value = obj.attrs.get(name)
    return value.decode() if isinstance(value, bytes) else value


def _rate(group: h5py.Group) -> float | None:
    if "starting_time" in group:
        rate = group["starting_time"].attrs.get("rate")
        return float(rate) if rate is not None else None
    if "timestamps" in group:
        head = np.asarray(group["timestamps"][:100], dtype=float)
        steps = np.diff(head)
        if steps.size and np.median(steps) > 0:
            return float(1.0 / np.median(steps))
    return None


def electrical_series_types(h5: h5py.File) -> set[str]:
    """``ElectricalSeries`` and the types the file's cached specs derive from it.

    Found by type, whatever a series is named: an extension's subclass counts (its spec is
    cached in ``/specifications``), ``SpikeEventSeries`` (snippets, not continuous traces)
    and its subclasses do not.
    """
    parents: dict[str, str] = {}

    def collect(spec: dict[str, Any]) -> None:
        for kind in ("groups", "datasets"):
            for item in spec.get(kind) or []:
                if item.get("neurodata_type_def") and item.get("neurodata_type_inc"):
                    parents[item["neurodata_type_def"]] = item["neurodata_type_inc"]
                collect(item)

    specifications = h5.get("specifications")
    if isinstance(specifications, h5py.Group):
        for namespace in specifications.values():
            for version in namespace.values() if isinstance(namespace, h5py.Group) else ():
                for name, source in version.items() if isinstance(version, h5py.Group) else ():
                    if name == "namespace" or not isinstance(source, h5py.Dataset):
                        continue
                    try:
                        raw = source[()]
                        collect(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
                    except (ValueError, TypeError, AttributeError):
                        continue

    def derives(name: str) -> bool:
        seen = set()
        while name not in seen:
            if name == "SpikeEventSeries":
                return False
            if name == "ElectricalSeries":
                return True
            seen.add(name)
            if name not in parents:
                return False
            name = parents[name]
        return False

    return {"ElectricalSeries"} | {t for t in parents if derives(t)}


def read_series(h5: h5py.File) -> list[SeriesInfo]:
    """Every ElectricalSeries (or subclass) in an open file, acquisition first."""
    found: list[SeriesInfo] = []
    types = electrical_series_types(h5)

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group) or _attr(obj, "neurodata_type") not in types:
            return
        data = obj.get("data")
        if not isinstance(data, h5py.Dataset):
            return
        shape = data.shape
        found.append(
            SeriesInfo(
                path=name,
                n_frames=int(shape[0]) if shape else 0,
                n_channels=int(shape[1]) if len(shape) > 1 else 1,
                itemsize=int(data.dtype.itemsize),
                rate_hz=_rate(obj),
            )
        )

    h5.visititems(visit)
    return sorted(found, key=lambda s: (not s.in_acquisition, s.path))


def local_series(nwb_path: Path) -> list[SeriesInfo]:
    """The series of a local NWB file; a clear error if it is not HDF5."""
    try:
        with h5py.File(nwb_path, "r") as h5:
            return read_series(h5)
    except OSError as exc:
        raise InputError(f"not a readable NWB (HDF5) file: {nwb_path.name}: {exc}") from None


def remote_series(url: str, size: int) -> list[SeriesInfo]:
    """The series of a remote NWB file, from its metadata over HTTP ranges (no traces read)."""
    from spikebatch.transfer.ranged_file import RangedFile

    with RangedFile(url, size) as fh, h5py.File(fh, "r") as h5:
        series = read_series(h5)
    log.info(
        "layout: read %s's metadata in %d requests (%d bytes)",
        url.split("?")[0],
        fh.requests,
        fh.bytes_fetched,
    )
    return series


def choose(series: list[SeriesInfo], requested: str | None, filename: str) -> list[SeriesInfo]:
    """The series this job sorts (see the module docstring); a one-line error otherwise."""
    if requested is not None:
        wanted = requested.strip("/")
        for info in series:
            if info.path == wanted:
                return [info]
        raise InputError(
            f"ELECTRICAL_SERIES_PATH: {requested!r} is not an ElectricalSeries in the file; "
            f"found: {', '.join(s.path for s in series) or 'none'}"
        )
    if not series:
        raise InputError(f"no ElectricalSeries in {filename}")
    acquisition = [s for s in series if s.in_acquisition]
    if acquisition:
        spike_band = [s for s in acquisition if s.rate_hz is None or s.rate_hz >= SPIKE_BAND_MIN_HZ]
        if not spike_band:
            raise InputError(
                f"no spike-band ElectricalSeries (>= {SPIKE_BAND_MIN_HZ / 1000:g} kHz) in "
                f"{filename}'s acquisition: {', '.join(s.describe() for s in acquisition)}; "
                "set ELECTRICAL_SERIES_PATH to sort one anyway"
            )
        for skipped in acquisition:
            if skipped not in spike_band:
                log.info("layout: skipping %s: below the spike band (LFP)", skipped.describe())
        return spike_band
    if len(series) > 1:
        raise InputError(
            f"several ElectricalSeries in {filename} and none in acquisition: "
            f"{', '.join(s.path for s in series)}; set ELECTRICAL_SERIES_PATH to the one to sort"
        )
    return series

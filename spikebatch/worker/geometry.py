"""Where the contacts are: the probe geometry a sorter needs, and which source it came from.

In order:

1. the electrodes table's ``rel_x``/``rel_y`` (NWB's positions on the probe: authoritative);
2. ``PROBE``, when the job gives one (a probeinterface JSON, inline or at a URI, or a
   Neuropixels part number such as ``NP1000``, whose first contacts, bank 0, are taken in
   channel order);
3. the electrodes table's ``x``/``y``, when they look like probe coordinates. NWB defines
   x/y/z as the electrode's position *in the brain*, but files written with pynwb directly
   (SpikeForest's on DANDI, 000618) keep the probe layout there, with z constant. The
   guess is logged and recorded in run.json, because brain coordinates (meters, or a 3-D
   track) would make a nonsense layout.

With none of these the run fails in ``open`` with one line naming all three ways.

A SpikeGLX run or an Open Ephys recording carries its probe in its own metadata (the IMRO
table and geometry map; ``settings.xml``), which the extractor reads: those positions are
used, else ``PROBE`` (:func:`decide_from_files`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikebatch.worker.errors import InputError

log = logging.getLogger(__name__)

#: Short names accepted for ``PROBE`` besides the part numbers probeinterface knows.
PROBE_ALIASES = {
    "neuropixels-1.0": "NP1000",
    "neuropixels1": "NP1000",
    "neuropixels-2.0": "NP2000",
    "neuropixels2": "NP2000",
}
_URI_SCHEMES = ("s3://", "https://", "http://", "file://")
#: Plausible nearest-neighbour contact spacing on a probe, in um.
_PITCH_UM = (2.0, 1000.0)
#: Largest plausible extent of one probe's contacts, in um (a 4-shank NP2.0 spans ~10 mm).
_MAX_EXTENT_UM = 20_000.0


@dataclass(frozen=True, slots=True)
class ProbeSetting:
    """``PROBE`` as validated: what it is and where to read it."""

    kind: str  # "inline" | "uri" | "neuropixels"
    value: str  # the JSON text, the URI, or the part number

    def describe(self) -> str:
        return {"inline": "PROBE (inline JSON)", "uri": f"PROBE {self.value}"}.get(
            self.kind, f"PROBE {self.value} (probeinterface's Neuropixels table)"
        )


@dataclass(frozen=True, slots=True)
class Geometry:
    """The contact positions of one series and where they came from (for run.json)."""

    source: str  # "rel_x/rel_y" | "PROBE" | "x/y"
    detail: str
    positions: np.ndarray | None = None  # (n, 2) um; None: SpikeInterface read rel_x/rel_y
    probegroup: Any = None  # a probeinterface ProbeGroup from PROBE

    def as_record(self) -> dict[str, str]:
        return {"source": self.source, "detail": self.detail}


def neuropixels_part_numbers() -> list[str]:
    from probeinterface.neuropixels_tools import _load_np_probe_features

    return sorted(_load_np_probe_features()["neuropixels_probes"])


def parse_probe(raw: str) -> ProbeSetting:
    """``PROBE`` checked at config time (a ``ValueError`` says what is wrong); nothing fetched."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            group = _probegroup_from_json(text)
        except ValueError as exc:
            raise ValueError(f"inline probeinterface JSON: {exc}") from None
        if group.get_contact_count() == 0:
            raise ValueError("inline probeinterface JSON has no contacts")
        return ProbeSetting("inline", text)
    if text.startswith(_URI_SCHEMES):
        if len(text.split("://", 1)[1]) < 2:
            raise ValueError(f"no path in {text!r}")
        return ProbeSetting("uri", text)
    name = PROBE_ALIASES.get(text.lower(), text)
    if name in neuropixels_part_numbers():
        return ProbeSetting("neuropixels", name)
    raise ValueError(
        "expected a probeinterface JSON (inline, or an s3://, https:// or file:// URI) or a "
        f"Neuropixels part number such as NP1000 ({', '.join(PROBE_ALIASES)}), got {raw!r}"
    )


def _probegroup_from_json(text: str) -> Any:
    from probeinterface import ProbeGroup

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    try:
        return ProbeGroup.from_dict(data)
    except Exception as exc:  # probeinterface raises KeyError/TypeError on a wrong shape
        raise ValueError(
            f"not a probeinterface probe group ({type(exc).__name__}: {exc})"
        ) from None


def load_probe(setting: ProbeSetting, n_channels: int) -> Any:
    """The ProbeGroup ``PROBE`` names, wired to ``n_channels`` channels in order."""
    from probeinterface import ProbeGroup

    if setting.kind == "neuropixels":
        from probeinterface.neuropixels_tools import build_neuropixels_probe

        full = build_neuropixels_probe(setting.value)
        if full.get_contact_count() < n_channels:
            raise InputError(
                f"PROBE {setting.value} has {full.get_contact_count()} contacts; "
                f"the series has {n_channels} channels"
            )
        probe = full.get_slice(np.arange(n_channels))  # bank 0, in channel order
        probe.set_device_channel_indices(np.arange(n_channels))
        group = ProbeGroup()
        group.add_probe(probe)
        return group
    if setting.kind == "inline":
        text = setting.value
    else:
        from spikebatch import transfer

        try:
            text = transfer.read_bytes(setting.value).decode("utf-8")
        except (transfer.TransferError, UnicodeDecodeError) as exc:
            raise InputError(f"PROBE: cannot read {setting.value}: {exc}") from None
    try:
        group = _probegroup_from_json(text)
    except ValueError as exc:
        raise InputError(f"PROBE: {exc}") from None
    count = group.get_contact_count()
    if count != n_channels:
        raise InputError(
            f"PROBE has {count} contacts; the series has {n_channels} channels (one per contact)"
        )
    indices = group.get_global_device_channel_indices()["device_channel_indices"]
    if (np.asarray(indices) < 0).any():  # not wired: contacts in channel order
        start = 0
        for probe in group.probes:
            probe.set_device_channel_indices(np.arange(start, start + probe.get_contact_count()))
            start += probe.get_contact_count()
    return group


def decide(recording: Any, columns: dict[str, np.ndarray], probe: ProbeSetting | None) -> Geometry:
    """Where this series' contact positions come from (see the module docstring).

    ``columns`` are the electrodes table's ``x``, ``y``, ``z`` for the series' channels,
    where the table has them.
    """
    n = recording.get_num_channels()
    if recording.has_probe():  # SpikeInterface built it from rel_x/rel_y
        if probe is not None:
            log.warning("geometry: the file has rel_x/rel_y; %s is not used", probe.describe())
        detail = "the electrodes table's probe-relative positions"
        if probe is not None:
            detail += f"; {probe.describe()} not used (the file's positions win)"
        return Geometry("rel_x/rel_y", detail)
    if probe is not None:
        group = load_probe(probe, n)
        return Geometry("PROBE", probe.describe(), probegroup=group)
    verdict = xy_verdict(columns)
    if verdict is None:
        positions = np.column_stack([columns["x"], columns["y"]]).astype(float)
        detail = (
            "the electrodes table's x/y, taken as probe coordinates in um (no rel_x/rel_y; "
            "distinct contacts, probe-like spacing, z constant): check the layout in "
            "report/units_summary.png"
        )
        log.warning("geometry: %s", detail)
        return Geometry("x/y", detail, positions=positions)
    raise InputError(
        "the electrodes table has no contact positions (rel_x/rel_y)"
        + (f" and its x/y are not probe coordinates ({verdict})" if verdict != "no x/y" else "")
        + "; give them one of three ways: rel_x/rel_y in the electrodes table, x/y holding the "
        "probe layout in um, or PROBE (a probeinterface JSON or a Neuropixels part number)"
    )


#: Where each format's extractor finds the probe.
_PROBE_FILES = {"spikeglx": "the SpikeGLX .meta (IMRO table)", "openephys": "settings.xml"}


def decide_from_files(recording: Any, probe: ProbeSetting | None, data_type: str) -> Geometry:
    """The positions of a SpikeGLX / Open Ephys stream: the files' probe, else ``PROBE``."""
    where = _PROBE_FILES.get(data_type, data_type)
    if recording.has_probe():
        detail = f"the probe in {where}"
        if probe is not None:
            log.warning("geometry: %s gives the probe; %s is not used", where, probe.describe())
            detail += f"; {probe.describe()} not used (the files' probe wins)"
        return Geometry(data_type, detail)
    if probe is not None:
        group = load_probe(probe, recording.get_num_channels())
        return Geometry("PROBE", probe.describe(), probegroup=group)
    raise InputError(
        f"no probe in {where} (not a Neuropixels recording?): give PROBE, a probeinterface "
        "JSON or a Neuropixels part number"
    )


def xy_verdict(columns: dict[str, np.ndarray]) -> str | None:
    """None when x/y look like one probe's contact layout in um, else why not."""
    if "x" not in columns or "y" not in columns:
        return "no x/y"
    xy = np.column_stack([columns["x"], columns["y"]]).astype(float)
    if not np.isfinite(xy).all():
        return "some are missing (NaN)"
    z = np.asarray(columns.get("z", np.zeros(len(xy))), dtype=float)
    if np.isfinite(z).all() and np.ptp(z) > 0:
        return "z varies across contacts: brain coordinates"
    if len(xy) > 1 and len(np.unique(xy, axis=0)) < len(xy):
        return "several channels share one position"
    if len(xy) > 1:
        distances = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(distances, np.inf)
        pitch = float(np.median(distances.min(axis=1)))
        if not _PITCH_UM[0] <= pitch <= _PITCH_UM[1]:
            return f"median contact spacing {pitch:g} is not a probe's pitch in um"
        if float(np.ptp(xy, axis=0).max()) > _MAX_EXTENT_UM:
            return "they span more than a probe"
    return None


def apply(recording: Any, geometry: Geometry) -> Any:
    """The recording with its probe attached as ``geometry`` says."""
    if geometry.probegroup is not None:
        return recording.set_probegroup(geometry.probegroup, in_place=False)
    if geometry.positions is None:
        return recording
    from probeinterface import Probe

    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=geometry.positions, shapes="circle", shape_params={"radius": 6})
    probe.set_device_channel_indices(np.arange(recording.get_num_channels()))
    return recording.set_probe(probe, in_place=False)


def electrode_columns(recording: Any) -> dict[str, np.ndarray]:
    """The series' channels' x/y/z, as SpikeInterface read them into channel properties."""
    return {
        name: np.asarray(values)
        for name in ("x", "y", "z")
        if (values := recording.get_property(name)) is not None
    }

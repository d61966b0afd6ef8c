"""Export stage: ``units.nwb`` (neuroconv Units table linked to the source session), inspected.

The file carries the source session's identity (start time, subject, session id,
experimenter, experiment description, keywords) and names the source asset, so a Units
table can be matched back to the recording it came from. Every column is described
(:mod:`.nwb_columns`) and a column with no value at all (every unit NaN) is left out, so
the archive's users read the file without guessing. nwbinspector must report no CRITICAL
issue, otherwise the stage fails.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.worker import nwb_columns
from spikebatch.worker.errors import WorkerError
from spikebatch.worker.recording import SessionInfo

log = logging.getLogger(__name__)


class UnitsNwb:
    """One ``units.nwb`` for the whole run: every part's units, each tied to its electrode group.

    Parts are added as they finish (their analyzers are deleted afterwards); the file is
    written once at the end. With several parts each unit is named ``<part>/<unit id>`` and
    the devices and electrode groups keep the source file's names and descriptions.
    """

    def __init__(self, session: SessionInfo, *, source: str, sorter: str) -> None:
        from pynwb import NWBFile

        self.session = session
        self.source = source
        self.sorter = sorter
        self.nwbfile = NWBFile(
            session_description=session.session_description,
            identifier=str(uuid.uuid4()),
            session_start_time=session.session_start_time,
            session_id=session.session_id,
            lab=session.lab,
            institution=session.institution,
            subject=_subject(session),
            experimenter=list(session.experimenter) if session.experimenter else None,
            experiment_description=session.experiment_description,
            keywords=list(session.keywords) if session.keywords else None,
            source_script=f"spikebatch worker: {sorter} on {source}",
            source_script_file_name="spikebatch/worker/pipeline.py",
            notes=f"Spike sorting of {source} (source NWB identifier {session.identifier}).",
            was_generated_by=[["spikebatch", _version()]],
        )
        self._unit_groups: list[str] = []
        self.sampling_frequency: float | None = None

    def add(
        self,
        analyzer: Any,
        *,
        part: str = "",
        property_descriptions: dict[str, str] | None = None,
    ) -> int:
        """Add one part's units (spike times, templates, quality and template metrics, and
        the sorting's properties, e.g. the quality ``label``); returns how many.

        Columns are described by :mod:`.nwb_columns` (``property_descriptions`` adds to or
        overrides it); one whose every value is NaN is left out.
        """
        from neuroconv.tools.spikeinterface import add_sorting_analyzer_to_nwbfile

        recording = analyzer.recording
        sorting = analyzer.sorting
        groups = _unit_groups(analyzer)
        if part:  # unique names across parts (neuroconv merges units that share a name)
            sorting.set_property("unit_name", [f"{part}/{u}" for u in sorting.unit_ids])
        _metrics_as_properties(analyzer)
        empty = _all_nan_properties(sorting)
        if empty:
            log.info("export: leaving out columns with no value (all NaN): %s", ", ".join(empty))
        add_sorting_analyzer_to_nwbfile(
            analyzer,
            nwbfile=self.nwbfile,
            metadata=self._ecephys_metadata(set(groups), recording.get_property_keys()),
            recording=recording,
            property_descriptions={
                **nwb_columns.unit_descriptions(sorting.get_property_keys()),
                **(property_descriptions or {}),
            },
            skip_properties=empty,
            units_description=f"Units sorted by {self.sorter} (spikebatch) from {self.source}",
        )
        self._unit_groups += groups
        self.sampling_frequency = analyzer.sampling_frequency
        return len(groups)

    def _ecephys_metadata(self, groups: set[str], channel_properties: list[str]) -> dict[str, Any]:
        """Devices and electrode groups as the source file describes them (neuroconv's
        dict-based metadata, keyed by name; groups match the recording's group names), and
        a description of each channel property neuroconv writes to the electrodes table."""
        known = {g: i for g, i in self.session.electrode_groups.items() if g in groups}
        devices = {i["device"] for i in known.values() if i.get("device")}
        return {
            "Devices": {
                name: {
                    "name": name,
                    **{k: v for k, v in self.session.devices.get(name, {}).items() if v},
                }
                for name in sorted(devices)
            },
            "Ecephys": {
                "ElectrodeGroups": {
                    name: {
                        "name": name,
                        "description": info.get("description") or name,
                        "location": info.get("location") or "unknown",
                        **({"device_metadata_key": info["device"]} if info.get("device") else {}),
                    }
                    for name, info in sorted(known.items())
                },
                "Electrodes": nwb_columns.electrode_descriptions(channel_properties),
            },
        }

    def write(self, path: Path) -> None:
        """Write the file, with each unit's ``electrode_group`` (where its peak channel is)."""
        from pynwb import NWBHDF5IO

        units = self.nwbfile.units
        if units is not None:
            if units.resolution is None and self.sampling_frequency:
                units.resolution = 1.0 / self.sampling_frequency
            electrode_groups = self.nwbfile.electrode_groups
            if self._unit_groups and all(g in electrode_groups for g in self._unit_groups):
                units.add_column(
                    name="electrode_group",
                    description=nwb_columns.UNIT_COLUMNS["electrode_group"],
                    data=[electrode_groups[g] for g in self._unit_groups],
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        with NWBHDF5IO(path, mode="w") as io:
            io.write(self.nwbfile)


def _subject(session: SessionInfo) -> Any:
    """The source's subject (None if it names none), described as the source session's
    subject when the source gives no description: nothing is said that the source does not."""
    from pynwb.file import Subject

    if not session.subject:
        return None
    fields = dict(session.subject)
    if not fields.get("description"):
        session_name = session.session_id or session.identifier
        fields["description"] = (
            f"The subject of source session {session_name}; the source file does not describe it."
        )
    return Subject(**fields)


def _metrics_as_properties(analyzer: Any) -> None:
    """Set the quality and template metrics as properties of ``analyzer.sorting`` (as the
    ``label`` is): neuroconv then writes them with our descriptions (it would give its
    metrics SpikeInterface's, over any passed) and can skip an all-NaN one."""
    sorting = analyzer.sorting
    unit_ids = list(sorting.unit_ids)
    for extension in ("quality_metrics", "template_metrics"):
        if not analyzer.has_extension(extension):
            continue
        table = analyzer.get_extension(extension).get_data()
        for column in table.columns:
            if column not in sorting.get_property_keys():  # the sorting's own wins, as in neuroconv
                sorting.set_property(column, table.loc[unit_ids, column].to_numpy())


def _all_nan_properties(sorting: Any) -> list[str]:
    """The sorting's float properties with no value at all: columns that would say nothing."""
    return [key for key in sorting.get_property_keys() if _all_nan(sorting.get_property(key))]


def _all_nan(values: Any) -> bool:
    array = np.asarray(values)
    return array.dtype.kind == "f" and array.size > 0 and bool(np.isnan(array).all())


def _unit_groups(analyzer: Any) -> list[str]:
    """Each unit's channel group (the electrode group of its peak channel), as a string."""
    recording_groups = analyzer.get_recording_property("group")
    channel_ids = list(analyzer.channel_ids)
    peak = analyzer.get_main_channels(outputs="id", with_dict=True)
    if recording_groups is None:
        return ["" for _ in analyzer.unit_ids]
    return [str(recording_groups[channel_ids.index(peak[u])]) for u in analyzer.unit_ids]


def _version() -> str:
    from spikebatch import __version__

    return __version__


def inspect_units_nwb(path: Path, *, tolerated: tuple[str, ...] = ()) -> dict[str, int]:
    """nwbinspector's issue counts by importance; raise on any CRITICAL issue.

    ``tolerated`` names checks whose findings are counted but fail nothing: a SpikeGLX or
    Open Ephys recording names no subject, so its units.nwb has none until a person adds
    it (DANDI needs one: the publication says so, the sort stands).
    """
    from nwbinspector import Importance, inspect_nwbfile

    messages = list(inspect_nwbfile(nwbfile_path=path))
    counts = Counter(m.importance.name for m in messages)
    # CRITICAL and worse (PYNWB_VALIDATION, ERROR) fail the stage; best-practice notes do not.
    critical = [
        m
        for m in messages
        if m.importance.value >= Importance.CRITICAL.value
        and m.check_function_name not in tolerated
    ]
    for m in messages:
        log.info("nwbinspector %s: %s (%s)", m.importance.name, m.message, m.object_name)
    if critical:
        first = critical[0]
        raise WorkerError(
            f"units.nwb fails nwbinspector: {len(critical)} CRITICAL-or-worse issue(s), first: "
            f"{first.message} ({first.object_type} {first.object_name})"
        )
    return dict(counts)

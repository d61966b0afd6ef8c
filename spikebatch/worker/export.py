"""Export stage: ``units.nwb`` (neuroconv Units table linked to the source session), inspected.

The file carries the source session's identity (start time, subject, session id) and names
the source asset, so a Units table can be matched back to the recording it came from.
nwbinspector must report no CRITICAL issue, otherwise the stage fails.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from spikebatch.worker.errors import WorkerError
from spikebatch.worker.recording import SessionInfo

log = logging.getLogger(__name__)


def write_units_nwb(
    analyzer: Any, session: SessionInfo, path: Path, *, source: str, sorter: str
) -> None:
    """Write the sorted units (spike times, templates, quality metrics) to ``path``."""
    from neuroconv.tools.spikeinterface import add_sorting_analyzer_to_nwbfile
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject

    nwbfile = NWBFile(
        session_description=session.session_description,
        identifier=str(uuid.uuid4()),
        session_start_time=session.session_start_time,
        session_id=session.session_id,
        lab=session.lab,
        institution=session.institution,
        subject=Subject(**session.subject) if session.subject else None,
        source_script=f"spikebatch worker: {sorter} on {source}",
        source_script_file_name="spikebatch/worker/pipeline.py",
        notes=f"Spike sorting of {source} (source NWB identifier {session.identifier}).",
        was_generated_by=[["spikebatch", _version()]],
    )
    add_sorting_analyzer_to_nwbfile(
        analyzer,
        nwbfile=nwbfile,
        units_description=f"Units sorted by {sorter} (spikebatch) from {source}",
    )
    if nwbfile.units is not None and nwbfile.units.resolution is None:
        nwbfile.units.resolution = 1.0 / analyzer.sampling_frequency
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(path, mode="w") as io:
        io.write(nwbfile)


def _version() -> str:
    from spikebatch import __version__

    return __version__


def inspect_units_nwb(path: Path) -> dict[str, int]:
    """nwbinspector's issue counts by importance; raise on any CRITICAL issue."""
    from nwbinspector import Importance, inspect_nwbfile

    messages = list(inspect_nwbfile(nwbfile_path=path))
    counts = Counter(m.importance.name for m in messages)
    # CRITICAL and worse (PYNWB_VALIDATION, ERROR) fail the stage; best-practice notes do not.
    critical = [m for m in messages if m.importance.value >= Importance.CRITICAL.value]
    for m in messages:
        log.info("nwbinspector %s: %s (%s)", m.importance.name, m.message, m.object_name)
    if critical:
        first = critical[0]
        raise WorkerError(
            f"units.nwb fails nwbinspector: {len(critical)} CRITICAL-or-worse issue(s), first: "
            f"{first.message} ({first.object_type} {first.object_name})"
        )
    return dict(counts)

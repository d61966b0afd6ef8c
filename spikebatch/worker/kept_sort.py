"""A rerun of a run that failed after its sort reuses that sort instead of paying for it again.

A run that fails in postprocess, export or publish uploads each ``sorting/`` it had
(``pipeline._upload_sortings``). Its rerun (the same ``RUN_ID``) fetches them before it clears
the run's output, and sorts a part again only if anything that decides the sort differs: the
input (its verified digests), the series, the sorter, its version and parameters, the
preprocessing, the duration sorted, or SpikeInterface's version. An input whose digest was
not verified is never trusted to be the same, and is sorted again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikebatch import transfer
from spikebatch.worker.errors import Interrupted, one_line

log = logging.getLogger(__name__)

#: Settings that change what the sorter is given (the others act after the sort, or say
#: where things go).
_SORT_SETTINGS = (
    "ELECTRICAL_SERIES_PATH",
    "SORT_BY_GROUP",
    "PROBE",
    "DATA_TYPE",
    "READ_RECORDING_KWARGS",
)
#: What the input record says about the traces (its digests are checked apart).
_INPUT_FIELDS = (
    "size",
    "data_type",
    "electrical_series_paths",
    "n_channels",
    "sampling_frequency",
    "duration_s",
    "sorted_duration_s",
)


def sort_identity(record: dict[str, Any]) -> str | None:
    """Everything in a run record that decides its sorts, as canonical JSON; None when the
    input's digests were not all verified (nothing proves a rerun reads the same bytes)."""
    rec_input = record.get("input") or {}
    files = rec_input.get("files")
    if files:  # a folder input: each file's digest
        if not all(f.get("verified") for f in files):
            return None
        digests = sorted((f["path"], f["digest"]["name"], f["digest"]["value"]) for f in files)
    else:
        digest = rec_input.get("digest") or {}
        if not digest.get("verified"):
            return None
        digests = [digest.get("name"), digest.get("value")]
    settings = record.get("settings") or {}
    identity = {
        "digests": digests,
        "input": {k: rec_input.get(k) for k in _INPUT_FIELDS},
        "settings": {k: settings.get(k) for k in _SORT_SETTINGS},
        "sorter": record.get("sorter"),
        "preprocessing": record.get("preprocessing"),
        "max_duration_s": record.get("max_duration_s"),
        "spikeinterface": (record.get("versions") or {}).get("spikeinterface"),
    }
    return json.dumps(identity, sort_keys=True, default=str)


@dataclass
class KeptSorts:
    """The sortings an earlier failed run of this RUN_ID kept, fetched into scratch."""

    identity: str
    folder: Path
    failed_at: str | None
    #: The failed run's sort stage, wall and CPU seconds: what the reused sorts cost (a
    #: study compares sorters on them, ``study.results``).
    sort_s: float | None = None
    cpu_s: float | None = None

    def reused(self, record: dict[str, Any], part: str | None) -> None:
        """Note in ``record`` (``sort_reused``) that ``part``'s sort is the failed run's."""
        entry = record.setdefault(
            "sort_reused",
            {
                "from_run_failed_at": self.failed_at,
                "sort_s": self.sort_s,
                "cpu_s": self.cpu_s,
                "parts": [],
            },
        )
        entry["parts"].append(part)

    def for_part(self, where: str, record: dict[str, Any]) -> Path | None:
        """The kept ``sorting/`` for the part whose results go to ``where`` ("" or
        ``probes/<key>``), if this run would sort it the same way."""
        folder = self.folder / where / "sorting"
        if not folder.is_dir():
            return None
        if sort_identity(record) != self.identity:
            log.info("kept sort of %s not reused: the input or the sort differs", where or "run")
            return None
        return folder


def fetch_kept(previous: dict[str, Any] | None, dest_uri: str, scratch: Path) -> KeptSorts | None:
    """Download what ``previous`` (the run record found at the output) kept after failing,
    before this run clears it. Best effort: anything missing means sorting again."""
    if not previous or previous.get("status") != "failed" or not previous.get("kept_after_failure"):
        return None
    identity = sort_identity(previous)
    if identity is None:
        return None
    folder = scratch / "kept"
    kept = [o for o in previous.get("outputs") or [] if "sorting/" in o]
    try:
        for rel in kept:
            transfer.download(f"{dest_uri}/{rel}", folder / rel, progress=False)
    except Interrupted:
        raise  # a stop is honoured here too
    except Exception as exc:
        log.warning("the earlier run's sorting could not be fetched: %s", one_line(exc))
        return None
    log.info("fetched the sorting an earlier failed run kept (%d objects)", len(kept))
    return KeptSorts(
        identity,
        folder,
        previous.get("finished_at"),
        sort_s=(previous.get("timings_s") or {}).get("sort"),
        cpu_s=(previous.get("cpu_s") or {}).get("sort"),
    )

"""Recording formats a job may name: NWB, a SpikeGLX run, an Open Ephys recording.

The one home of what the request model, the worker's settings, the upload trigger and the
worker's fetch stage agree on: the ``data_type`` names, the validated reader options
(``read_recording_kwargs``), which file names make which format, and the SpikeGLX
``.meta``/``.bin`` pair check that both the upload Lambda and the worker make before any
byte of the traces is read. Pure Python (no neo, no SpikeInterface) so the Lambda can
import it; the worker reads the recordings themselves with SpikeInterface's extractors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DataType = Literal["nwb", "spikeglx", "openephys"]
DATA_TYPES: tuple[str, ...] = ("nwb", "spikeglx", "openephys")

#: A SpikeGLX probe's spike band: ``<run>_g0_t0.imec0.ap.bin`` (+ ``.ap.meta``).
SPIKEGLX_AP = re.compile(r"^(?P<stem>.+)\.(?P<probe>imec\d*)\.ap\.(?P<ext>bin|meta)$")
#: Open Ephys binary format's description of one recording.
OPENEPHYS_STRUCTURE = "structure.oebin"


class ReadRecordingKwargs(BaseModel):
    """Options for SpikeInterface's reader (``read_spikeglx`` / ``read_openephys``).

    Only these keys; anything else is refused. Without ``stream_name``/``stream_id`` every
    probe's spike-band (AP) stream is sorted; with one, only that stream.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    stream_name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="the one stream to sort, e.g. 'imec0.ap' or 'Record Node 101#...ProbeA-AP'",
    )
    stream_id: str | None = Field(
        None, min_length=1, max_length=256, description="the same, by the reader's stream id"
    )
    block_index: int | None = Field(
        None, ge=0, description="Open Ephys: which experiment/recording (block) to read"
    )

    def reader_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def parse_read_recording_kwargs(raw: Any) -> ReadRecordingKwargs | None:
    """A JSON text or a dict; ``ValueError`` with one line naming the bad key."""
    from spikebatch.contract import json_object

    if isinstance(raw, ReadRecordingKwargs):
        return raw
    raw = json_object(raw)
    if raw is None:
        return None
    try:
        return ReadRecordingKwargs.model_validate(dict(raw))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "value"
        if error["type"] == "extra_forbidden":
            known = ", ".join(ReadRecordingKwargs.model_fields)
            raise ValueError(f"unknown key {where!r}; known: {known}") from None
        raise ValueError(f"{where}: {error['msg']}") from None


def detect(names: Iterable[str]) -> DataType | None:
    """The format a listing of relative file names holds (None: nothing we can read).

    A SpikeGLX AP pair wins over an ``.nwb`` beside it only when there is no ``.nwb``; a
    listing that holds both kinds is ambiguous and the caller says so.
    """
    kinds = formats_in(names)
    return kinds[0] if len(kinds) == 1 else None


def formats_in(names: Iterable[str]) -> list[DataType]:
    """Every format with files in the listing, in a fixed order."""
    found: set[str] = set()
    for name in names:
        base = PurePosixPath(name).name
        if base.lower().endswith(".nwb"):
            found.add("nwb")
        elif SPIKEGLX_AP.match(base):
            found.add("spikeglx")
        elif base == OPENEPHYS_STRUCTURE:
            found.add("openephys")
    return [t for t in DATA_TYPES if t in found]  # type: ignore[misc]


def parse_spikeglx_meta(text: str) -> dict[str, str]:
    """A ``.meta`` file's ``key=value`` lines (SpikeGLX's own format; ``~`` keys kept)."""
    meta: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


def spikeglx_pair_problem(meta_name: str, meta_text: str, bin_size: int | None) -> str | None:
    """What is wrong with a SpikeGLX ``.meta`` and its ``.bin`` (None: a consistent pair).

    The ``.bin`` must exist and hold exactly ``fileSizeBytes``, a whole number of
    ``nSavedChans`` int16 samples; a ``.meta`` missing those keys is not SpikeGLX's.
    """
    bin_name = meta_name[: -len(".meta")] + ".bin"
    meta = parse_spikeglx_meta(meta_text)
    missing = [k for k in ("nSavedChans", "fileSizeBytes") if k not in meta]
    if missing:
        return f"{meta_name}: not a SpikeGLX .meta (no {', '.join(missing)})"
    try:
        n_channels, declared = int(meta["nSavedChans"]), int(meta["fileSizeBytes"])
    except ValueError:
        return f"{meta_name}: nSavedChans and fileSizeBytes must be whole numbers"
    if n_channels <= 0:
        return f"{meta_name}: nSavedChans is {n_channels}"
    if bin_size is None:
        return f"{meta_name}: its {PurePosixPath(bin_name).name} is missing (upload the .bin first)"
    if bin_size != declared:
        return (
            f"{PurePosixPath(bin_name).name}: {bin_size} bytes, but its .meta says "
            f"fileSizeBytes={declared} (truncated or still uploading?)"
        )
    if declared % (2 * n_channels):
        return (
            f"{PurePosixPath(bin_name).name}: {declared} bytes is not a whole number of "
            f"{n_channels}-channel int16 samples (nSavedChans={n_channels})"
        )
    return None


def spikeglx_ap_part(name: str) -> str | None:
    """``"bin"`` or ``"meta"`` for a SpikeGLX probe's AP-band file name (a key's last
    segment counts); None for anything else (LF, NI, other files)."""
    found = SPIKEGLX_AP.match(PurePosixPath(name).name)
    return found["ext"] if found else None


@dataclass(frozen=True, slots=True)
class SpikeglxShape:
    """A probe stream's shape from its ``.meta``: what is sorted (the sync channel is not)."""

    n_frames: int
    n_channels: int
    rate_hz: float | None

    @property
    def sorted_bytes(self) -> int:
        """The int16 traces a sort reads: what an NWB file of the same traces holds."""
        return self.n_frames * self.n_channels * 2


def spikeglx_shape(meta: dict[str, str], bin_size: int | None = None) -> SpikeglxShape:
    """Frames from ``fileSizeBytes`` (or the ``.bin``'s size), channels without the sync
    channel (``snsApLfSy``'s third count), the rate from ``imSampRate``."""
    saved = int(meta["nSavedChans"])
    size = bin_size if bin_size is not None else int(meta.get("fileSizeBytes") or 0)
    counts = [int(c) for c in meta.get("snsApLfSy", "").split(",") if c.strip().isdigit()]
    sync = counts[2] if len(counts) == 3 else 0
    rate = float(meta.get("imSampRate") or meta.get("niSampRate") or 0) or None
    return SpikeglxShape(size // (2 * saved), saved - sync, rate)


#: Open Ephys stream names that never hold spikes, whatever their rate.
NOT_SPIKE_BAND = ("LFP", "ADC", "NI-DAQ", "NIDAQ", "SYNC", "AUX")


def openephys_spike_band(name: str) -> bool:
    """Whether an Open Ephys stream (or a path through its folder) may be a probe's AP band."""
    upper = name.upper()
    return not any(tag in upper for tag in NOT_SPIKE_BAND)

"""What the stored samples mean, and how they become the sorter's int16 input.

Integer traces keep the file's ``conversion``/``channel_conversion``/``offset`` (SpikeInterface
reads them into the channel gains) and go to the sorter as they are stored.

Float traces are different: a file written with pynwb directly (SpikeForest's on DANDI,
000618) stores float traces with the default ``conversion`` of 1.0, which NWB reads as volts,
while the values are in uV. So the unit is decided, in order:

1. ``conversion`` (or ``channel_conversion``) other than 1: the file says it;
2. the series' ``description``/``comments`` naming uV or mV;
3. the data's magnitude: the median channel noise (MAD of the 300 Hz high-passed samples) is
   ~1-100 in uV, ~1e-3-0.1 in mV and ~1e-6-1e-4 in volts; the unit whose noise is nearest
   plausible wins, and is logged.

Then the traces are scaled to int16 (what Kilosort 2/3 read, and the scratch budget's
model) with a step set by one pass over the data: the largest sample maps to 32,000, so
nothing clips, and the step (recorded in run.json beside the noise) is a tiny fraction of
the noise, so nothing meaningful is lost.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.worker.errors import InputError

log = logging.getLogger(__name__)

#: uV per stored unit, for the units float traces may be stored in.
UV_PER_UNIT = {"V": 1e6, "mV": 1e3, "uV": 1.0}
#: Median-channel noise (in stored units) at or above which each unit is taken, in order.
_NOISE_FLOOR = (("uV", 0.3), ("mV", 3e-4), ("V", 0.0))
#: The largest |sample| maps here: int16 headroom left for rounding.
INT16_TARGET = 32_000
_TEXT_UNITS = (
    ("uV", re.compile(r"(micro ?volts?|\bu[vV]\b|\bµ[vV]\b|μV)", re.IGNORECASE)),
    ("mV", re.compile(r"(milli ?volts?|\bmV\b)")),
)


@dataclass(frozen=True, slots=True)
class TraceScale:
    """How one series' samples are read as uV and handed to the sorter (run.json ``traces``)."""

    dtype: str
    basis: str  # "integer, the file's conversion" | "conversion" | "description" | "magnitude"
    unit: str | None = None  # float traces: what the values are in ("V", "mV", "uV")
    noise_uv: float | None = None  # median channel noise (MAD, high-passed) in uV
    int16_step_uv: float | None = None  # uV per int16 step of the sorter input
    max_abs_uv: float | None = None

    @property
    def converted(self) -> bool:
        return self.int16_step_uv is not None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"dtype": self.dtype, "unit_from": self.basis}
        if self.unit is not None:
            record["unit"] = self.unit
        if self.converted:
            noise_uv = self.noise_uv or 0.0
            record.update(
                sorter_input="int16",
                int16_step_uv=self.int16_step_uv,
                max_abs_uv=self.max_abs_uv,
                noise_uv=round(noise_uv, 3),
                step_over_noise=round(self.int16_step_uv / noise_uv, 5) if noise_uv else None,
            )
        return record


def stored_integers(recording: Any, basis: str) -> TraceScale:
    """Integer samples go to the sorter as stored, their gains (``basis``) giving uV."""
    dtype = np.dtype(recording.get_dtype())
    if dtype.kind not in "iu":
        raise InputError(f"expected integer samples, found {dtype.name}")
    return TraceScale(dtype.name, f"integer, {basis}")


def decide(nwb_path: Path, series_path: str, recording: Any) -> TraceScale:
    """The unit of ``series_path``'s samples and, for floats, the int16 step (one data pass)."""
    dtype = np.dtype(recording.get_dtype())
    if dtype.kind in "iu":
        return stored_integers(recording, "the file's conversion")
    conversion, has_channel_conversion, text = _series_attrs(nwb_path, series_path)
    noise = _median_noise(recording)
    if conversion != 1.0 or has_channel_conversion:
        unit, basis = None, "conversion"
        gains = np.asarray(recording.get_channel_gains(), dtype=float)
        offsets = np.asarray(recording.get_channel_offsets(), dtype=float)
    else:
        unit, basis = _unit_from_text(text), "description"
        if unit is None:
            unit, basis = _unit_from_noise(noise, series_path), "magnitude"
        gains = np.full(recording.get_num_channels(), UV_PER_UNIT[unit])
        offsets = np.zeros(recording.get_num_channels())
    max_abs = _max_abs_uv(recording, gains, offsets, series_path)
    step = max(max_abs, 1e-12) / INT16_TARGET
    scale = TraceScale(
        dtype.name,
        basis,
        unit=unit or "file conversion",
        noise_uv=float(noise * np.median(gains)),
        int16_step_uv=float(step),
        max_abs_uv=round(float(max_abs), 3),
    )
    log.warning(
        "traces: %s: %s samples in %s (from the %s; median noise %.3g uV); to the "
        "sorter as int16 at %.4g uV per step",
        series_path,
        dtype.name,
        scale.unit,
        basis,
        scale.noise_uv,
        step,
    )
    return scale


def to_sorter_input(recording: Any, scale: TraceScale) -> Any:
    """The recording as the sorter gets it: float traces scaled to int16 (uV gains kept)."""
    if not scale.converted:
        return recording
    from spikeinterface.preprocessing import scale as scale_traces

    assert scale.int16_step_uv is not None
    if scale.basis == "conversion":
        gains = np.asarray(recording.get_channel_gains(), dtype=float)
        offsets = np.asarray(recording.get_channel_offsets(), dtype=float)
    else:
        gains = np.full(recording.get_num_channels(), UV_PER_UNIT[scale.unit or "uV"])
        offsets = np.zeros(recording.get_num_channels())
    step = scale.int16_step_uv
    as_int16 = scale_traces(recording, gain=gains / step, offset=offsets / step, dtype="int16")
    as_int16.set_channel_gains(step)
    as_int16.set_channel_offsets(0.0)
    return as_int16


def _series_attrs(nwb_path: Path, series_path: str) -> tuple[float, bool, str]:
    import h5py

    with h5py.File(nwb_path, "r") as h5:
        series = h5[series_path]
        conversion = float(series["data"].attrs.get("conversion", 1.0))
        text = " ".join(
            str(v.decode() if isinstance(v, bytes) else v)
            for v in (series.attrs.get("description"), series.attrs.get("comments"))
            if v is not None
        )
        return conversion, "channel_conversion" in series, text


def _unit_from_text(text: str) -> str | None:
    for unit, pattern in _TEXT_UNITS:
        if pattern.search(text):
            return unit
    return None


def _unit_from_noise(noise: float, series_path: str) -> str:
    if not np.isfinite(noise) or noise <= 0:
        raise InputError(
            f"{series_path}: float traces with no conversion and no noise to tell their unit "
            "(uV, mV or V) from: the traces are flat"
        )
    return next(unit for unit, floor in _NOISE_FLOOR if noise >= floor)


def _median_noise(recording: Any) -> float:
    """Median over channels of the high-passed noise (MAD), in stored units."""
    from spikeinterface.core import get_noise_levels
    from spikeinterface.preprocessing import highpass_filter

    filtered = highpass_filter(recording, freq_min=300.0, dtype="float64")
    chunk = int(min(recording.get_num_samples(), max(1_000, recording.sampling_frequency / 2)))
    levels = get_noise_levels(
        filtered,
        return_in_uV=False,
        method="mad",
        random_slices_kwargs={"chunk_size": chunk, "num_chunks_per_segment": 10, "seed": 0},
        progress_bar=False,
    )
    return float(np.median(levels))


def _max_abs_uv(recording: Any, gains: np.ndarray, offsets: np.ndarray, series_path: str) -> float:
    """The largest |sample| in uV over the whole series: one pass, ~64 MB at a time."""
    n_frames, n_channels = recording.get_num_samples(), recording.get_num_channels()
    step = max(1, (64 << 20) // (8 * n_channels))
    largest = 0.0
    for start in range(0, n_frames, step):
        chunk = recording.get_traces(start_frame=start, end_frame=min(n_frames, start + step))
        values = np.abs(chunk.astype(np.float64) * gains + offsets)
        if not np.isfinite(values).all():
            raise InputError(f"{series_path}: the float traces hold NaN or infinite samples")
        largest = max(largest, float(values.max(initial=0.0)))
    return largest

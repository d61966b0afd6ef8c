"""Global common reference (median or average over all channels), as SpikeInterface's, fast.

SpikeInterface's ``common_reference`` takes ``np.median`` across channels for every sample:
a partition per sample, ~6 s per 5 s x 384 chunk on the development machine, more than the
rest of the chain. Its inputs here are integers (the int16 traces, or a filter's output
rounded to int16), so the median is found by counting instead: a binary search for the
value with half the row at or below it, each step one vectorised compare-and-count over the
row's contiguous channels, the search started next to the previous sample's median (the
reference moves slowly). The result is then SpikeInterface's to the bit: the same median
(the mean of the two middle values for an even count), ``x - median`` rounded half to even.
Float traces, groups, explicit reference channels and ``local``/``single`` references are
SpikeInterface's own ``common_reference``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from spikeinterface.preprocessing.basepreprocessor import (
    BasePreprocessor,
    BasePreprocessorSegment,
)

#: Half-width of the first search window around the previous sample's median; a row whose
#: median is outside it is searched between its min and max.
_WINDOW = 8


def _jit(function: Any) -> Any:
    """``numba.njit``, its machine code cached on disk where a cache folder is writable.

    Compiling takes seconds per process (each chunk worker compiles its own); the cache makes
    that once per install.
    """
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # no writable cache location
        return numba.njit(nogil=True)(function)


@_jit
def _count_at_most(row: np.ndarray, value: Any) -> int:
    # int16 counts: the compiler compares and counts 16 channels per instruction
    count = np.int16(0)
    for c in range(row.shape[0]):
        count += np.int16(row[c] <= value)
    return count


@_jit
def _lower_middle(row: np.ndarray, rank: int, guess: int) -> int:
    """The ``rank``-th smallest value of an integer ``row`` (from 0), searched near ``guess``."""
    low, high = row.dtype.type(guess - _WINDOW), row.dtype.type(guess + _WINDOW)
    below, within = np.int16(0), np.int16(0)  # counts at most low, and at most high
    for c in range(row.shape[0]):
        below += np.int16(row[c] <= low)
        within += np.int16(row[c] <= high)
    if below <= rank < within:  # the answer is in (low, high]
        low, high = low + 1, high
    else:
        low, high = row.min(), row.max()
    low, high = np.int64(low), np.int64(high)
    while low < high:
        middle = (low + high) >> 1
        if _count_at_most(row, row.dtype.type(middle)) > rank:
            high = middle
        else:
            low = middle + 1
    return low


@_jit
def _subtract_median(traces: np.ndarray) -> None:
    """Each row (sample) minus its median over the columns (channels), rounded, in place.

    In integers: with ``m2`` twice the median, ``x - m2 / 2`` rounded half to even is
    ``x - m2 // 2`` when ``m2`` is even, else that less its lowest bit (``np.rint``'s result).
    """
    n_rows, n = traces.shape
    low_rank, high_rank = (n - 1) // 2, n // 2
    info = np.iinfo(traces.dtype)
    guess = 0
    for r in range(n_rows):
        row = traces[r]
        guess = min(max(guess, info.min + _WINDOW), info.max - _WINDOW)
        low = _lower_middle(row, low_rank, guess)
        value = row.dtype.type(low)
        at_most, above = np.int16(0), row.dtype.type(info.max)  # the next value up
        for c in range(n):
            at_most += np.int16(row[c] <= value)
            above = min(above, row[c] if row[c] > value else above)
        high = low if high_rank == low_rank or at_most > high_rank else np.int64(above)
        twice = np.int32(low + high)
        half, odd = twice >> 1, twice & 1
        for c in range(n):
            shifted = np.int32(row[c]) - half
            row[c] = shifted - (shifted & odd)
        guess = low


@_jit
def _subtract_mean(traces: np.ndarray) -> None:
    """Each row minus its mean (float64, exact for integers), rounded, in place."""
    n_rows, n = traces.shape
    for r in range(n_rows):
        row = traces[r]
        total = np.int64(0)
        for c in range(n):
            total += row[c]
        mean = np.float64(total) / n
        for c in range(n):
            row[c] = np.rint(np.float64(row[c]) - mean)


_SUBTRACT = {"median": _subtract_median, "average": _subtract_mean}


class CommonReferenceRecording(BasePreprocessor):
    """SpikeInterface's global ``common_reference`` of integer traces (median or average)."""

    def __init__(self, recording: Any, operator: str = "median", dtype: Any = None) -> None:
        if operator not in _SUBTRACT:
            raise ValueError("'operator' must be either 'median', 'average'")
        dtype = np.dtype(dtype or recording.get_dtype())
        BasePreprocessor.__init__(self, recording, dtype=dtype)
        # A parent whose traces are new arrays (ours) is re-referenced in place: no copy.
        in_place = getattr(recording, "fresh_traces", False) and recording.get_dtype() == dtype
        # Compiled (or loaded from numba's cache: ~1.5 s either way) here, once: the chunk
        # workers SpikeInterface forks on Linux inherit it instead of each paying for it.
        _SUBTRACT[operator](np.zeros((1, recording.get_num_channels()), dtype=dtype))
        for parent in recording.segments:
            self.add_recording_segment(_Segment(parent, _SUBTRACT[operator], dtype, in_place))
        self._kwargs = dict(recording=recording, operator=operator, dtype=dtype.str)


class _Segment(BasePreprocessorSegment):
    def __init__(self, parent: Any, subtract: Any, dtype: np.dtype, in_place: bool) -> None:
        BasePreprocessorSegment.__init__(self, parent)
        self.subtract = subtract
        self.dtype = dtype
        self.in_place = in_place

    def get_traces(self, start_frame: int, end_frame: int, channel_indices: Any) -> np.ndarray:
        traces = self.parent_recording_segment.get_traces(start_frame, end_frame, slice(None))
        if not self.in_place:
            traces = np.array(traces, dtype=self.dtype, order="C")
        self.subtract(traces)
        return traces if channel_indices is None else traces[:, channel_indices]


def common_reference(
    recording: Any,
    reference: str = "global",
    operator: str = "median",
    groups: list | None = None,
    ref_channel_ids: list | str | int | None = None,
    local_radius: tuple[float, float] = (30.0, 55.0),
    min_local_neighbors: int = 5,
    dtype: Any = None,
) -> Any:
    """The ``common_reference`` step: SpikeInterface's, same kwargs.

    The global median or average of integer traces over all channels is done here; groups,
    reference channels, other references and float traces are SpikeInterface's own.
    """
    out_dtype = np.dtype(dtype or recording.get_dtype())
    if (
        reference == "global"
        and operator in _SUBTRACT
        and groups is None
        and ref_channel_ids is None
        and out_dtype == recording.get_dtype()
        and out_dtype.kind == "i"
        and out_dtype.itemsize <= 4
        and recording.get_num_channels() <= np.iinfo(np.int16).max  # the counts' type
    ):
        return CommonReferenceRecording(recording, operator=operator, dtype=out_dtype)
    from spikeinterface.preprocessing import common_reference as spikeinterface_reference

    return spikeinterface_reference(
        recording,
        reference=reference,
        operator=operator,
        groups=groups,
        ref_channel_ids=ref_channel_ids,
        local_radius=local_radius,
        min_local_neighbors=min_local_neighbors,
        dtype=dtype,
    )

"""Neuropixels phase shift, as SpikeInterface's ``phase_shift`` computes it, 2-3x faster.

With Kilosort filtering on the GPU, the phase shift (undoing the ADC's staggered sampling,
``inter_sample_shift``) is the only CPU preprocessing left, so its speed sets the convert
stage's. SpikeInterface's version transforms a whole chunk (all channels, float64, plus a
complex128 rotation matrix as large as the chunk's spectrum) at once: memory-bound, ~4x
slower than the FFTs need. This one is the same algorithm on SpikeInterface's own chunking
and margins (``get_chunk_with_margin``'s zero padding and 40 ms taper): the same rFFT, the same
per-channel rotation ``exp(-i w shift)``, the same inverse, rounded the same way; but in
float32, channel-major (each channel's samples contiguous, so the FFTs stream through cache
instead of striding across 384 channels per sample), a few channels at a time, with the
rotations of the few distinct shifts computed once per chunk length, and its large scratch
arrays kept between chunks. The output differs from
SpikeInterface's by at most one int16 step (float32 rounding), which
``tests/worker/test_worker_phase_shift.py`` checks.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from spikeinterface.core.core_tools import define_function_handling_dict_from_class
from spikeinterface.preprocessing.basepreprocessor import (
    BasePreprocessor,
    BasePreprocessorSegment,
)

#: Channels transformed together: small blocks keep the FFT's working set in cache.
#: Measured on one 153,600 x 384 chunk (Intel Xeon, 2026-12-02): sample-major, 16 channels
#: at a time, 1.08 s; channel-major (two cache-blocked transposes included) 0.82 s at 4
#: channels, 0.86 s at 16.
CHANNEL_BLOCK = 4
#: Rows per step of a transpose: 256 x 384 float32 (384 KiB) stays in L2.
TRANSPOSE_ROWS = 256


def transposed(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``array.T`` copied (into ``out``, cast), in cache-sized steps: 4x faster than one copy."""
    if out is None:
        out = np.empty(array.shape[::-1], dtype=array.dtype)
    for row in range(0, array.shape[0], TRANSPOSE_ROWS):
        out[:, row : row + TRANSPOSE_ROWS] = array[row : row + TRANSPOSE_ROWS].T
    return out


class PhaseShiftRecording(BasePreprocessor):
    """SpikeInterface's ``PhaseShiftRecording`` contract (same kwargs, same result)."""

    def __init__(
        self,
        recording: Any,
        margin_ms: float = 40.0,
        inter_sample_shift: Any = None,
        dtype: Any = None,
    ) -> None:
        if inter_sample_shift is None:
            if "inter_sample_shift" not in recording.get_property_keys():
                raise ValueError("phase_shift: the recording has no 'inter_sample_shift' property")
            shifts = np.asarray(recording.get_property("inter_sample_shift"), dtype=float)
        else:
            shifts = np.asarray(inter_sample_shift, dtype=float)
            if shifts.size != recording.get_num_channels():
                raise ValueError("phase_shift: one inter_sample_shift per channel is needed")
        margin = int(margin_ms * recording.get_sampling_frequency() / 1000.0)
        dtype = np.dtype(dtype or recording.get_dtype())
        BasePreprocessor.__init__(self, recording, dtype=dtype)
        for parent in recording.segments:
            self.add_recording_segment(_Segment(parent, shifts, margin, dtype))
        self._kwargs = dict(
            recording=recording,
            margin_ms=float(margin_ms),
            inter_sample_shift=None if inter_sample_shift is None else shifts.tolist(),
            dtype=dtype.str,
        )


class _Segment(BasePreprocessorSegment):
    def __init__(self, parent: Any, shifts: np.ndarray, margin: int, dtype: np.dtype) -> None:
        BasePreprocessorSegment.__init__(self, parent)
        self.shifts = shifts
        self.margin = margin
        self.dtype = dtype
        #: SpikeInterface's taper on the margins (``get_chunk_with_margin(window_on_margin=True)``).
        self.taper = (1 - np.cos(np.arange(margin) / margin * np.pi)) / 2
        self._rotations: tuple[int, np.ndarray, np.ndarray] | None = None
        self._buffers = threading.local()

    def _rotations_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct shifts' rotations (few x n // 2 + 1) and each channel's index in them."""
        if self._rotations is None or self._rotations[0] != n:
            distinct, index = np.unique(self.shifts, return_inverse=True)
            angles = 2 * np.pi * distinct[:, np.newaxis] * np.fft.rfftfreq(n)[np.newaxis, :]
            self._rotations = (n, np.exp(-1j * angles).astype(np.complex64), index)
        return self._rotations[1], self._rotations[2]

    def _buffer(self, name: str, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        """A scratch array kept between chunks (per thread).

        A fresh 236 MB array per 5 s chunk costs more in page faults than the transposes that
        fill it (0.4 s vs 0.13 s per chunk on a VM); chunks but the last have one shape.
        """
        held = getattr(self._buffers, name, None)
        if held is None or held.shape != shape or held.dtype != dtype:
            held = np.empty(shape, dtype=dtype)
            setattr(self._buffers, name, held)
        return held

    def _channel_major_with_margins(
        self, start_frame: int, end_frame: int, channel_indices: Any
    ) -> np.ndarray:
        """``get_chunk_with_margin(add_zeros=True, window_on_margin=True)``, float32, transposed.

        The same samples, zero padding and taper as SpikeInterface's, written straight into a
        channel-major buffer: one pass over the chunk instead of a float32 copy and a transpose.
        """
        parent, margin = self.parent_recording_segment, self.margin
        first = max(start_frame - margin, 0)
        raw = parent.get_traces(
            first, min(end_frame + margin, parent.get_num_samples()), channel_indices
        )
        n = end_frame - start_frame + 2 * margin
        by_channel = self._buffer("by_channel", (raw.shape[1], n), np.float32)
        left_pad = first - (start_frame - margin)
        by_channel[:, :left_pad] = 0
        transposed(raw, out=by_channel[:, left_pad : left_pad + raw.shape[0]])
        by_channel[:, left_pad + raw.shape[0] :] = 0
        if margin:
            by_channel[:, :margin] *= self.taper
            by_channel[:, n - margin :] *= self.taper[::-1]
        return by_channel

    def get_traces(self, start_frame: int, end_frame: int, channel_indices: Any) -> np.ndarray:
        from scipy import fft

        if channel_indices is None:
            channel_indices = slice(None)
        by_channel = self._channel_major_with_margins(start_frame, end_frame, channel_indices)
        n_channels, n = by_channel.shape
        margin = self.margin
        rotations, index = self._rotations_for(n)
        channel_index = index[channel_indices]
        shifted_by_channel = self._buffer("shifted", (n_channels, n - 2 * margin), self.dtype)
        integer = np.issubdtype(self.dtype, np.integer)
        for first in range(0, n_channels, CHANNEL_BLOCK):
            block = slice(first, first + CHANNEL_BLOCK)
            spectrum = fft.rfft(by_channel[block], axis=1)
            spectrum *= rotations[channel_index[block]]
            shifted = fft.irfft(spectrum, n=n, axis=1, overwrite_x=True)
            if integer:
                np.rint(shifted, out=shifted)
            shifted_by_channel[block] = shifted[:, margin : n - margin]
        return transposed(shifted_by_channel)


phase_shift = define_function_handling_dict_from_class(
    source_class=PhaseShiftRecording, name="phase_shift"
)

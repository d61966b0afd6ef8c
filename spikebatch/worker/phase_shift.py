"""Neuropixels phase shift, as SpikeInterface's ``phase_shift`` computes it, four times faster.

With Kilosort filtering on the GPU, the phase shift (undoing the ADC's staggered sampling,
``inter_sample_shift``) is the only CPU preprocessing left, so its speed sets the convert
stage's. SpikeInterface's version transforms a whole chunk (all channels, float64, plus a
complex128 rotation matrix as large as the chunk's spectrum) at once: memory-bound, ~4x
slower than the FFTs need. This one is the same algorithm on SpikeInterface's own chunking
and margins (``get_chunk_with_margin``, 40 ms tapered margins): the same rFFT, the same
per-channel rotation ``exp(-i w shift)``, the same inverse, rounded the same way; but in
float32, 16 channels at a time (blocks that stay in cache), with the rotations of the few
distinct shifts computed once per chunk length. The output differs from SpikeInterface's
by at most one int16 step (float32 rounding), which ``tests/worker/test_worker_phase_shift.py``
checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikeinterface.core import get_chunk_with_margin
from spikeinterface.core.core_tools import define_function_handling_dict_from_class
from spikeinterface.preprocessing.basepreprocessor import (
    BasePreprocessor,
    BasePreprocessorSegment,
)

#: Channels transformed together: small blocks keep the FFT's working set in cache
#: (measured on 153,600 x 384 int16 chunks: 16 channels 0.44 s, 64: 0.82 s, all: 1.39 s).
CHANNEL_BLOCK = 16


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
        self._rotations: tuple[int, np.ndarray, np.ndarray] | None = None

    def _rotations_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct shifts' rotations (n // 2 + 1 x few) and each channel's index in them."""
        if self._rotations is None or self._rotations[0] != n:
            distinct, index = np.unique(self.shifts, return_inverse=True)
            angles = 2 * np.pi * np.fft.rfftfreq(n)[:, np.newaxis] * distinct[np.newaxis, :]
            self._rotations = (n, np.exp(-1j * angles).astype(np.complex64), index)
        return self._rotations[1], self._rotations[2]

    def get_traces(self, start_frame: int, end_frame: int, channel_indices: Any) -> np.ndarray:
        from scipy import fft

        if channel_indices is None:
            channel_indices = slice(None)
        traces, left, right = get_chunk_with_margin(
            self.parent_recording_segment,
            start_frame,
            end_frame,
            channel_indices,
            self.margin,
            dtype=np.float32,
            add_zeros=True,
            window_on_margin=True,
        )
        n, n_channels = traces.shape
        rotations, index = self._rotations_for(n)
        channel_index = index[channel_indices]
        out = np.empty((n - left - right, n_channels), dtype=self.dtype)
        integer = np.issubdtype(self.dtype, np.integer)
        for first in range(0, n_channels, CHANNEL_BLOCK):
            block = slice(first, first + CHANNEL_BLOCK)
            spectrum = fft.rfft(traces[:, block], axis=0)
            spectrum *= rotations[:, channel_index[block]]
            shifted = fft.irfft(spectrum, n=n, axis=0, overwrite_x=True)[left : n - right]
            out[:, block] = np.rint(shifted) if integer else shifted
        return out


phase_shift = define_function_handling_dict_from_class(
    source_class=PhaseShiftRecording, name="phase_shift"
)

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

The transform itself is ``spectral.SpectralSegment``, shared with the bandpass, which folds
a phase shift just before it into the same FFT; this module declares the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from spikeinterface.core.core_tools import define_function_handling_dict_from_class
from spikeinterface.preprocessing.basepreprocessor import BasePreprocessor

from spikebatch.worker.spectral import SpectralSegment


class PhaseShiftRecording(BasePreprocessor):
    """SpikeInterface's ``PhaseShiftRecording`` contract (same kwargs, same result)."""

    #: ``get_traces`` returns a new array on each call: a step after it may overwrite it.
    fresh_traces = True

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
        #: What a bandpass after it needs to fold it into its own transform (``spectral.py``).
        self.shifts, self.margin_ms = shifts, float(margin_ms)
        #: Samples read on each side of a chunk (``preprocess.fft_friendly_chunks``).
        self.fft_margin = margin
        for parent in recording.segments:
            self.add_recording_segment(
                SpectralSegment(
                    parent,
                    shifts=shifts,
                    sos=None,
                    n_channels=recording.get_num_channels(),
                    margin=margin,
                    taper=margin,
                    dtype=dtype,
                )
            )
        self._kwargs = dict(
            recording=recording,
            margin_ms=float(margin_ms),
            inter_sample_shift=None if inter_sample_shift is None else shifts.tolist(),
            dtype=dtype.str,
        )


phase_shift = define_function_handling_dict_from_class(
    source_class=PhaseShiftRecording, name="phase_shift"
)

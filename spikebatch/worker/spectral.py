"""The worker's FFT preprocessing: phase shift and zero-phase bandpass in one transform.

SpikeInterface's Neuropixels chain transforms every chunk twice on the CPU: ``phase_shift``
(rFFT, rotate, inverse) and then ``bandpass_filter`` (``sosfiltfilt``: five second-order
sections, forward and backward, on float64 copies), the latter at ~0.13 of an h5py read. A
forward-backward filter multiplies the spectrum by ``|H(f)|^2``, real and even, so it folds
into the phase shift's own per-channel multiplier: one rFFT and one inverse per channel do
both, at the phase shift's cost. A bandpass without a phase shift is the same transform with
``|H(f)|^2`` alone.

Layout and chunking are the phase shift's (channel-major float32, a few channels per FFT,
scratch arrays kept between chunks; see ``phase_shift.py``). Margins are SpikeInterface's
own, stacked as its chain stacks them: the bandpass's ``margin_ms`` of real samples inside
the phase shift's 40 ms tapered margin. The results equal SpikeInterface's chain within an
int16 step or two (``tests/worker/test_worker_spectral.py``): the filter is applied as a
circular convolution over chunk + margins rather than by ``sosfiltfilt`` with its padding,
and the phase-shifted samples are not rounded to int16 before filtering.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
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
#: ``bandpass_filter``'s filter kwargs done here; any other value is SpikeInterface's job.
_SUPPORTED_FILTER = {"filter_mode": "sos", "add_reflect_padding": False}


def transposed(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``array.T`` copied (into ``out``, cast), in cache-sized steps: 4x faster than one copy."""
    if out is None:
        out = np.empty(array.shape[::-1], dtype=array.dtype)
    for row in range(0, array.shape[0], TRANSPOSE_ROWS):
        out[:, row : row + TRANSPOSE_ROWS] = array[row : row + TRANSPOSE_ROWS].T
    return out


class SpectralSegment(BasePreprocessorSegment):
    """Each channel's rFFT times its multiplier (rotation, ``|H|^2`` or both), inverted.

    ``margin`` samples are read on each side; the outer ``taper`` of them get SpikeInterface's
    phase-shift taper (``get_chunk_with_margin(window_on_margin=True)``). Beyond the
    recording's ends the phase shift pads zeros, as SpikeInterface's does; a filter reflects
    the first and last samples instead (odd extension, as ``sosfiltfilt`` pads), so that a DC
    offset does not ring through the high-pass there.
    """

    def __init__(
        self,
        parent: Any,
        *,
        shifts: np.ndarray | None,
        sos: np.ndarray | None,
        n_channels: int,
        margin: int,
        taper: int,
        dtype: np.dtype,
    ) -> None:
        BasePreprocessorSegment.__init__(self, parent)
        self.shifts = shifts
        self.n_channels = n_channels
        self.sos = sos
        self.margin = margin
        self.dtype = dtype
        self.taper = (1 - np.cos(np.arange(taper) / taper * np.pi)) / 2
        self._multipliers: tuple[int, np.ndarray, np.ndarray] | None = None
        self._buffers = threading.local()

    def _multipliers_for(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct multipliers (few x n // 2 + 1) and each channel's index in them."""
        if self._multipliers is None or self._multipliers[0] != n:
            from scipy.signal import sosfreqz

            frequencies = np.fft.rfftfreq(n)  # cycles per sample
            if self.shifts is None:
                index = np.zeros(self.n_channels)
                table = np.ones((1, frequencies.size))
            else:
                distinct, index = np.unique(self.shifts, return_inverse=True)
                angles = 2 * np.pi * distinct[:, np.newaxis] * frequencies[np.newaxis, :]
                table = np.exp(-1j * angles)
            if self.sos is not None:
                _, response = sosfreqz(self.sos, worN=2 * np.pi * frequencies)
                table = table * np.abs(response) ** 2  # forward-backward: |H|^2, zero phase
            table = table.astype(np.complex64 if np.iscomplexobj(table) else np.float32)
            self._multipliers = (n, table, np.asarray(index, dtype=np.intp))
        return self._multipliers[1], self._multipliers[2]

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
        """Chunk + margins, padded and tapered, float32, channel-major, in one pass.

        The same samples, padding and taper as SpikeInterface's ``get_chunk_with_margin``,
        written straight into a channel-major buffer: one pass over the chunk instead of a
        float32 copy and a transpose.
        """
        parent, margin = self.parent_recording_segment, self.margin
        first = max(start_frame - margin, 0)
        raw = parent.get_traces(
            first, min(end_frame + margin, parent.get_num_samples()), channel_indices
        )
        n = end_frame - start_frame + 2 * margin
        by_channel = self._buffer("by_channel", (raw.shape[1], n), np.float32)
        left_pad = first - (start_frame - margin)
        right_pad = n - left_pad - raw.shape[0]
        transposed(raw, out=by_channel[:, left_pad : left_pad + raw.shape[0]])
        _pad(by_channel, left_pad, right_pad, reflect=self.sos is not None)
        taper = self.taper.size
        if taper:
            by_channel[:, :taper] *= self.taper
            by_channel[:, n - taper :] *= self.taper[::-1]
        return by_channel

    def get_traces(self, start_frame: int, end_frame: int, channel_indices: Any) -> np.ndarray:
        from scipy import fft

        if channel_indices is None:
            channel_indices = slice(None)
        by_channel = self._channel_major_with_margins(start_frame, end_frame, channel_indices)
        n_channels, n = by_channel.shape
        margin = self.margin
        table, index = self._multipliers_for(n)
        channel_index = index[channel_indices]
        out_by_channel = self._buffer("out_by_channel", (n_channels, n - 2 * margin), self.dtype)
        integer = np.issubdtype(self.dtype, np.integer)
        for first in range(0, n_channels, CHANNEL_BLOCK):
            block = slice(first, first + CHANNEL_BLOCK)
            spectrum = fft.rfft(by_channel[block], axis=1)
            spectrum *= table[0] if table.shape[0] == 1 else table[channel_index[block]]
            filtered = fft.irfft(spectrum, n=n, axis=1, overwrite_x=True)
            if integer:
                np.rint(filtered, out=filtered)
            out_by_channel[block] = filtered[:, margin : n - margin]
        return transposed(out_by_channel)


def _pad(by_channel: np.ndarray, left: int, right: int, *, reflect: bool) -> None:
    """Fill the ``left``/``right`` columns beyond the recording: zeros, or its odd extension."""
    n = by_channel.shape[1]
    by_channel[:, :left] = 0
    by_channel[:, n - right :] = 0
    if not reflect:
        return
    inside = n - left - right
    k = min(left, inside - 1)
    if k > 0:  # x[-j] = 2 x[0] - x[j]
        edge = by_channel[:, left : left + 1]
        by_channel[:, left - k : left] = 2 * edge - by_channel[:, left + 1 : left + 1 + k][:, ::-1]
    k = min(right, inside - 1)
    if k > 0:  # x[last + j] = 2 x[last] - x[last - j]
        last = n - right - 1
        edge = by_channel[:, last : last + 1]
        by_channel[:, last + 1 : last + 1 + k] = 2 * edge - by_channel[:, last - k : last][:, ::-1]


class BandpassFilterRecording(BasePreprocessor):
    """SpikeInterface's ``bandpass_filter`` contract, computed as ``|H(f)|^2`` on the spectrum.

    ``phase_shift`` (``{"inter_sample_shift": [...], "margin_ms": ...}``) is the phase shift
    that preceded the filter in the chain, done in the same transform (``bandpass_filter``
    folds it in); its margin is laid outside the filter's, as SpikeInterface's chain reads it.
    """

    #: ``get_traces`` returns a new array on each call: a step after it may overwrite it.
    fresh_traces = True

    def __init__(
        self,
        recording: Any,
        freq_min: float = 300.0,
        freq_max: float = 6000.0,
        margin_ms: float | str = "auto",
        dtype: Any = None,
        ignore_low_freq_error: bool = False,
        filter_order: int = 5,
        ftype: str = "butter",
        coeff: Any = None,
        phase_shift: dict[str, Any] | None = None,
    ) -> None:
        from scipy.signal import iirfilter
        from spikeinterface.preprocessing.filter import (
            adjust_margin_ms_for_highpass,
            fix_dtype,
            highpass_check,
        )

        if margin_ms == "auto":
            margin_ms = adjust_margin_ms_for_highpass(freq_min)
        highpass_check(freq_min, margin_ms, ignore_low_freq_error=ignore_low_freq_error)
        fs = recording.get_sampling_frequency()
        if coeff is None:
            sos = iirfilter(
                filter_order,
                [freq_min, freq_max],
                fs=fs,
                btype="bandpass",
                ftype=ftype,
                output="sos",
            )
        else:
            sos = np.asarray(coeff, dtype=float)
        dtype = fix_dtype(recording, dtype)
        BasePreprocessor.__init__(self, recording, dtype=dtype)
        self.annotate(is_filtered=True)
        if "offset_to_uV" in self.get_property_keys():
            self.set_channel_offsets(0)
        shifts, taper = None, 0
        if phase_shift is not None:
            shifts = np.asarray(phase_shift["inter_sample_shift"], dtype=float)
            taper = int(phase_shift["margin_ms"] * fs / 1000.0)
        #: Samples read on each side of a chunk (``preprocess.fft_friendly_chunks`` sizes
        #: chunks so that chunk + 2 margins is a fast FFT length).
        self.fft_margin = int(margin_ms * fs / 1000.0) + taper
        for parent in recording.segments:
            self.add_recording_segment(
                SpectralSegment(
                    parent,
                    shifts=shifts,
                    sos=sos,
                    n_channels=recording.get_num_channels(),
                    margin=self.fft_margin,
                    taper=taper,
                    dtype=dtype,
                )
            )
        self._kwargs = dict(
            recording=recording,
            freq_min=freq_min,
            freq_max=freq_max,
            margin_ms=margin_ms,
            dtype=dtype.str,
            ignore_low_freq_error=ignore_low_freq_error,
            filter_order=filter_order,
            ftype=ftype,
            coeff=None if coeff is None else sos.tolist(),
            phase_shift=phase_shift,
        )


def bandpass_filter(
    recording: Any,
    freq_min: float = 300.0,
    freq_max: float = 6000.0,
    margin_ms: float | str = "auto",
    dtype: Any = None,
    ignore_low_freq_error: bool = False,
    **filter_kwargs: Any,
) -> Any:
    """The ``bandpass`` step: SpikeInterface's ``bandpass_filter``, same kwargs.

    A forward-backward ``sos`` filter (the default) is done here, in the frequency domain,
    and folds a phase shift of ours just before it into the same transform. Anything else
    (``filter_mode="ba"``, ``add_reflect_padding``, a one-way ``direction``, unsigned
    traces) is SpikeInterface's own ``bandpass_filter``.
    """
    from spikebatch.worker.phase_shift import PhaseShiftRecording  # it builds on this module

    kwargs = dict(freq_min=freq_min, freq_max=freq_max, margin_ms=margin_ms, dtype=dtype)
    kwargs["ignore_low_freq_error"] = ignore_low_freq_error
    ours = {"filter_order", "ftype", "coeff"}
    supported = (
        set(filter_kwargs) <= ours | set(_SUPPORTED_FILTER) | {"direction"}
        and all(filter_kwargs.get(key, value) == value for key, value in _SUPPORTED_FILTER.items())
        and filter_kwargs.get("direction", "forward-backward") == "forward-backward"
        and np.dtype(dtype or recording.get_dtype()).kind in "if"
        and recording.get_dtype().kind in "if"
    )
    if not supported:
        from spikeinterface.preprocessing import bandpass_filter as spikeinterface_bandpass

        return spikeinterface_bandpass(recording, **kwargs, **filter_kwargs)
    own = {k: v for k, v in filter_kwargs.items() if k in ours}
    if type(recording) is PhaseShiftRecording:
        kwargs["dtype"] = np.dtype(dtype or recording.get_dtype())  # the phase shift's, as SI's
        phase_shift = {
            "inter_sample_shift": recording.shifts.tolist(),
            "margin_ms": recording.margin_ms,
        }
        return BandpassFilterRecording(
            recording.get_parent(), **kwargs, **own, phase_shift=phase_shift
        )
    return BandpassFilterRecording(recording, **kwargs, **own)

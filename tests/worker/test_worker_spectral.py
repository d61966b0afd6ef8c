"""The worker's bandpass + common reference are SpikeInterface's, computed faster.

GIVEN int16 (or float32) recordings, with and without Neuropixels ``inter_sample_shift``,
WHEN they go through the worker's steps (``phase_shift`` + ``bandpass`` + global median
``common_reference``, as ``spikebatch.sorters.FILTERED_PREPROCESSING`` declares them)
THEN the traces equal SpikeInterface's chain, away from the recording's ends:

- the phase shift and the bandpass are one FFT here (``spectral.py``), so the phase-shifted
  samples are not rounded to int16 before the filter as in SpikeInterface's chain. Against
  that chain with the phase shift kept in float, all but ~1e-5 of the samples are equal (the
  rest: a filter output on the other side of a .5, float32 FFT vs float64 ``sosfiltfilt``).
  Against the all-int16 chain, its rounding (uniform, 0.29 steps RMS, then filtered) moves
  ~20% of the samples by one step and ~3% by two, never more (the noise RMS is ~24 steps);
- within the filter's margin (``margin_ms``: 500 samples) of the recording's first and last
  sample the two differ by up to tens of steps: there SpikeInterface's phase shift pads
  zeros and ``sosfiltfilt`` pads 33 samples; ours reflects the recording (neither is data);
- the global median and average reference is SpikeInterface's to the bit (``reference.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from spikebatch.sorters import FILTERED_PREPROCESSING
from spikebatch.worker import preprocess, reference, spectral
from spikebatch.worker.jobkw import job_kwargs
from spikebatch.worker.simulate import neuropixels_sample_shifts

#: The filter's margin (``margin_ms="auto"`` at 300 Hz: 16.7 ms) at 30 kHz.
ENDS = 500


def _recording(num_channels: int, *, shifts: bool, dtype: str = "int16"):
    from spikeinterface.core import generate_recording
    from spikeinterface.preprocessing import scale

    recording = generate_recording(num_channels=num_channels, durations=[12.0], seed=3)
    recording = scale(recording, gain=40.0, offset=100.0, dtype=dtype)  # stored, DC offset
    if shifts:
        recording.set_property("inter_sample_shift", neuropixels_sample_shifts(num_channels))
    return recording


@pytest.fixture(scope="module")
def shifted():
    return _recording(40, shifts=True)


@pytest.fixture(scope="module")
def bare():
    return _recording(39, shifts=False)  # an odd count: the median is one value


def _within_ends(recording, start: int, end: int) -> slice:
    """The rows of ``[start, end)`` that are not within ENDS of the recording's ends."""
    n = recording.get_num_samples()
    return slice(max(ENDS - start, 0), (end - start) - max(end - (n - ENDS), 0))


def _difference(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    return np.abs(got.astype(int) - expected.astype(int))


WINDOWS = [
    (0, 30_000, None),  # the recording's start
    (123_456, 240_000, None),
    (330_000, 360_000, None),  # its end
    (5, 9_000, [3, 17, 31]),
]


@pytest.mark.parametrize(("start", "end", "channels"), WINDOWS)
def test_the_filtered_chain_equals_spikeinterface_s(shifted, start, end, channels):
    import spikeinterface.preprocessing as spre

    ids = None if channels is None else shifted.channel_ids[channels]
    ours, applied = preprocess.preprocess(shifted, FILTERED_PREPROCESSING)
    assert len(applied) == 3 and isinstance(ours, reference.CommonReferenceRecording)
    assert isinstance(ours.get_parent(), spectral.BandpassFilterRecording)  # one transform
    got = ours.get_traces(0, start, end, ids)
    float_shift = spre.phase_shift(shifted, dtype="float32")
    as_float = spre.common_reference(spre.bandpass_filter(float_shift, dtype="int16"))
    all_int16 = spre.common_reference(spre.bandpass_filter(spre.phase_shift(shifted)))
    inside = _within_ends(shifted, start, end)

    vs_float = _difference(got, as_float.get_traces(0, start, end, ids))[inside]
    assert vs_float.max() <= 2 and np.mean(vs_float != 0) < 1e-4
    vs_int16 = _difference(got, all_int16.get_traces(0, start, end, ids))[inside]
    assert vs_int16.max() <= 2 and np.mean(vs_int16 > 1) < 0.05
    assert np.std(got[inside]) > 10  # noise RMS ~24 steps: two is well under it


@pytest.mark.parametrize(("start", "end"), [(0, 30_000), (200_001, 260_000), (300_000, 360_000)])
def test_bandpass_and_median_without_shifts_equal_spikeinterface_s(bare, start, end):
    import spikeinterface.preprocessing as spre

    ours, applied = preprocess.preprocess(bare, FILTERED_PREPROCESSING)
    assert [step.split("(")[0] for step in applied] == ["bandpass", "common_reference"]
    theirs = spre.common_reference(spre.bandpass_filter(bare))

    diff = _difference(ours.get_traces(0, start, end), theirs.get_traces(0, start, end))
    diff = diff[_within_ends(bare, start, end)]
    assert diff.max() <= 2 and np.mean(diff != 0) < 1e-4


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_bandpass_alone_equals_spikeinterface_s(dtype):
    import spikeinterface.preprocessing as spre

    recording = _recording(33, shifts=False, dtype=dtype)
    kwargs = {"freq_min": 400.0, "freq_max": 5000.0, "filter_order": 3, "margin_ms": 20.0}
    ours = spectral.bandpass_filter(recording, **kwargs)
    theirs = spre.bandpass_filter(recording, **kwargs)
    assert isinstance(ours, spectral.BandpassFilterRecording) and ours.is_filtered()

    for start, end in [(0, 40_000), (100_000, 163_000), (320_000, 360_000)]:
        got, expected = ours.get_traces(0, start, end), theirs.get_traces(0, start, end)
        inside = _within_ends(recording, start, end)
        if dtype == "int16":
            diff = _difference(got, expected)[inside]
            assert diff.max() <= 1 and np.mean(diff != 0) < 1e-4
        else:  # float32 FFTs vs float64 sosfiltfilt, on traces of RMS ~24
            assert got.dtype == expected.dtype == np.float32
            np.testing.assert_allclose(got[inside], expected[inside], rtol=0, atol=5e-3)


@pytest.mark.parametrize("operator", ["median", "average"])
@pytest.mark.parametrize("num_channels", [40, 39])
def test_global_reference_is_spikeinterface_s_to_the_bit(operator, num_channels):
    import spikeinterface.preprocessing as spre

    recording = _recording(num_channels, shifts=False)
    ours = reference.common_reference(recording, operator=operator)
    theirs = spre.common_reference(recording, operator=operator)
    assert isinstance(ours, reference.CommonReferenceRecording)

    for start, end, channels in [(0, 50_000, None), (359_000, 360_000, [0, 7, 38])]:
        ids = None if channels is None else recording.channel_ids[channels]
        got, expected = ours.get_traces(0, start, end, ids), theirs.get_traces(0, start, end, ids)
        assert got.dtype == expected.dtype == np.int16
        np.testing.assert_array_equal(got, expected)


def test_what_is_not_done_here_is_spikeinterface_s():
    """Groups, reference channels, float traces, ``ba`` filters: SpikeInterface's classes."""
    from spikeinterface.preprocessing.common_reference import CommonReferenceRecording
    from spikeinterface.preprocessing.filter import BandpassFilterRecording

    recording = _recording(8, shifts=False)
    ids = list(recording.channel_ids)
    assert isinstance(reference.common_reference(recording, groups=[ids[:4], ids[4:]]),
                      CommonReferenceRecording)  # fmt: skip
    assert isinstance(reference.common_reference(recording, ref_channel_ids=ids[:3]),
                      CommonReferenceRecording)  # fmt: skip
    assert isinstance(reference.common_reference(recording, dtype="float32"),
                      CommonReferenceRecording)  # fmt: skip
    assert isinstance(
        spectral.bandpass_filter(recording, filter_mode="ba"), BandpassFilterRecording
    )
    with pytest.raises(TypeError):
        spectral.bandpass_filter(recording, no_such_kwarg=1)


def test_the_sorter_input_equals_spikeinterface_s(shifted, tmp_path):
    import spikeinterface.preprocessing as spre
    from spikeinterface.core import write_binary_recording

    kwargs = {**job_kwargs(), "n_jobs": 1}
    chain, _ = preprocess.preprocess(shifted, FILTERED_PREPROCESSING)
    chunk = preprocess.fft_friendly_chunks(chain, kwargs)["chunk_size"]
    assert chunk == 153_600 - 2 * (1200 + 500)  # 5 s, grown to a 5-smooth FFT length
    ours = preprocess.materialize(chain, tmp_path / "ours", kwargs).get_traces()
    theirs_chain = spre.common_reference(
        spre.bandpass_filter(spre.phase_shift(shifted, dtype="float32"), dtype="int16")
    )
    write_binary_recording(theirs_chain, file_paths=[tmp_path / "si.raw"], dtype="int16", **kwargs)
    theirs = np.memmap(tmp_path / "si.raw", dtype="int16").reshape(-1, 40)

    diff = _difference(ours, theirs)[ENDS:-ENDS]
    assert diff.max() <= 2 and np.mean(diff != 0) < 1e-4  # chunk edges included


def test_chunks_returned_earlier_stay_as_they_were(shifted):
    """The in-place reference and the kept scratch arrays never touch what a caller holds."""
    chain, _ = preprocess.preprocess(shifted, FILTERED_PREPROCESSING)
    first = chain.get_traces(0, 0, 30_000)
    kept = first.copy()
    chain.get_traces(0, 30_000, 60_000)
    chain.get_traces(0, 60_000, 61_000)

    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(chain.get_traces(0, 0, 30_000), kept)

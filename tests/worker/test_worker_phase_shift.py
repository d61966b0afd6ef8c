"""The worker's phase shift is SpikeInterface's, computed faster: same output within one step.

GIVEN a recording with Neuropixels-like ``inter_sample_shift`` WHEN it is phase-shifted by
``spikebatch.worker.phase_shift`` THEN every sample equals SpikeInterface's ``phase_shift``
within one int16 step (float32 vs float64 rounding), for any window and channel subset, and
the sorter input the worker writes (FFT-friendly chunks) equals SpikeInterface's too.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikebatch.worker import phase_shift, preprocess
from spikebatch.worker.jobkw import job_kwargs
from spikebatch.worker.simulate import neuropixels_sample_shifts


@pytest.fixture(scope="module")
def shifted_source():
    from spikeinterface.core import generate_recording
    from spikeinterface.preprocessing import scale

    recording = generate_recording(num_channels=40, durations=[12.0], seed=3)
    recording = scale(recording, gain=40.0, dtype="int16")  # int16, as stored
    recording.set_property("inter_sample_shift", neuropixels_sample_shifts(40))
    return recording


@pytest.mark.parametrize(
    ("start", "end", "channels"),
    [
        (0, 30_000, None),
        (123_456, 240_000, None),
        (359_000, 360_000, None),
        (5, 9_000, [3, 17, 31]),
    ],
)
def test_equals_spikeinterface_within_one_step(shifted_source, start, end, channels):
    import spikeinterface.preprocessing as spre

    ids = None if channels is None else shifted_source.channel_ids[channels]
    expected = spre.phase_shift(shifted_source).get_traces(0, start, end, ids)
    got = phase_shift.phase_shift(shifted_source).get_traces(0, start, end, ids)

    assert got.dtype == expected.dtype == np.int16 and got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert np.mean(got != expected) < 1e-3  # and almost always exactly equal


def test_the_sorter_input_equals_spikeinterface_s(shifted_source, tmp_path):
    import spikeinterface.preprocessing as spre
    from spikeinterface.core import write_binary_recording

    kwargs = {**job_kwargs(), "n_jobs": 1}
    chain, applied = preprocess.preprocess(shifted_source, {"phase_shift": {}})
    assert applied == ["phase_shift()"]
    ours = preprocess.materialize(chain, tmp_path / "ours", kwargs)
    write_binary_recording(
        spre.phase_shift(shifted_source), file_paths=[tmp_path / "si.raw"], dtype="int16", **kwargs
    )
    theirs = np.memmap(tmp_path / "si.raw", dtype="int16").reshape(-1, 40)

    assert preprocess.fft_friendly_chunks(chain, kwargs)["chunk_size"] == 151_200
    assert np.abs(ours.get_traces().astype(int) - theirs.astype(int)).max() <= 1


def test_phase_shift_is_skipped_where_the_file_records_no_shifts(shifted_source):
    bare = shifted_source.clone()
    bare.delete_property("inter_sample_shift")
    steps = {"phase_shift": {}, "common_reference": {}}
    _, applied = preprocess.preprocess(bare, steps)
    assert applied == ["common_reference()"]  # channels sampled together: nothing to undo
    shifts = list(shifted_source.get_property("inter_sample_shift"))
    _, applied = preprocess.preprocess(bare, {"phase_shift": {"inter_sample_shift": shifts}})
    assert applied == [f"phase_shift(inter_sample_shift={shifts!r})"]  # given by the job


def test_float_output_equals_spikeinterface_s(shifted_source):
    import spikeinterface.preprocessing as spre

    expected = spre.phase_shift(shifted_source, dtype="float32").get_traces(0, 1_000, 61_000)
    got = phase_shift.phase_shift(shifted_source, dtype="float32").get_traces(0, 1_000, 61_000)

    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)  # float32 FFTs: 5e-5 seen


def test_chunks_returned_earlier_stay_as_they_were(shifted_source):
    """The scratch arrays kept between chunks never leak into what a caller holds."""
    shifted = phase_shift.phase_shift(shifted_source)
    first = shifted.get_traces(0, 0, 30_000)
    kept = first.copy()
    shifted.get_traces(0, 30_000, 60_000)  # same shape: the same scratch arrays
    shifted.get_traces(0, 60_000, 61_000)  # another shape

    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, shifted.get_traces(0, 0, 30_000))

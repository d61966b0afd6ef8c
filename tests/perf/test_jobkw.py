"""The worker's SpikeInterface job kwargs: all cores, unless memory says fewer."""

from __future__ import annotations

from spikebatch.worker import jobkw

GiB = 1024**3


def test_one_worker_per_core_when_memory_allows() -> None:
    kwargs = jobkw.job_kwargs(total_memory=32 * GiB, n_cores=8)  # a g4dn.2xlarge
    assert kwargs["n_jobs"] == 8
    assert kwargs["chunk_duration"] == f"{jobkw.CHUNK_DURATION_S}s"
    assert kwargs["progress_bar"] is False


def test_memory_caps_the_workers() -> None:
    kwargs = jobkw.job_kwargs(total_memory=6 * GiB, n_cores=8)
    assert kwargs["n_jobs"] == int(6 * GiB * jobkw.WORKER_MEMORY_SHARE // jobkw.WORKER_BYTES)
    assert jobkw.job_kwargs(total_memory=1 * GiB, n_cores=8)["n_jobs"] == 1


def test_kwargs_are_accepted_by_spikeinterface() -> None:
    from spikeinterface.core import generate_recording
    from spikeinterface.core.job_tools import ensure_chunk_size, fix_job_kwargs

    recording = generate_recording(num_channels=4, durations=[12.0], sampling_frequency=30_000.0)
    fixed = fix_job_kwargs(jobkw.job_kwargs(total_memory=32 * GiB, n_cores=2))
    chunk = ensure_chunk_size(recording, **{k: fixed[k] for k in ("n_jobs", "chunk_duration")})
    assert chunk == jobkw.CHUNK_DURATION_S * 30_000

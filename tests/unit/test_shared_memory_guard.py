"""The analyzer never meets /dev/shm's limit as a SIGBUS: it uses fewer workers, or stops
with one line that says what to change (tests/image/test_shared_memory.py shows the crash
this avoids, in a real container)."""

from __future__ import annotations

import pytest

from spikebatch.worker.errors import WorkerError
from spikebatch.worker.postprocess import shared_memory_workers
from spikebatch.worker_image import BATCH_RUNTIME

MiB = 2**20
#: One worker's dense templates at 384 channels, 30 kHz (105 samples), 300 units.
PER_WORKER = 300 * 105 * 384 * 4


def test_workers_fit_the_job_definitions_shared_memory_for_a_neuropixels_session():
    free = BATCH_RUNTIME.shared_memory_mib * MiB
    assert shared_memory_workers(16, 600, 384, 30_000.0, free) == 16


def test_dockers_default_shm_gets_fewer_workers_instead_of_a_crash():
    assert PER_WORKER < 64 * MiB < 2 * PER_WORKER
    assert shared_memory_workers(8, 300, 384, 30_000.0, 64 * MiB) == 1


def test_when_not_even_one_worker_fits_the_error_names_both_numbers():
    with pytest.raises(WorkerError) as raised:
        shared_memory_workers(4, 2000, 384, 30_000.0, 64 * MiB)
    message = str(raised.value)
    assert "needs 309 MiB of shared memory (2000 units x 384 channels)" in message
    assert "/dev/shm has 64 MiB free" in message and "--shm-size" in message

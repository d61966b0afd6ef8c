"""Why the job definitions set /dev/shm: the worker's analyzer does not fit Docker's default.

The postprocess stage builds a sparse SortingAnalyzer as the pipeline does
(``create_sorting_analyzer(sparse=True)`` with parallel workers). Its sparsity estimate
accumulates dense templates per worker in shared memory: workers x units x 105 samples x
channels x float32. At 384 channels, 300 units and 2 workers that is ~97 MiB, past Docker's
(and Batch's) 64 MiB default, and the process dies of SIGBUS, with no run.json to say why. With
the job definitions' size (``BATCH_RUNTIME.shared_memory_mib``) the same code completes.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from spikebatch.worker_image import BATCH_RUNTIME

ANALYZER = """
import spikeinterface.full as si
from spikebatch.worker.postprocess import _fit_shared_memory
recording = si.generate_recording(num_channels=384, durations=[2.0], seed=0)
sorting = si.generate_sorting(num_units=300, durations=[2.0], firing_rates=8.0, seed=0)
job_kwargs = {"n_jobs": 2, "chunk_duration": "1s", "progress_bar": False}
if GUARDED:  # what the worker's postprocess stage does
    job_kwargs = _fit_shared_memory(sorting, recording, job_kwargs)
analyzer = si.create_sorting_analyzer(
    sorting, recording, format="binary_folder", folder="/tmp/analyzer", sparse=True,
    job_kwargs=job_kwargs,
)
print("analyzer ok", analyzer.sparsity is not None, job_kwargs["n_jobs"])
"""


def _analyze(engine: Any, image: str, *, guarded: bool, **settings: Any) -> tuple[int, str]:
    container = engine.containers.run(
        image,
        ["-c", f"GUARDED = {guarded}\n{ANALYZER}"],
        entrypoint="python",
        user=BATCH_RUNTIME.user,
        init=BATCH_RUNTIME.init_process,
        detach=True,
        **settings,
    )
    try:
        code = int(container.wait(timeout=600)["StatusCode"])
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(
    "with_job_definition_shm", [False, True], ids=["docker-default", "job-def"]
)
def test_the_analyzer_needs_more_than_dockers_default_shared_memory(
    engine: Any, kilosort4_image: str, with_job_definition_shm: bool
) -> None:
    settings = (
        {"shm_size": f"{BATCH_RUNTIME.shared_memory_mib}m"} if with_job_definition_shm else {}
    )
    code, logs = _analyze(engine, kilosort4_image, guarded=False, **settings)
    if with_job_definition_shm:
        assert code == 0, logs[-2000:]
        assert "analyzer ok True 2" in logs
    else:
        assert code == 128 + signal.SIGBUS, (code, logs[-2000:])  # killed, not a Python error


def test_the_worker_fits_its_workers_to_the_shared_memory_it_has(
    engine: Any, kilosort4_image: str
) -> None:
    """Docker's default again, through the worker's guard: one worker, and it completes."""
    code, logs = _analyze(engine, kilosort4_image, guarded=True)
    assert code == 0, logs[-2000:]
    assert "analyzer ok True 1" in logs
    assert "/dev/shm holds the sparsity estimate of 1 worker(s), not 2" in logs

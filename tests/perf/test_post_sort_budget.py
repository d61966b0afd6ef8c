"""The worker's plans for the stages after the sort, against what they used at 400 units.

``make bench`` (``bench/postsort.py``) runs the worker's post-sort path on 400 units and 10
minutes of 384 channels and records its peaks; those numbers are kept here. The scratch the
post-sort stages add (:func:`spikebatch.scratch.post_sort_bytes`, given what the sort found)
and the /dev/shm the sparsity estimate takes (:func:`postprocess.shared_memory_per_worker`)
must each hold the measured peak, and stay within 1.5x of it: a plan below the peak fails a
job on a full volume, one far above it refuses or overprices jobs that would fit.
"""

from __future__ import annotations

import pytest

from spikebatch.scratch import Part, Sorted, post_sort_bytes
from spikebatch.worker.postprocess import shared_memory_per_worker

#: ``make bench`` postsort, 2026-12-07 (AMD EPYC, 2 vCPUs): 400 units x 600 s of 384 channels.
MEASURED = {
    "duration_s": 600.0,
    "units": 400,
    "spikes": 2_024_797,
    "sparse_channels": 20,
    "peak_scratch_bytes": 3_263_324_614,
    "shm_workers": 2,
    "peak_shm_bytes": 129_056_768,
}
WITHIN = 1.5


def test_the_post_sort_scratch_plan_holds_the_measured_peak_within_1_5x() -> None:
    part = Part(n_frames=round(MEASURED["duration_s"] * 30_000), n_channels=384)
    found = Sorted(MEASURED["units"], MEASURED["spikes"], MEASURED["sparse_channels"])
    planned = post_sort_bytes(part, found)
    assert MEASURED["peak_scratch_bytes"] <= planned <= WITHIN * MEASURED["peak_scratch_bytes"]


def test_the_shared_memory_guard_holds_the_measured_peak_within_1_5x() -> None:
    planned = MEASURED["shm_workers"] * shared_memory_per_worker(MEASURED["units"], 384, 30_000.0)
    assert MEASURED["peak_shm_bytes"] <= planned <= WITHIN * MEASURED["peak_shm_bytes"]


@pytest.mark.parametrize("units, spikes", [(100, 500_000), (400, 2_000_000), (600, 30_000_000)])
def test_the_plan_grows_with_what_the_sort_found(units: int, spikes: int) -> None:
    """More spikes or units never shrink the plan (it is what the PC-features check reads)."""
    part = Part(n_frames=3600 * 30_000, n_channels=384)
    base = post_sort_bytes(part, Sorted(units, spikes, 20))
    assert post_sort_bytes(part, Sorted(units, 2 * spikes, 20)) > base
    assert post_sort_bytes(part, Sorted(2 * units, spikes, 20)) > base

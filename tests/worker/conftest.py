"""Worker test fixtures: small ground-truth NWB files, the fake DANDI archive, a results bucket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spikebatch.worker import ground_truth, sort
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthFiles, GroundTruthSpec, write_ground_truth_nwb
from tests.worker.helpers import ASSET, DANDISET


@pytest.fixture(scope="session")
def small_gt(tmp_path_factory: pytest.TempPathFactory) -> GroundTruthFiles:
    """5 s x 8 channels: enough for everything that stops before (or fakes) sorting."""
    return write_ground_truth_nwb(
        tmp_path_factory.mktemp("gt-small"),
        GroundTruthSpec(duration_s=5.0, num_channels=8, num_units=3, seed=7),
    )


@pytest.fixture(scope="session")
def two_probe_gt(tmp_path_factory: pytest.TempPathFactory) -> GroundTruthFiles:
    """A session with two probes (own devices, electrode groups, raw series), two shanks each."""
    return write_ground_truth_nwb(
        tmp_path_factory.mktemp("gt-two"),
        GroundTruthSpec(
            duration_s=4.0, num_channels=8, num_units=3, seed=3, n_probes=2, num_shanks=2
        ),
    )


@pytest.fixture
def archive(small_gt: GroundTruthFiles) -> Iterator[FakeDandiArchive]:
    """The fake archive serving ``small_gt`` at ``DANDISET``/draft/``ASSET`` (plus neighbours)."""
    with FakeDandiArchive(page_size=3) as fake:
        fake.add_asset(DANDISET, ASSET, small_gt.nwb)
        for sub in ("sim02", "sim03"):
            fake.add_asset(DANDISET, f"sub-{sub}/sub-{sub}_ses-gt_ecephys.nwb", small_gt.nwb)
        yield fake


@pytest.fixture
def truth_as_sorter(monkeypatch):
    """The sorter stand-in: each part 'sorts' to its true units (loaded as the worker did)."""
    found: dict[str, object] = {}

    def run_sort(recording_, sorter, params, folder, job_kwargs):
        return found[folder.name]

    real_load = ground_truth.load

    def load(value, nwb, parts, scratch):
        truth = real_load(value, nwb, parts, scratch)
        for key, part in truth.parts.items():
            found[key or "traces"] = part.sorting
        return truth

    monkeypatch.setattr(sort, "run_sort", run_sort)
    monkeypatch.setattr(ground_truth, "load", load)
    return found

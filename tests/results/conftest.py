"""Fixtures for issue 11's results: a real finished run, its analyzer, and the run completed
with labels, phy/ and its page.

``finished_run`` is the real worker entrypoint on a small ground-truth NWB (a DANDI asset of
the fake archive) with SpikeInterface's fast ``simple`` sorter (about a minute on 2 cores):
a genuine run.json (verified digest), quality_metrics.csv, figures, sorting/ and units.nwb. ``analyzer`` rebuilds the run's
SortingAnalyzer (the worker deletes its scratch on success) from the run's own sorting and
recording, with the run's preprocessing, exactly as the postprocess stage built it.
``completed_run`` adds what the pipeline will add in issue 11's phase B
(tests/support/run_completion.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.submission.conftest import stack  # noqa: F401  (the moto stack, for `results --open`)
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthFiles, GroundTruthSpec, write_ground_truth_nwb
from tests.support.run_completion import CompletedRun, complete_run, rebuild_analyzer

RUN_ID = "sub-sim01-ses-gt-simple-0123456789"
DANDISET = "000999"
ASSET = "sub-sim01/sub-sim01_ses-gt_ecephys.nwb"
#: Small enough to sort in seconds, big enough for every unit to have hundreds of spikes.
SPEC = GroundTruthSpec(duration_s=10.0, num_channels=16, num_units=5, seed=5)


@dataclass(frozen=True)
class FinishedRun:
    folder: Path  # OUTPUT_URI/RUN_ID as the worker left it
    record: dict[str, Any]
    truth: GroundTruthFiles


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """The worker on a DANDI asset of the fake archive: a verified digest, as in production."""
    from spikebatch.worker.pipeline import main

    root = tmp_path_factory.mktemp("finished-run")
    truth = write_ground_truth_nwb(root / "input", SPEC)
    with FakeDandiArchive() as archive:
        archive.add_asset(DANDISET, ASSET, truth.nwb)
        code = main(
            {
                "DANDISET_ID": DANDISET,
                "DANDI_ASSET_PATH": ASSET,
                "DANDI_API_URL": archive.api_url,
                "OUTPUT_URI": (root / "results").as_uri(),
                "SORTER": "simple",
                "RUN_ID": RUN_ID,
                "INSTANCE_TYPE": "g4dn.xlarge",
                "SCRATCH_DIR": str(root / "scratch"),
            }
        )
    folder = root / "results" / RUN_ID
    assert code == 0, (folder / "run.json").read_text()
    return FinishedRun(folder, json.loads((folder / "run.json").read_text()), truth)


@pytest.fixture(scope="session")
def analyzer(finished_run: FinishedRun, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return rebuild_analyzer(
        finished_run.folder, finished_run.truth.nwb, tmp_path_factory.mktemp("analyzer")
    )


@pytest.fixture(scope="session")
def completed_run(
    finished_run: FinishedRun, analyzer: Any, tmp_path_factory: pytest.TempPathFactory
) -> CompletedRun:
    folder = tmp_path_factory.mktemp("completed") / RUN_ID
    shutil.copytree(finished_run.folder, folder)
    return complete_run(folder, analyzer)

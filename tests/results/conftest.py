"""Fixtures for issue 11's results: a real finished run, as the worker leaves it, and its
analyzer.

``finished_run`` is the real worker entrypoint on a small ground-truth NWB (a DANDI asset of
the fake archive) with SpikeInterface's fast ``simple`` sorter (about a minute on 2 cores):
a genuine run.json (verified digest), the labelled quality_metrics.csv, figures, sorting/,
units.nwb, phy/ and the run's page. ``analyzer`` rebuilds the run's SortingAnalyzer (the
worker deletes its scratch on success) from the run's own sorting and recording, with the
run's preprocessing, exactly as the postprocess stage built it, for tests that call the
modules directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spikebatch.contract import RUN_PAGE
from spikebatch.quality import parse_quality_thresholds
from spikebatch.worker.labels import LABEL_COLUMN, REASON_COLUMN, UnitLabels
from tests.submission.conftest import (  # noqa: F401  (the moto stack and run-record Lambda)
    record_env,
    record_handler,
    record_invoke,
    stack,
)
from tests.support.dandi_server import FakeDandiArchive
from tests.support.ground_truth import GroundTruthFiles, GroundTruthSpec, write_ground_truth_nwb

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
    labels: UnitLabels  # as the run wrote them: quality_metrics.csv's label columns
    page: Path  # report/index.html


def labels_of_run(folder: Path, record: dict[str, Any]) -> UnitLabels:
    """The labels a run wrote, read back from its quality_metrics.csv."""
    import pandas as pd

    table = pd.read_csv(folder / "quality_metrics.csv", dtype={"unit_id": str, LABEL_COLUMN: str})
    table = table.set_index("unit_id")
    table[REASON_COLUMN] = table[REASON_COLUMN].fillna("").astype(str)
    thresholds = parse_quality_thresholds(record["settings"].get("QUALITY_THRESHOLDS"))
    return UnitLabels(table, thresholds)


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
    record = json.loads((folder / "run.json").read_text())
    return FinishedRun(folder, record, truth, labels_of_run(folder, record), folder / RUN_PAGE)


@pytest.fixture(scope="session")
def analyzer(finished_run: FinishedRun, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The run's SortingAnalyzer, rebuilt from its sorting/ and recording as postprocess did."""
    import spikeinterface as si

    from spikebatch.worker import postprocess, preprocess, recording

    scratch = tmp_path_factory.mktemp("analyzer")
    record = finished_run.record
    raw = recording.open_recording(
        finished_run.truth.nwb, record["input"]["electrical_series_path"]
    )
    traces, _ = preprocess.preprocess(
        raw, record["preprocessing"]["steps"], max_duration_s=record["max_duration_s"]
    )
    traces = preprocess.materialize(traces, scratch / "preprocessed", {"n_jobs": 1})
    sorting = si.load(finished_run.folder / "sorting")
    return postprocess.analyze(sorting, traces, scratch / "analyzer", {"n_jobs": 1})

"""Study fixtures: two tiny ground-truth recordings, a spec over them, and a sorter stand-in.

The stand-in (as in tests/worker/test_worker_ground_truth.py) makes the sort free: the
worker's ``sort.run_sort`` returns the truth the worker itself loaded from GROUND_TRUTH, so
every other stage (postprocess, export, scoring, the page) runs for real in seconds.
``tridesclous2`` returns the truth (accuracy 1), ``spykingcircus2`` the truth without its last
unit; a sorter listed in ``stand_in.sleep`` sleeps (a timeout test) first.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from spikebatch.worker import ground_truth, sort
from tests.support.ground_truth import GroundTruthFiles, GroundTruthSpec, write_ground_truth_nwb


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> list[GroundTruthFiles]:
    """Two 3 s x 8 channel recordings with their truth in their own units table."""
    folder = tmp_path_factory.mktemp("study-recordings")
    return [
        write_ground_truth_nwb(
            folder / f"rec{i}",
            GroundTruthSpec(duration_s=3.0, num_channels=8, num_units=3, seed=10 + i),
            units_table=True,
        )
        for i in (1, 2)
    ]


def spec_document(recordings: list[GroundTruthFiles], **extra: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "recordings": [
            {"name": f"rec{i}", "study": "synth", "input_uri": files.nwb.as_uri()}
            for i, files in enumerate(recordings, start=1)
        ],
        "sorters": [
            {"name": "tridesclous2", "label": "truth"},
            {"name": "spykingcircus2", "label": "drops-one"},
        ],
        **extra,
    }


def write_spec(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class StandIn:
    sorted: list[str] = field(default_factory=list)  # "<sorter> <input name>" per sort
    sleep: dict[str, float] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    stop: set[str] = field(default_factory=set)


@contextmanager
def patched_sorter() -> Iterator[StandIn]:
    """The stand-in in place of the worker's sort (and a hook on the truth it loads)."""
    state = StandIn()
    truths: dict[str, Any] = {}
    real_load = ground_truth.load

    def load(value, nwb, parts, scratch):
        truth = real_load(value, nwb, parts, scratch)
        truths["current"] = truth.parts[next(iter(truth.parts))].sorting
        return truth

    def run_sort(recording, sorter, params, folder, job_kwargs):
        state.sorted.append(sorter)
        if sorter in state.sleep:
            time.sleep(state.sleep[sorter])
        if sorter in state.stop:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during this sort
            time.sleep(5)
        if sorter in state.fail:
            raise sort.SorterError(f"{sorter} failed: stand-in failure")
        truth = truths["current"]
        if sorter == "spykingcircus2":
            return truth.select_units(list(truth.unit_ids)[:-1])
        return truth

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ground_truth, "load", load)
        patch.setattr(sort, "run_sort", run_sort)
        yield state


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with patched_sorter() as state:
        yield state

"""A finished run completed the way issue 11's phase B wires it into the pipeline.

Until the pipeline writes labels, ``phy/`` and ``report/index.html`` itself, tests and
``docs/make_screenshots.py`` add them to a run the real worker finished, calling the same
functions in the stages' order: labels (postprocess) -> labelled quality_metrics.csv ->
phy/ (export) -> report/index.html (publish, before the upload) -> run.json last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CompletedRun:
    folder: Path
    record: dict[str, Any]
    labels: Any  # spikebatch.worker.labels.UnitLabels
    page: Path


def rebuild_analyzer(folder: Path, nwb: Path, scratch: Path) -> Any:
    """The run's SortingAnalyzer (the worker deletes its scratch on success), rebuilt from
    the run's sorting/ and its recording with the run's preprocessing, as postprocess does."""
    import spikeinterface as si

    from spikebatch.worker import postprocess, preprocess, recording

    record = json.loads((folder / "run.json").read_text())
    raw = recording.open_recording(nwb, record["input"]["electrical_series_path"])
    traces, _ = preprocess.preprocess(
        raw, record["preprocessing"]["steps"], max_duration_s=record["max_duration_s"]
    )
    traces = preprocess.materialize(traces, scratch / "preprocessed", {"n_jobs": 1})
    sorting = si.load(folder / "sorting")
    return postprocess.analyze(sorting, traces, scratch / "analyzer", {"n_jobs": 1})


def complete_run(folder: Path, analyzer: Any) -> CompletedRun:
    """Add labels, the labelled quality_metrics.csv, phy/ and the run page to ``folder``."""
    from spikebatch.worker import labels, phy_export, postprocess, run_page

    record = json.loads((folder / "run.json").read_text())
    unit_labels = labels.label_units(analyzer)
    postprocess.write_quality_metrics(
        labels.labelled_quality_metrics(postprocess.quality_metrics(analyzer), unit_labels),
        folder / "quality_metrics.csv",
    )
    phy = phy_export.export_phy(analyzer, folder / "phy", labels=unit_labels)
    record["labels"] = unit_labels.record()
    record["units"] = {**record["units"], "labels": unit_labels.counts()}
    record["phy"] = phy.record()
    (folder / run_page.PAGE).parent.mkdir(parents=True, exist_ok=True)
    (folder / run_page.PAGE).touch()  # listed in outputs, as the pipeline will list it
    record["outputs"] = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != "run.json"
    )
    page = run_page.write_run_page(folder, record)
    (folder / "run.json").write_text(json.dumps(record, indent=2))
    return CompletedRun(folder, record, unit_labels, page)

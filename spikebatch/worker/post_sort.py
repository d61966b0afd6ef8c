"""A part's path after its sort: save it, analyze and label it, then write and export what a
user opens.

One home for it: the pipeline runs it for each part (``pipeline._sort_part``) and
``bench.postsort`` measures exactly these calls at Neuropixels size, each in a ``step``
(``postprocess.Step``: the pipeline's records each step's seconds in run.json's
``post_sort_s``, the bench's its time, memory, /dev/shm and scratch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikebatch.quality import QualityThresholds
from spikebatch.worker import labels, postprocess, report
from spikebatch.worker.postprocess import Step, no_step


@dataclass
class Analyzed:
    """A part's analyzer, its quality metrics (one row per unit) and its units' labels."""

    analyzer: Any
    metrics: Any
    unit_labels: labels.UnitLabels


def save_sorting(sorting: Any, where: Path) -> Path:
    """``sorting/``, written as soon as the sort ends: what a failure later in the run
    still delivers (``pipeline._fail``), the sort being the part that costs."""
    folder = where / "sorting"
    sorting.save(folder=folder, overwrite=True)
    return folder


def analyze_and_label(
    sorting: Any,
    traces: Any,
    analyzer_folder: Path,
    where: Path,
    job_kwargs: dict[str, Any],
    thresholds: QualityThresholds,
    *,
    step: Step = no_step,
) -> Analyzed:
    """The analyzer with every extension and the quality metrics, the units labelled, and
    ``quality_metrics.csv`` (with the labels) written into ``where``."""
    analyzer = postprocess.analyze(sorting, traces, analyzer_folder, job_kwargs, step=step)
    with step("labels"):
        metrics = postprocess.quality_metrics(analyzer)
        unit_labels = labels.label_units(analyzer, thresholds)
        postprocess.write_quality_metrics(
            labels.labelled_quality_metrics(metrics, unit_labels), where / "quality_metrics.csv"
        )
    return Analyzed(analyzer, metrics, unit_labels)


def write_results(
    analyzed: Analyzed,
    where: Path,
    *,
    units_nwb: Any,
    part: str,
    title: str,
    thresholds: QualityThresholds,
    export_phy: Callable[[Any, labels.UnitLabels], Any],
    step: Step = no_step,
) -> Any:
    """The part's units added to ``units_nwb`` (with their labels), ``phy/``
    (``export_phy(analyzer, unit_labels)``, whose result is returned) and ``report/``."""
    analyzer, unit_labels = analyzed.analyzer, analyzed.unit_labels
    with step("units_nwb_add"):
        labels.set_label_property(analyzer.sorting, unit_labels)  # the NWB's label column
        units_nwb.add(analyzer, part=part)
    with step("phy"):
        phy = export_phy(analyzer, unit_labels)
    with step("figures"):
        report.write_report(
            analyzer, analyzed.metrics, where / "report", title=title, thresholds=thresholds
        )
    return phy

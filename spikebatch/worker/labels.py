"""Quality labels for every unit (good / mua / noise), with the reason a unit is not good.

SpikeInterface decides (``bombcell_label_units``, thresholds from :mod:`spikebatch.quality`);
this module feeds it the metrics (computing the template metrics the noise checks read),
explains each decision in words (``label_reason``), and hands the labels to the three
places a user meets them: ``quality_metrics.csv``, the NWB Units table (a ``label`` column,
through a sorting property neuroconv writes) and phy's ``cluster_group.tsv``.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

from spikebatch.quality import (
    LABELS,
    NAN_POLICY,
    SECTIONS,
    TEMPLATE_METRIC_COLUMNS,
    QualityThresholds,
)

log = logging.getLogger(__name__)

LABEL_COLUMN = "label"
REASON_COLUMN = "label_reason"
#: Column descriptions for the NWB Units table (part of :mod:`.nwb_columns`' table).
NWB_PROPERTY_DESCRIPTIONS = {
    LABEL_COLUMN: (
        "Automatic quality label (good, mua or noise) from spikebatch's documented "
        "thresholds on the quality and template metrics (bombcell rule, SpikeInterface)."
    ),
    REASON_COLUMN: (
        "Why the unit is not labelled good: each threshold it failed, with its value "
        "(empty for a good unit)."
    ),
}


@dataclass(frozen=True)
class UnitLabels:
    """Labels of one sorting: ``table`` has one row per unit (index ``unit_id``) with the
    metrics the thresholds read, ``label`` and ``label_reason``."""

    table: Any  # pandas.DataFrame
    thresholds: QualityThresholds

    @property
    def labels(self) -> Any:
        """``label`` per unit (pandas Series, index ``unit_id``)."""
        return self.table[LABEL_COLUMN]

    def counts(self) -> dict[str, int]:
        """How many units carry each label (every label present, zeros included)."""
        found = self.labels.value_counts()
        return {label: int(found.get(label, 0)) for label in LABELS}

    def record(self) -> dict[str, Any]:
        """What run.json keeps: the counts and the thresholds in force, with their sources."""
        return labels_record(self.counts(), self.thresholds)


def labels_record(counts: dict[str, int], thresholds: QualityThresholds) -> dict[str, Any]:
    """run.json's ``labels``: label counts (of one part, or summed over a run's parts) and
    the thresholds in force, with their sources."""
    return {
        "counts": {label: int(counts.get(label, 0)) for label in LABELS},
        "thresholds": thresholds.table(),
        "nan_policy": dict(NAN_POLICY),
    }


def label_units(analyzer: Any, thresholds: QualityThresholds | None = None) -> UnitLabels:
    """Label the analyzer's units; computes ``template_metrics`` when a threshold reads one.

    The analyzer must have ``quality_metrics`` (the postprocess stage computes them).
    """
    import pandas as pd

    thresholds = thresholds or QualityThresholds()
    needed = thresholds.metrics_used()
    frames = [analyzer.get_extension("quality_metrics").get_data()]
    if set(needed) & set(TEMPLATE_METRIC_COLUMNS) and analyzer.get_num_units():
        if not analyzer.has_extension("template_metrics"):
            log.info("labels: computing template metrics (for the noise checks)")
            analyzer.compute("template_metrics", include_multi_channel_metrics=True)
        frames.append(analyzer.get_extension("template_metrics").get_data())
    metrics = pd.concat(frames, axis=1)
    metrics.index.name = "unit_id"
    return label_metrics(metrics, thresholds)


def label_metrics(metrics: Any, thresholds: QualityThresholds | None = None) -> UnitLabels:
    """Label a metrics table (one row per unit) with SpikeInterface's bombcell rule."""
    import pandas as pd
    from spikeinterface.curation import bombcell_label_units

    thresholds = thresholds or QualityThresholds()
    needed = thresholds.metrics_used()
    if metrics.empty:  # no units: nothing to decide (and no template metrics to read)
        metrics = metrics.reindex(columns=list(dict.fromkeys([*metrics.columns, *needed])))
    missing = [m for m in needed if m not in metrics.columns]
    if missing:  # SpikeInterface would skip them with a warning: a silent change of rule
        raise ValueError(f"quality labels need metrics that were not computed: {missing}")
    table = metrics[needed].copy()
    table.index.name = "unit_id"
    if len(table):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN comparisons, by design
            decided = bombcell_label_units(
                external_metrics=table, thresholds=thresholds.as_spikeinterface()
            )
        labels = decided.iloc[:, 0].astype(str)
    else:
        labels = pd.Series([], index=table.index, dtype=str)
    table[LABEL_COLUMN] = labels.reindex(table.index).to_numpy()
    table[REASON_COLUMN] = [
        _reason(row, label, thresholds)
        for (_, row), label in zip(table.iterrows(), table[LABEL_COLUMN], strict=True)
    ]
    return UnitLabels(table, thresholds)


def _failures(row: Any, section: str, thresholds: QualityThresholds) -> list[str]:
    out = []
    for metric, threshold in thresholds.resolved()[section].items():  # type: ignore[index]
        value = float(row[metric])
        if math.isnan(value):
            if NAN_POLICY[section] == "fail":  # type: ignore[index]
                out.append(f"{metric} not computed")
        elif not threshold.passes(value):
            out.append(f"{metric} {value:.3g} (needs {threshold.describe()})")
    return out


def _reason(row: Any, label: str, thresholds: QualityThresholds) -> str:
    """Why a unit is not good, in the words of the thresholds it failed ('' for good)."""
    if label == "good":
        return ""
    section = label if label in SECTIONS else None
    failures = _failures(row, section, thresholds) if section else []
    if not failures:  # cannot happen while our comparison matches SpikeInterface's
        log.warning("labels: no failed threshold explains label %r of a unit", label)
    return "; ".join(failures)


def labelled_quality_metrics(metrics: Any, labels: UnitLabels) -> Any:
    """quality_metrics.csv's table: the quality metrics, the template metrics the labels
    read, then ``label`` and ``label_reason`` (one row per unit, index ``unit_id``)."""
    extra = [c for c in labels.table.columns if c not in metrics.columns]
    out = metrics.join(labels.table[extra], how="left")
    out.index.name = "unit_id"
    return out


def set_label_property(sorting: Any, labels: UnitLabels) -> None:
    """Set the ``label`` property on ``sorting`` (e.g. ``analyzer.sorting``), in its unit
    order; neuroconv then writes it as the Units table's ``label`` column."""
    values = labels.labels.reindex(list(sorting.unit_ids))
    if values.isna().any():
        missing = list(values.index[values.isna()])[:5]
        raise ValueError(f"no label for units {missing}")
    sorting.set_property(LABEL_COLUMN, values.to_numpy(dtype=str))

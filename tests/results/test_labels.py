"""Quality labels: documented defaults, overrides, the same labels in the CSV, NWB and phy."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebatch.control.request import RequestError, parse_request
from spikebatch.quality import (
    DEFAULT_THRESHOLDS,
    LABEL_METRICS,
    LABELS,
    QUALITY_METRIC_COLUMNS,
    TEMPLATE_METRIC_COLUMNS,
    QualityThresholds,
    parse_quality_thresholds,
)
from spikebatch.worker import labels
from spikebatch.worker.settings import ConfigError, WorkerSettings


def test_the_metric_lists_are_what_spikeinterface_computes(analyzer):
    """The request validates metric names against these lists: they must not drift from
    what postprocess and the template metrics actually produce."""
    labels.label_units(analyzer)  # computes template_metrics on demand
    quality = list(analyzer.get_extension("quality_metrics").get_data().columns)
    template = list(analyzer.get_extension("template_metrics").get_data().columns)
    assert quality == list(QUALITY_METRIC_COLUMNS)
    assert template == list(TEMPLATE_METRIC_COLUMNS)


def test_every_default_names_a_metric_and_its_source():
    for section, thresholds in DEFAULT_THRESHOLDS.items():
        assert thresholds, section
        for metric, (_, source) in thresholds.items():
            assert metric in LABEL_METRICS
            assert len(source) > 20, (section, metric)
    rows = QualityThresholds().table()
    assert {r["metric"] for r in rows} == {m for t in DEFAULT_THRESHOLDS.values() for m in t}
    assert {r["rule"] for r in rows} >= {"snr >= 5", "isi_violations_ratio <= 0.5"}


def test_units_of_the_run_get_one_label_each_with_a_reason_when_not_good(analyzer):
    result = labels.label_units(analyzer)
    table = result.table
    assert list(table.index) == list(analyzer.unit_ids)
    assert set(table[labels.LABEL_COLUMN]) <= set(LABELS)
    assert sum(result.counts().values()) == analyzer.get_num_units()
    for _, row in table.iterrows():
        assert (row[labels.REASON_COLUMN] == "") == (row[labels.LABEL_COLUMN] == "good")
    record = result.record()
    assert record["counts"] == result.counts()
    assert record["nan_policy"] == {"noise": "fail", "mua": "ignore"}


def test_an_override_changes_the_labels_and_says_why(analyzer):
    strict = parse_quality_thresholds('{"mua": {"snr": {"greater": 1000}}}')
    result = labels.label_units(analyzer, strict)
    assert set(result.labels) <= {"mua", "noise"}
    mua = result.table[result.table[labels.LABEL_COLUMN] == "mua"]
    assert len(mua) and all("snr" in r and "needs >= 1000" in r for r in mua["label_reason"])
    nothing = QualityThresholds(use_defaults=False)
    assert set(labels.label_units(analyzer, nothing).labels) == {"good"}
    dropped = parse_quality_thresholds('{"noise": {"num_positive_peaks": null}}')
    assert "num_positive_peaks" not in dropped.as_spikeinterface()["noise"]


_metric = st.one_of(st.floats(-1, 10, allow_nan=False), st.just(math.nan))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries({m: _metric for m in ("snr", "presence_ratio", "exp_decay")}),
        min_size=1,
        max_size=8,
    ),
    snr_min=st.floats(0, 8),
    decay=st.tuples(st.floats(0, 0.5), st.floats(0.5, 2)),
)
def test_the_reason_agrees_with_spikeinterfaces_decision(rows, snr_min, decay):
    """SpikeInterface decides; our label_reason must name a failed threshold exactly when
    the unit is not good, and the right section's (NaN fails noise, never mua)."""
    thresholds = QualityThresholds.model_validate(
        {
            "use_defaults": False,
            "noise": {"exp_decay": {"greater": decay[0], "less": decay[1]}},
            "mua": {"snr": {"greater": snr_min}, "presence_ratio": {"greater": 0.5}},
        }
    )
    table = pd.DataFrame(rows, index=pd.Index([str(i) for i in range(len(rows))]))
    result = labels.label_metrics(table, thresholds)
    for (_, row), label in zip(table.iterrows(), result.labels, strict=True):
        noise = math.isnan(row.exp_decay) or not decay[0] <= row.exp_decay <= decay[1]
        mua = (not math.isnan(row.snr) and row.snr < snr_min) or (
            not math.isnan(row.presence_ratio) and row.presence_ratio < 0.5
        )
        assert label == ("noise" if noise else "mua" if mua else "good")
    reasons = result.table[labels.REASON_COLUMN]
    assert ((reasons == "") == (result.labels == "good")).all()


def test_the_run_writes_labels_into_quality_metrics_csv(finished_run, analyzer):
    with (finished_run.folder / "quality_metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == analyzer.get_num_units()
    assert list(rows[0])[:2] == ["unit_id", "num_spikes"]
    assert list(rows[0])[-2:] == ["label", "label_reason"]
    # Each label (and its reason) is the rule's decision on the metrics in the same row: a
    # user can check it in the CSV (the CSV shows every metric a label was decided on).
    table = pd.read_csv(finished_run.folder / "quality_metrics.csv", index_col="unit_id")
    decided = labels.label_metrics(table.drop(columns=["label", "label_reason"]))
    assert table["label"].to_dict() == decided.labels.to_dict()
    assert table["label_reason"].fillna("").to_dict() == (
        decided.table[labels.REASON_COLUMN].to_dict()
    )
    # The same rule on an analyzer rebuilt from sorting/ agrees where no metric sits on a
    # threshold (waveform sampling and float sums differ in the last digits).
    rebuilt = labels.label_units(analyzer).labels.to_dict()
    assert sum(rebuilt[u] == label for u, label in decided.labels.items()) >= len(rows) - 1
    counts = finished_run.record["labels"]["counts"]
    assert counts == decided.counts() == finished_run.record["units"]["labels"]
    assert finished_run.record["labels"]["thresholds"] == decided.thresholds.table()


def test_the_runs_units_nwb_carries_the_same_labels(finished_run):
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(finished_run.folder / "units.nwb", "r") as io:
        units = io.read().units
        written = dict(zip(units["unit_name"][:], units["label"][:], strict=True))
        description = units["label"].description
    assert written == dict(finished_run.labels.labels.items())
    assert description == labels.NWB_PROPERTY_DESCRIPTIONS["label"]


def test_set_label_property_refuses_units_without_a_label(analyzer):
    result = labels.label_units(analyzer)
    partial = labels.UnitLabels(result.table.iloc[1:], result.thresholds)
    with pytest.raises(ValueError, match="no label for units"):
        labels.set_label_property(analyzer.sorting, partial)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"mua": {"snrr": {"greater": 3}}}', "mua: unknown metric 'snrr'"),
        ('{"mua": {"snr": {}}}', "mua.snr: give 'greater', 'less' or both"),
        ('{"mua": {"snr": {"greater": 3, "less": 1}}}', "'greater' (3) is above 'less' (1)"),
        ('{"good": {}}', "good: unknown key (use noise, mua, use_defaults)"),
        ("[1]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_thresholds_are_one_line_naming_the_field(raw, message):
    with pytest.raises(ValueError, match=None) as caught:
        parse_quality_thresholds(raw)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^QUALITY_THRESHOLDS: "):
        WorkerSettings.from_env(
            {"INPUT_URI": "file:///x.nwb", "OUTPUT_URI": "file:///o", "QUALITY_THRESHOLDS": raw}
        )


def test_the_request_carries_thresholds_phy_and_publication_options():
    request = parse_request(
        {
            "input_uri": "s3://my-bucket/a.nwb",
            "quality_thresholds": {"mua": {"snr": {"greater": 3}, "presence_ratio": None}},
            "phy_pc_features": False,
            "publish_dandiset_id": "000500",
        }
    )
    assert request.quality_thresholds is not None
    assert request.quality_thresholds.resolved()["mua"]["snr"].greater == 3
    assert "presence_ratio" not in request.quality_thresholds.resolved()["mua"]
    assert request.phy_pc_features is False and request.publish_dandiset_id == "000500"
    with pytest.raises(RequestError) as caught:
        parse_request(
            {
                "input_uri": "s3://my-bucket/a.nwb",
                "quality_thresholds": {"mua": {"snr": {"greater": "3"}}},
                "publish_dandiset_id": "5",
            }
        )
    fields = {e.field for e in caught.value.errors}
    assert fields == {"quality_thresholds.mua.snr.greater", "publish_dandiset_id"}


def test_worker_settings_read_the_new_variables():
    settings = WorkerSettings.from_env(
        {
            "INPUT_URI": "file:///x.nwb",
            "OUTPUT_URI": "file:///o",
            "QUALITY_THRESHOLDS": '{"use_defaults": false, "mua": {"snr": {"greater": 2}}}',
            "PHY_PC_FEATURES": "false",
            "PUBLISH_DANDISET_ID": "000500",
        }
    )
    assert settings.quality_thresholds.resolved() == {
        "noise": {},
        "mua": {"snr": settings.quality_thresholds.mua["snr"]},
    }
    assert settings.phy_pc_features is False and settings.publish_dandiset_id == "000500"
    assert settings.public_dict()["QUALITY_THRESHOLDS"]["use_defaults"] is False
    defaults = WorkerSettings.from_env({"INPUT_URI": "file:///x.nwb", "OUTPUT_URI": "file:///o"})
    assert defaults.phy_pc_features is True and defaults.publish_dandiset_id is None
    with pytest.raises(ConfigError, match=r"^PUBLISH_DANDISET_ID: expected six digits"):
        WorkerSettings.from_env(
            {"INPUT_URI": "file:///x.nwb", "OUTPUT_URI": "file:///o", "PUBLISH_DANDISET_ID": "5"}
        )


def test_an_empty_metrics_table_labels_nothing():
    empty = pd.DataFrame({m: np.array([], dtype=float) for m in QUALITY_METRIC_COLUMNS})
    result = labels.label_metrics(
        empty,
        QualityThresholds.model_validate({"use_defaults": False, "mua": {"snr": {"greater": 5}}}),
    )
    assert result.counts() == {"good": 0, "mua": 0, "noise": 0}

"""The study spec: every mistake is one line naming the field, before anything runs."""

from __future__ import annotations

import json

import pytest

from spikebatch.study.cases import check_with_worker, make_cases, resolve_recordings
from spikebatch.study.spec import StudySpecError, load_spec, parse_spec

REC = {"name": "r1", "input_uri": "s3://lab-bucket/r1.nwb"}
BASE = {"name": "s", "recordings": [REC], "sorters": [{"name": "kilosort4"}]}


def _with(**changes):
    return {**BASE, **changes}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_with(extra=1), "s: extra: unknown key"),
        (
            _with(sorters=[{"name": "kilosort9"}]),
            "sorters[kilosort9].name: unknown sorter 'kilosort9'",
        ),
        (
            _with(sorters=[{"name": "kilosort4", "lable": "x"}]),
            "sorters[kilosort4].lable: unknown key",
        ),
        (
            _with(sorters=[{"name": "kilosort4"}, {"name": "kilosort4"}]),
            "duplicate label 'kilosort4' (give each entry its own label)",
        ),
        (
            _with(
                sorters=[{"name": "kilosort4", "label": "a"}, {"name": "kilosort4", "label": "b"}]
            ),
            "'b' and 'a' are the same run",
        ),
        (_with(recordings=[REC, REC]), "recordings: duplicate name 'r1'"),
        (_with(recordings=[{"name": "r1"}]), "give exactly one of asset, asset_glob, input_uri"),
        (
            _with(recordings=[{"name": "r1", "input_uri": "ftp://x/y.nwb"}]),
            "recordings[r1]: input_uri: 'ftp://x/y.nwb': use s3://bucket/key",
        ),
        (
            _with(recordings=[{"name": "r1", "dandiset_id": "618", "asset": "a.nwb"}]),
            "dandiset_id: '618' is not a dandiset id",
        ),
        (
            _with(recordings=[{**REC, "ground_truth": "unit"}]),
            "recordings[r1].ground_truth: 'unit': use 'units'",
        ),
        (
            _with(sorters=[{"name": "kilosort4", "resources": {"gpus": 0}}]),
            "sorters[kilosort4]: resources: kilosort4 needs a GPU",
        ),
        (
            _with(sorters=[{"name": "kilosort4", "timeout_minutes": "5"}]),
            "timeout_minutes: Input should be a valid number",
        ),
        (_with(snr_threshold=-1), "snr_threshold: Input should be greater than or equal to 0"),
        (_with(match_score=2), "match_score: Input should be less than or equal to 1"),
        (_with(name="a b"), "study name 'a b': use letters"),
        (_with(recordings=[]), "recordings: List should have at least 1 item"),
    ],
)
def test_spec_errors_are_one_line(document, message):
    with pytest.raises(StudySpecError) as caught:
        parse_spec(json.loads(json.dumps(document)), source="s")
    text = str(caught.value)
    assert "\n" not in text
    assert message in text, text


@pytest.mark.parametrize(
    ("sorter", "message"),
    [
        (
            {"name": "tridesclous2", "params": {"Thx": 1}},
            "sorters[tridesclous2].params: SORTER_PARAMS: unknown key 'Thx'",
        ),
        (
            {"name": "tridesclous2", "preprocessing": {"whiten": {}}},
            "sorters[tridesclous2].preprocessing: PREPROCESSING",
        ),
    ],
)
def test_params_and_preprocessing_are_checked_as_the_worker_checks_them(sorter, message):
    spec = parse_spec(_with(sorters=[sorter]))
    cases = make_cases(spec, resolve_recordings(spec, identify=False))
    with pytest.raises(StudySpecError) as caught:
        check_with_worker(spec, cases)
    assert str(caught.value).startswith(message), caught.value


def test_defaults_relative_files_and_labels(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "r.nwb").write_bytes(b"x")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "name: s\nrecordings:\n  - {name: r, input_uri: 'file:data/r.nwb', ground_truth: none}\n"
        "sorters:\n  - name: tridesclous2\n  - {name: tridesclous2, label: tdc-bp, preprocessing: {bandpass: {freq_min: 400.0}}}\n"
    )
    spec = load_spec(spec_file)
    assert spec.snr_threshold == 5.0 and spec.match_score is None
    assert spec.recordings[0].input_uri == (tmp_path / "data" / "r.nwb").as_uri()
    assert [s.key for s in spec.sorters] == ["tridesclous2", "tdc-bp"]
    cases = make_cases(spec, resolve_recordings(spec))
    assert cases[0].recording.content.startswith("sha256:")
    assert cases[0].truth_env(spec) == {}  # ground_truth: none: sorted, not scored
    assert cases[1].request.preprocessing == {"bandpass": {"freq_min": 400.0}}
    assert cases[0].run_id != cases[1].run_id


def test_the_examples_load():
    from pathlib import Path

    for path in sorted(Path("examples").glob("study-*.yaml")):
        assert load_spec(path).recordings, path

"""GIVEN one bad environment variable WHEN the worker starts THEN it exits 2 with one line
naming that variable, before any work (nothing downloaded, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikebatch.contract import Env, derive_run_id
from spikebatch.sorters import FILTERED_PREPROCESSING, GPU_FILTERING_PREPROCESSING
from spikebatch.worker.__main__ import main
from spikebatch.worker.settings import ConfigError, WorkerSettings

VALID = {
    "DANDISET_ID": "000409",
    "DANDI_ASSET_PATH": "sub-1/sub-1_ecephys.nwb",
    "OUTPUT_URI": "s3://results/runs",
    "SORTER": "kilosort4",
}

BAD = [
    ("DANDISET_ID", "409", "expected six digits"),
    ("DANDISET_VERSION", "latest", "published version"),
    ("DANDI_ASSET_PATH", "../etc/passwd", "relative path"),
    ("DANDI_API_URL", "ftp://dandi", "http(s) URL"),
    ("DANDI_API_KEY_SECRET_ARN", "my-secret", "Secrets Manager secret ARN"),
    ("SORTER", "kilosort9", "unknown sorter 'kilosort9'"),
    ("SORTER_PARAMS", '{"Thx": 1}', "unknown key 'Thx' for kilosort4; valid keys: Th_learned,"),
    ("SORTER_PARAMS", "{Th: 8}", "not valid JSON"),
    ("SORTER_PARAMS", "[8]", "must be a JSON object"),
    ("PREPROCESSING", '{"bandpas": {}}', "unknown step 'bandpas'; valid steps:"),
    ("PREPROCESSING", '{"bandpass": {"fmin": 300}}', "unknown key 'fmin' for bandpass"),
    ("MAX_DURATION_S", "ten", "expected a number"),
    ("MAX_DURATION_S", "0", "positive number of seconds"),
    ("STOP_GRACE_S", "0", "greater than 0"),
    ("STOP_GRACE_S", "25", "less than or equal to 20"),
    ("STOP_GRACE_S", "soon", "expected a number"),
    ("OUTPUT_URI", "gs://bucket/x", "expected s3://bucket/prefix or file:///path"),
    ("OUTPUT_URI", "file://relative/path", "absolute path"),
    ("RUN_ID", "../escape", "letters, digits"),
    ("INPUT_URI", "ftp://host/x.nwb", "expected s3://, https://, http:// or file:// URI"),
    ("INSTANCE_TYPE", "a big one", "EC2 instance type"),
    ("SORT_BY_GROUP", "per shank", "valid boolean"),
]


@pytest.mark.parametrize(("var", "value", "expected"), BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_each_bad_variable_is_named_in_one_line(var, value, expected, capsys, tmp_path):
    env = {**VALID, var: value, "SCRATCH_DIR": str(tmp_path / "scratch")}

    code = main(env)

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"spikebatch-worker: error: {var}: ")
    assert expected in err[-1]
    assert not (tmp_path / "scratch").exists()  # nothing was done


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OUTPUT_URI": "s3://b/p"}, "INPUT_URI: no input"),
        ({"OUTPUT_URI": "s3://b/p", "DANDISET_ID": "000409"}, "DANDI_ASSET_PATH: required"),
        ({"OUTPUT_URI": "s3://b/p", "DANDI_ASSET_PATH": "a.nwb"}, "DANDISET_ID: required"),
        ({"INPUT_URI": "s3://b/x.nwb"}, "OUTPUT_URI: required, not set"),
        ({**VALID, "INPUT_URI": "s3://b/x.nwb"}, "INPUT_URI: give either INPUT_URI or"),
    ],
)
def test_missing_variables_are_named(env, expected):
    with pytest.raises(ConfigError) as err:
        WorkerSettings.from_env(env)
    assert str(err.value).startswith(expected)


def test_valid_environment_round_trips_into_run_id_and_full_params():
    settings = WorkerSettings.from_env(
        {**VALID, "SORTER_PARAMS": '{"Th_universal": 8}', "MAX_DURATION_S": "60", "RUN_ID": ""}
    )

    assert settings.dandiset_version == "draft"
    assert settings.source == "dandi:000409/draft/sub-1/sub-1_ecephys.nwb"
    assert settings.preprocessing == GPU_FILTERING_PREPROCESSING  # Kilosort filters on the GPU
    assert settings.full_sorter_params["Th_universal"] == 8
    assert "Th_learned" in settings.full_sorter_params  # SpikeInterface's defaults recorded too
    assert settings.effective_run_id == derive_run_id(
        source=settings.source,
        sorter="kilosort4",
        sorter_params={"Th_universal": 8},
        preprocessing=GPU_FILTERING_PREPROCESSING,
        max_duration_s=60.0,
        electrical_series_path=None,
    )
    by_group = WorkerSettings.from_env({**VALID, "SORT_BY_GROUP": "true"})
    assert (
        by_group.sort_by_group
        and by_group.effective_run_id != WorkerSettings.from_env(VALID).effective_run_id
    )  # sorting per shank is another result


@pytest.mark.parametrize(
    ("sorter", "expected"),
    [
        ("kilosort4", GPU_FILTERING_PREPROCESSING),
        ("kilosort3", GPU_FILTERING_PREPROCESSING),
        ("spykingcircus2", FILTERED_PREPROCESSING),
        ("simple", FILTERED_PREPROCESSING),  # any undeclared SpikeInterface sorter
    ],
)
def test_default_preprocessing_is_declared_per_sorter(sorter, expected):
    for unset in ({}, {"PREPROCESSING": ""}, {"PREPROCESSING": "{}"}):
        settings = WorkerSettings.from_env({**VALID, "SORTER": sorter, **unset})
        assert settings.preprocessing == expected
    asked = WorkerSettings.from_env(
        {**VALID, "SORTER": sorter, "PREPROCESSING": json.dumps(FILTERED_PREPROCESSING)}
    )
    assert asked.preprocessing == FILTERED_PREPROCESSING  # a request can still ask for anything


def test_preprocessing_null_means_none_and_empty_means_defaults():
    assert WorkerSettings.from_env({**VALID, "PREPROCESSING": "null"}).preprocessing is None
    custom = WorkerSettings.from_env(
        {
            **VALID,
            "PREPROCESSING": json.dumps({"highpass": {"freq_min": 250}, "common_reference": {}}),
        }
    )
    assert list(custom.preprocessing) == ["highpass", "common_reference"]


def test_settings_never_read_the_process_environment(monkeypatch):
    monkeypatch.setenv("SORTER", "kilosort9")
    assert WorkerSettings.from_env(VALID).sorter == "kilosort4"


def test_api_key_is_never_shown():
    settings = WorkerSettings.from_env({**VALID, "DANDI_API_KEY": "sekret-key"})
    assert "sekret-key" not in json.dumps(settings.public_dict())
    assert "sekret-key" not in repr(settings)


def test_array_child_entry_is_applied_before_validation(tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"DANDI_ASSET_PATH": "a.nwb"}, {"DANDISET_ID": "12"}]))
    env = {**VALID, Env.ARRAY_MANIFEST_URI: manifest.as_uri(), "AWS_BATCH_JOB_ARRAY_INDEX": "1"}

    assert main(env) == 2
    assert "DANDISET_ID: expected six digits like '000409', got '12'" in capsys.readouterr().err

    from spikebatch.worker.pipeline import load_environment

    child0 = load_environment({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "0"})
    assert WorkerSettings.from_env(child0).dandi_asset_path == "a.nwb"


def test_module_entrypoint_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "DANDI_NO_ET": "1",
        "HOME": str(tmp_path),
        "INPUT_URI": "s3://bucket/x.nwb",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "spikebatch.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "spikebatch-worker: error: OUTPUT_URI: required, not set"
    ]

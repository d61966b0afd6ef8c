"""The env-var contract helpers: run ids users see in S3 keys, array-child overlays."""

from __future__ import annotations

import pytest

from spikebatch.contract import (
    ARRAY_INDEX_VAR,
    Env,
    apply_array_child,
    dandi_source,
    derive_run_id,
    is_valid_run_id,
)
from spikebatch.sorters import SORTERS, UnknownSorterError, get_sorter

SOURCE = dandi_source("000409", "draft", "sub-X/sub-X_ses-1_ecephys.nwb")


def test_run_id_is_deterministic_and_readable() -> None:
    a = derive_run_id(source=SOURCE, sorter="kilosort3", sorter_params={"Th": [9, 8]})
    b = derive_run_id(source=SOURCE, sorter="kilosort3", sorter_params={"Th": [9, 8]})
    assert a == b
    assert a.startswith("sub-x-ses-1-ecephys-kilosort3-")
    assert is_valid_run_id(a)


@pytest.mark.parametrize(
    "change",
    [
        {"sorter": "kilosort4"},
        {"sorter_params": {"Th": [10, 4]}},
        {"preprocessing": {"bandpass": {"freq_min": 150}}},
        {"max_duration_s": 60.0},
        {"source": dandi_source("000409", "0.230101.0000", "sub-X/sub-X_ses-1_ecephys.nwb")},
        {"electrical_series_path": "acquisition/ElectricalSeriesAP"},
    ],
)
def test_run_id_changes_with_anything_that_changes_the_result(change: dict) -> None:
    base = {"source": SOURCE, "sorter": "kilosort3", "sorter_params": {"Th": [9, 8]}}
    assert derive_run_id(**base) != derive_run_id(**{**base, **change})


def test_run_id_param_order_does_not_matter() -> None:
    a = derive_run_id(source=SOURCE, sorter="kilosort3", sorter_params={"a": 1, "b": 2})
    b = derive_run_id(source=SOURCE, sorter="kilosort3", sorter_params={"b": 2, "a": 1})
    assert a == b


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a b", "-lead", "x" * 129, "a..b"])
def test_invalid_run_ids_are_rejected(bad: str) -> None:
    assert not is_valid_run_id(bad)


def test_unicode_and_odd_asset_names_still_give_valid_run_ids() -> None:
    rid = derive_run_id(source="s3://b/üñí côdé/rec (1).NWB", sorter="kilosort4")
    assert is_valid_run_id(rid)


MANIFEST = [
    {"DANDI_ASSET_PATH": "sub-A/a.nwb", "RUN_ID": "a-run"},
    {"DANDI_ASSET_PATH": "sub-B/b.nwb", "RUN_ID": "b-run"},
]


def test_array_child_overlays_its_entry() -> None:
    env = {"DANDISET_ID": "000409", ARRAY_INDEX_VAR: "1", "SORTER": "kilosort3"}
    out = apply_array_child(env, MANIFEST)
    assert out["DANDI_ASSET_PATH"] == "sub-B/b.nwb"
    assert out["RUN_ID"] == "b-run"
    assert out["DANDISET_ID"] == "000409"


def test_outside_an_array_job_the_environment_is_unchanged() -> None:
    env = {"DANDISET_ID": "000409"}
    assert apply_array_child(env, MANIFEST) == env


@pytest.mark.parametrize(
    ("index", "message"), [("2", "outside the manifest"), ("x", "not an integer")]
)
def test_bad_array_index_names_the_variable(index: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"{ARRAY_INDEX_VAR}.*{message}"):
        apply_array_child({ARRAY_INDEX_VAR: index}, MANIFEST)


def test_manifest_entries_may_only_set_contract_variables() -> None:
    with pytest.raises(ValueError, match=f"{Env.ARRAY_MANIFEST_URI}.*PATH"):
        apply_array_child({ARRAY_INDEX_VAR: "0"}, [{"PATH": "/evil"}])


def test_sorter_registry_knows_kilosort3_as_a_gpu_sorter() -> None:
    assert get_sorter("kilosort3").needs_gpu
    assert "kilosort4" in SORTERS


def test_unknown_sorter_error_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSorterError, match="kilosort3"):
        get_sorter("kilosort2000")

"""The job-request model: what a request file may say, and the errors a user reads."""

from __future__ import annotations

import json

import pytest

from spikebatch.control.request import (
    MAX_REQUEST_BYTES,
    JobRequest,
    RequestError,
    ResourceLimits,
    parse_request,
)

DESIGN_EXAMPLE = {
    "dandiset_id": "000409",
    "version": "draft",
    "assets": ["sub-X/sub-X_ecephys.nwb"],
    "sorter": "kilosort3",
    "sorter_params": {},
    "preprocessing": {},
    "output_prefix": "results/my-run",
    "max_duration_s": None,
    "resources": {"gpus": 1, "vcpus": 8, "memory_gib": 30, "timeout_hours": 12, "spot": True},
}
LIMITS = ResourceLimits(max_vcpus=32, max_memory_gib=128, max_gpus=1)


def errors_of(data: object, **kwargs: object) -> dict[str, str]:
    with pytest.raises(RequestError) as info:
        parse_request(data, **kwargs)  # type: ignore[arg-type]
    return {e.field: e.message for e in info.value.errors}


def test_design_example_parses_from_file_bytes() -> None:
    request = parse_request(json.dumps(DESIGN_EXAMPLE).encode(), limits=LIMITS)
    assert request.assets == ["sub-X/sub-X_ecephys.nwb"]
    assert (request.gpus, request.resources.vcpus, request.resources.memory_gib) == (1, 8, 30.0)
    # results/ is implied: the DESIGN example's "results/my-run" is not results/results/...
    assert request.output_prefix == "my-run"


def test_defaults_leave_sizing_to_the_job_definition() -> None:
    request = parse_request({"input_uri": "s3://my-bucket/x.nwb", "sorter": "spykingcircus2"})
    assert request.gpus == 0 and not request.needs_gpu
    assert (request.resources.vcpus, request.resources.memory_gib) == (None, None)
    assert request.resources.spot is True and request.resources.timeout_hours == 12


def test_unknown_keys_are_rejected_at_every_level() -> None:
    errors = errors_of({**DESIGN_EXAMPLE, "asset": "x", "resources": {"gpu": 1}})
    assert errors == {"asset": "unknown key", "resources.gpu": "unknown key"}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {},
            "give exactly one of assets, asset_glob, asset_globs, dandisets, input_uri (got: none)",
        ),
        (
            {"assets": ["a.nwb"], "input_uri": "s3://my-bucket/a.nwb"},
            "give exactly one of assets, asset_glob, asset_globs, dandisets, input_uri (got: assets, input_uri)",
        ),
        (
            {"asset_glob": "*.nwb", "assets": ["a.nwb"]},
            "give exactly one of assets, asset_glob, asset_globs, dandisets, input_uri (got: assets, asset_glob)",
        ),
    ],
)
def test_exactly_one_input(inputs: dict[str, object], message: str) -> None:
    assert errors_of({"dandiset_id": "000409", **inputs}) == {"request": message}


def test_dandi_inputs_need_a_dandiset_and_uris_refuse_one() -> None:
    assert errors_of({"asset_glob": "*.nwb"}) == {"request": "asset_glob needs dandiset_id"}
    assert errors_of({"dandiset_id": "000409", "input_uri": "s3://my-bucket/a.nwb"}) == {
        "request": "dandiset_id goes with assets, asset_glob or asset_globs, not input_uri"
    }


def test_gpu_sorters_need_a_gpu_and_cpu_sorters_refuse_one() -> None:
    base = {"input_uri": "s3://my-bucket/a.nwb"}
    assert errors_of({**base, "resources": {"gpus": 0}}) == {
        "resources": "kilosort3 needs a GPU: gpus must be at least 1"
    }
    assert errors_of({**base, "sorter": "mountainsort5", "resources": {"gpus": 1}}) == {
        "resources": "mountainsort5 runs on CPU: gpus must be 0 or left out"
    }


def test_resources_must_fit_the_stacks_instance_types() -> None:
    errors = errors_of(
        {**DESIGN_EXAMPLE, "resources": {"memory_gib": 256, "vcpus": 64, "gpus": 4}},
        limits=LIMITS,
    )
    assert errors == {
        "resources.vcpus": "64 is more than the stack's largest instance type offers (32)",
        "resources.memory_gib": "256 is more than the stack's largest instance type offers (128)",
        "resources.gpus": "4 is more than the stack's largest instance type offers (1)",
    }


def test_every_bad_field_is_reported_with_its_path() -> None:
    errors = errors_of(
        {
            "dandiset_id": "409",
            "version": "latest",
            "assets": ["ok.nwb", "ok.nwb", "/abs.nwb"],
            "sorter": "kilosort2000",
            "max_duration_s": -1,
            "output_prefix": "../escape",
            "resources": {"gpus": "1", "spot": "yes"},
        }
    )
    assert set(errors) == {
        "dandiset_id",
        "version",
        "assets",
        "sorter",
        "max_duration_s",
        "output_prefix",
        "resources.gpus",
        "resources.spot",
    }
    assert "six digits" in errors["dandiset_id"]
    assert "'/abs.nwb'" in errors["assets"]
    assert "known sorters: kilosort3, kilosort4" in errors["sorter"]
    assert errors["resources.gpus"] == "Input should be a valid integer"  # strict: no "1"


def test_duplicate_assets_are_named() -> None:
    errors = errors_of({"dandiset_id": "000409", "assets": ["a.nwb", "b.nwb", "a.nwb"]})
    assert errors == {"assets": "listed more than once: ['a.nwb']"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"text"', "must be a JSON object, got str"),
        (b"null", "must be a JSON object, got NoneType"),
        (b"\xff\xfe{", "not UTF-8 text; a request is JSON"),
        (b"{nope", "not valid JSON (Expecting property name enclosed in double quotes: line 1"),
        (b" " * (MAX_REQUEST_BYTES + 1), f"{MAX_REQUEST_BYTES + 1} bytes; a request is at most"),
    ],
)
def test_non_requests_get_one_clear_error(body: bytes, message: str) -> None:
    errors = errors_of(body)
    assert list(errors) == ["request"] and errors["request"].startswith(message)


def test_the_model_is_the_one_the_worker_documents() -> None:
    """DESIGN.md lists the request keys; the model knows exactly those (plus the series path)."""
    documented = set(DESIGN_EXAMPLE) | {"asset_glob", "input_uri", "electrical_series_path"}
    # issue 11 (README, "The request file"): labels, phy, publication to DANDI
    documented |= {"quality_thresholds", "phy_pc_features", "publish_dandiset_id"}
    # issue 10 (README, "The request file"): sort each shank of a probe on its own
    documented |= {"sort_by_group"}
    # issue 19 (README, "Campaigns"): several dandisets or globs, and the campaign's knobs
    documented |= {"asset_globs", "dandisets", "max_cost_usd", "max_concurrent_jobs"}
    documented |= {"retry_failed", "max_attempts_per_input", "rerun"}
    # issue 23 (README, "Inputs"): SpikeGLX and Open Ephys recordings, and the reader's options
    documented |= {"data_type", "read_recording_kwargs"}
    assert set(JobRequest.model_fields) == documented


def test_globs_are_for_s3_uris_a_campaign_expands() -> None:
    assert parse_request({"input_uri": "s3://my-bucket/rig1/*/*_g0/"}).input_uri
    assert parse_request({"input_uri": "https://host/a.nwb?raw=1"}).input_uri  # a query
    assert errors_of({"input_uri": "file:///data/*/x.nwb"}) == {
        "input_uri": "'file:///data/*/x.nwb': globs (*, ?, [) are expanded in s3:// URIs only"
    }

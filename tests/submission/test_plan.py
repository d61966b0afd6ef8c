"""Request → Batch SubmitJob arguments: env overrides, resources, queue, array manifests."""

from __future__ import annotations

import json
import re

import pytest

from spikebatch.contract import (
    ARRAY_INDEX_VAR,
    RUN_ID_TAG,
    apply_array_child,
    dandi_source,
    derive_run_id,
)
from spikebatch.control.request import RequestError, ResourceLimits, parse_request
from spikebatch.control.submission import batch_job_name, plan_submission
from tests.support.deployment import fake_deployment

DEPLOYMENT = fake_deployment(
    "data-bucket",
    limits=ResourceLimits(max_vcpus=32, max_memory_gib=128, max_gpus=1),
    dandi_api_url="https://api.sandbox.dandiarchive.org/api",
)
ASSET = "sub-1/sub-1_ses-1_ecephys.nwb"


def env_of(kwargs: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in kwargs["containerOverrides"]["environment"]}


def test_single_asset_job_gets_the_worker_contract_env() -> None:
    request = parse_request(
        {
            "dandiset_id": "000409",
            "assets": [ASSET],
            "sorter_params": {"Th": [9, 8]},
            "max_duration_s": 60,
            "output_prefix": "lab/may",
        }
    )
    plan = plan_submission(request, DEPLOYMENT)
    run_id = derive_run_id(
        source=dandi_source("000409", "draft", ASSET),
        sorter="kilosort3",
        sorter_params={"Th": [9, 8]},
        max_duration_s=60.0,
    )
    assert plan.run_id == run_id and not plan.is_array
    assert env_of(plan.submit_job) == {
        "DANDISET_ID": "000409",
        "DANDISET_VERSION": "draft",
        "DANDI_ASSET_PATH": ASSET,
        "DANDI_API_URL": "https://api.sandbox.dandiarchive.org/api",
        "SORTER": "kilosort3",
        "SORTER_PARAMS": '{"Th":[9,8]}',
        "MAX_DURATION_S": "60.0",
        "OUTPUT_URI": "s3://data-bucket/results/lab/may",
        "RUN_ID": run_id,
    }
    assert plan.submit_job["jobQueue"] == DEPLOYMENT.job_queue_arn
    assert plan.submit_job["jobDefinition"] == DEPLOYMENT.gpu_job_definition_arn
    # Unset resources: the job definition's (the stack's gpu_job_* config) apply.
    assert "resourceRequirements" not in plan.submit_job["containerOverrides"]
    assert plan.submit_job["timeout"] == {"attemptDurationSeconds": 12 * 3600}
    assert plan.submit_job["tags"] == {RUN_ID_TAG: run_id}
    assert plan.submit_job["propagateTags"] is True
    assert "arrayProperties" not in plan.submit_job


def test_requested_resources_override_the_job_definition() -> None:
    request = parse_request(
        {"input_uri": "s3://lab-bucket/a.nwb", "resources": {"gpus": 1, "memory_gib": 61}}
    )
    assert plan_submission(request, DEPLOYMENT).submit_job["containerOverrides"][
        "resourceRequirements"
    ] == [{"type": "MEMORY", "value": "62464"}, {"type": "GPU", "value": "1"}]


def test_same_request_same_run_id_and_params_change_it() -> None:
    base = {"dandiset_id": "000409", "assets": [ASSET]}
    first = plan_submission(parse_request(base), DEPLOYMENT).run_id
    assert plan_submission(parse_request(base), DEPLOYMENT).run_id == first
    changed = plan_submission(parse_request({**base, "sorter_params": {"Th": [10, 4]}}), DEPLOYMENT)
    assert changed.run_id != first


def test_on_demand_and_cpu_sorters_choose_queue_and_definition() -> None:
    request = parse_request(
        {
            "input_uri": "s3://lab-bucket/raw/rec one.nwb",
            "sorter": "spykingcircus2",
            "resources": {"spot": False, "vcpus": 16, "memory_gib": 62.5, "timeout_hours": 0.5},
        }
    )
    plan = plan_submission(request, DEPLOYMENT)
    assert plan.submit_job["jobQueue"] == DEPLOYMENT.priority_queue_arn
    assert plan.submit_job["jobDefinition"] == DEPLOYMENT.cpu_job_definition_arn
    assert plan.submit_job["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "16"},
        {"type": "MEMORY", "value": "64000"},
    ]
    assert plan.submit_job["timeout"] == {"attemptDurationSeconds": 1800}
    env = env_of(plan.submit_job)
    assert env["INPUT_URI"] == "s3://lab-bucket/raw/rec one.nwb"
    assert not {"DANDISET_ID", "DANDI_ASSET_PATH", "DANDI_API_URL"} & set(env)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", plan.submit_job["jobName"])


def test_several_assets_become_one_array_job_with_a_manifest() -> None:
    assets = [f"sub-{i}/sub-{i}_ecephys.nwb" for i in range(3)]
    request = parse_request({"dandiset_id": "000409", "asset_glob": "sub-*/*.nwb"})
    plan = plan_submission(request, DEPLOYMENT, assets=assets)
    assert plan.is_array and plan.submit_job["arrayProperties"] == {"size": 3}
    assert plan.manifest_key == f"manifests/{plan.run_id}.json"
    env = env_of(plan.submit_job)
    assert env["ARRAY_MANIFEST_URI"] == f"s3://data-bucket/{plan.manifest_key}"
    assert "RUN_ID" not in env and "DANDI_ASSET_PATH" not in env
    assert plan.manifest == [
        {"DANDI_ASSET_PATH": path, "RUN_ID": run.run_id}
        for path, run in zip(assets, plan.runs, strict=True)
    ]
    assert [r.array_index for r in plan.runs] == [0, 1, 2]
    assert len({r.run_id for r in plan.runs} | {plan.run_id}) == 4
    assert plan.submit_job["tags"] == {RUN_ID_TAG: plan.run_id}


def test_a_glob_that_matches_nothing_is_a_request_error() -> None:
    request = parse_request({"dandiset_id": "000409", "asset_glob": "nope/*.nwb"})
    with pytest.raises(RequestError, match="matched no assets in dandiset 000409"):
        plan_submission(request, DEPLOYMENT, assets=[])


def test_the_stack_limits_apply_to_requests_built_without_them() -> None:
    request = parse_request({"input_uri": "s3://lab-bucket/a.nwb", "resources": {"vcpus": 96}})
    with pytest.raises(RequestError, match=r"resources\.vcpus: 96 is more than"):
        plan_submission(request, DEPLOYMENT)


def test_batch_job_names_are_valid() -> None:
    assert batch_job_name("rec.v2-kilosort3-abc") == "rec-v2-kilosort3-abc"
    assert len(batch_job_name("x" * 300)) == 128


def test_generated_env_validates_in_the_worker_single_and_array() -> None:
    """Round trip: what we submit is what the worker accepts (SORTER_PARAMS vs SpikeInterface)."""
    settings = pytest.importorskip("spikebatch.worker.settings")
    single = plan_submission(
        parse_request(
            {
                "dandiset_id": "000409",
                "assets": [ASSET],
                "sorter": "kilosort4",
                "sorter_params": {"Th_universal": 10},
                "preprocessing": {"bandpass": {"freq_min": 300}},
                "max_duration_s": 30,
            }
        ),
        DEPLOYMENT,
    )
    parsed = settings.WorkerSettings.from_env(env_of(single.submit_job))
    assert parsed.effective_run_id == single.run_id
    assert parsed.source == dandi_source("000409", "draft", ASSET)
    assert parsed.sorter_params == {"Th_universal": 10}

    assets = ["a/a_ecephys.nwb", "b/b_ecephys.nwb"]
    array = plan_submission(
        parse_request({"dandiset_id": "000409", "asset_glob": "*/*.nwb", "sorter": "kilosort3"}),
        DEPLOYMENT,
        assets=assets,
    )
    assert array.manifest is not None
    for index, run in enumerate(array.runs):
        child_env = apply_array_child(
            env_of(array.submit_job) | {ARRAY_INDEX_VAR: str(index)}, array.manifest
        )
        child = settings.WorkerSettings.from_env(child_env)
        assert (child.dandi_asset_path, child.effective_run_id) == (assets[index], run.run_id)

    bad = plan_submission(
        parse_request({"input_uri": "s3://lab-bucket/a.nwb", "sorter_params": {"Thx": 1}}),
        DEPLOYMENT,
    )
    with pytest.raises(settings.ConfigError, match="SORTER_PARAMS: unknown key 'Thx'"):
        settings.WorkerSettings.from_env(env_of(bad.submit_job))
    json.dumps(array.manifest)  # the manifest is plain JSON


def test_local_files_are_for_run_local_only() -> None:
    request = parse_request({"input_uri": "file:///data/rec.nwb"})
    with pytest.raises(RequestError, match="a file:// URI is local"):
        plan_submission(request, DEPLOYMENT)


def test_results_options_reach_the_worker_as_it_validates_them() -> None:
    """quality_thresholds, phy_pc_features and publish_dandiset_id become the worker's
    QUALITY_THRESHOLDS, PHY_PC_FEATURES and PUBLISH_DANDISET_ID, which it reads back as sent."""
    from spikebatch.worker.settings import WorkerSettings

    thresholds = {"mua": {"snr": {"greater": 3}, "presence_ratio": None}}
    request = parse_request(
        {
            "input_uri": "s3://lab-bucket/a.nwb",
            "quality_thresholds": thresholds,
            "phy_pc_features": False,
            "publish_dandiset_id": "000500",
        }
    )
    env = env_of(plan_submission(request, DEPLOYMENT).submit_job)
    assert json.loads(env["QUALITY_THRESHOLDS"]) == {
        "mua": {"presence_ratio": None, "snr": {"greater": 3.0}}
    }
    assert env["PHY_PC_FEATURES"] == "false" and env["PUBLISH_DANDISET_ID"] == "000500"
    # an S3 input publishes to the stack's DANDI instance, whose key the job reads
    assert env["DANDI_API_URL"] == DEPLOYMENT.dandi_api_url
    settings = WorkerSettings.from_env(env)
    assert settings.quality_thresholds == request.quality_thresholds
    assert settings.phy_pc_features is False and settings.publish_dandiset_id == "000500"

    plain = env_of(
        plan_submission(
            parse_request({"input_uri": "s3://lab-bucket/a.nwb"}), DEPLOYMENT
        ).submit_job
    )
    assert not {"QUALITY_THRESHOLDS", "PHY_PC_FEATURES", "PUBLISH_DANDISET_ID"} & set(plain)

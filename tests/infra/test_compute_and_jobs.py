"""GPU compute, queues and job definitions, as synthesized from the real cdk.json."""

from __future__ import annotations

import json
import re

from aws_cdk.assertions import Match, Template

from spikebatch.contract import IMAGE_VAR, Env
from stacks.compute import SCRATCH_USER_DATA
from stacks.imds import (
    FIREWALL_UNIT,
    IMDS_RULE,
    firewall_block,
    firewall_from_user_data,
    instance_guard_script,
)


def _ce_type_by_logical_id(synthesized) -> dict[str, str]:
    return {
        logical_id: ce["Properties"]["ComputeResources"]["Type"]
        for logical_id, ce in synthesized.of_type("AWS::Batch::ComputeEnvironment").items()
    }


def _queue_order(queue: dict) -> list[str]:
    """Logical ids of the queue's compute environments, in order."""
    entries = sorted(queue["ComputeEnvironmentOrder"], key=lambda e: e["Order"])
    return [e["ComputeEnvironment"]["Fn::GetAtt"][0] for e in entries]


def test_compute_environments_are_gpu_only_scale_to_zero_and_al2023_nvidia(synthesized):
    config = synthesized.config
    envs = synthesized.props("AWS::Batch::ComputeEnvironment")
    assert len(envs) == 2
    for env in envs:
        resources = env["ComputeResources"]
        assert env["Type"] == "managed"
        assert resources["Ec2Configuration"] == [{"ImageType": "ECS_AL2023_NVIDIA"}]
        assert resources["MinvCpus"] == 0
        assert resources["MaxvCpus"] == config.max_vcpus
        # Exactly the configured GPU sizes: no "optimal" (C4/M4/R4) classes added.
        assert resources["InstanceTypes"] == config.instance_types
        assert all(re.match(r"^g(4dn|5|6)\.", t) for t in resources["InstanceTypes"])
        assert "LaunchTemplate" in resources
    by_type = {e["ComputeResources"]["Type"]: e["ComputeResources"] for e in envs}
    assert by_type["SPOT"]["AllocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert by_type["SPOT"]["BidPercentage"] == config.spot_bid_percentage
    assert by_type["EC2"]["AllocationStrategy"] == "BEST_FIT_PROGRESSIVE"


def test_launch_template_requires_imdsv2_and_an_encrypted_gp3_root(synthesized):
    Template.from_json(synthesized.template).has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "MetadataOptions": Match.object_like(
                        {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
                    ),
                    "BlockDeviceMappings": [
                        {
                            "DeviceName": "/dev/xvda",
                            "Ebs": {
                                "DeleteOnTermination": True,
                                "Encrypted": True,
                                "VolumeSize": synthesized.config.root_volume_gib,
                                "VolumeType": "gp3",
                            },
                        }
                    ],
                }
            )
        },
    )
    assert synthesized.config.root_volume_gib >= 200


def test_launch_template_user_data_is_mime_multipart_that_mounts_nvme_scratch(synthesized):
    (template,) = synthesized.props("AWS::EC2::LaunchTemplate")
    user_data = template["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    assert user_data.startswith("Content-Type: multipart/mixed; boundary=")
    assert 'Content-Type: text/x-shellscript; charset="utf-8"' in user_data
    # The whole script, byte for byte, inside the MIME part.
    assert SCRATCH_USER_DATA.read_text() in user_data
    script = SCRATCH_USER_DATA.read_text()
    for needed in ("Amazon EC2 NVMe Instance Storage", "mdadm --create", "--level=0", "/scratch"):
        assert needed in script


def test_user_data_closes_imds_to_non_root_before_anything_else(synthesized):
    """The guard is the first part; its rule block is the one stacks.imds renders (the
    image-tier test runs that block in a network namespace)."""
    (template,) = synthesized.props("AWS::EC2::LaunchTemplate")
    user_data = template["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    guard = instance_guard_script()
    assert guard in user_data
    assert user_data.index(guard) < user_data.index(SCRATCH_USER_DATA.read_text())
    assert firewall_from_user_data(user_data) == firewall_block()
    assert IMDS_RULE in firewall_block() and "! --uid-owner 0" in IMDS_RULE
    # Applied now and at every boot; the agent's job-role endpoint stays open.
    assert f"systemctl enable {FIREWALL_UNIT}" in guard
    assert "169.254.170.2" not in firewall_block()
    assert "ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST=true" in guard
    assert "/etc/spikebatch/instance.json" in guard


def test_default_queue_tries_spot_first_then_on_demand(synthesized):
    types = _ce_type_by_logical_id(synthesized)
    orders = [_queue_order(q) for q in synthesized.props("AWS::Batch::JobQueue")]
    assert sorted([types[ce] for ce in order] for order in orders) == [["EC2"], ["SPOT", "EC2"]]


def test_priority_queue_is_on_demand_only_and_outranks_the_default(synthesized):
    types = _ce_type_by_logical_id(synthesized)
    queues = synthesized.props("AWS::Batch::JobQueue")
    priority = next(q for q in queues if len(q["ComputeEnvironmentOrder"]) == 1)
    default = next(q for q in queues if len(q["ComputeEnvironmentOrder"]) == 2)
    assert [types[ce] for ce in _queue_order(priority)] == ["EC2"]
    assert priority["Priority"] > default["Priority"]


def test_both_queues_cancel_jobs_stuck_in_runnable(synthesized):
    seconds = synthesized.config.runnable_timeout_minutes * 60
    expected = [
        {"Action": "CANCEL", "MaxTimeSeconds": seconds, "Reason": reason, "State": "RUNNABLE"}
        for reason in (
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
            "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
        )
    ]
    for queue in synthesized.props("AWS::Batch::JobQueue"):
        assert queue["JobStateTimeLimitActions"] == expected


def _job_definition(synthesized, suffix: str) -> dict:
    (jd,) = [
        p
        for p in synthesized.props("AWS::Batch::JobDefinition")
        if p["JobDefinitionName"] == f"{synthesized.config.stack_name}-sort-{suffix}"
    ]
    return jd


def _requirements(jd: dict) -> dict[str, str]:
    return {r["Type"]: r["Value"] for r in jd["ContainerProperties"]["ResourceRequirements"]}


def test_gpu_job_definition_reserves_one_gpu_and_the_configured_size(synthesized):
    config = synthesized.config
    jd = _job_definition(synthesized, "gpu")
    assert _requirements(jd) == {
        "GPU": "1",
        "VCPU": str(config.gpu_job_vcpus),
        "MEMORY": str(config.gpu_job_memory_gib * 1024),
    }
    assert jd["PlatformCapabilities"] == ["EC2"]


def test_cpu_job_definition_reserves_no_gpu(synthesized):
    config = synthesized.config
    assert _requirements(_job_definition(synthesized, "cpu")) == {
        "VCPU": str(config.cpu_job_vcpus),
        "MEMORY": str(config.cpu_job_memory_gib * 1024),
    }


def test_job_definitions_retry_spot_reclaims_only_and_time_out(synthesized):
    config = synthesized.config
    for suffix in ("gpu", "cpu"):
        jd = _job_definition(synthesized, suffix)
        assert jd["RetryStrategy"] == {
            "Attempts": config.retry_attempts,
            "EvaluateOnExit": [
                {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
                {"Action": "EXIT", "OnReason": "*"},
            ],
        }
        assert jd["Timeout"] == {"AttemptDurationSeconds": round(config.job_timeout_hours * 3600)}
        assert jd["PropagateTags"] is True


def test_job_containers_get_the_worker_contract_defaults_and_scratch(synthesized):
    bucket_id = synthesized.data_bucket_id
    (secret_id,) = synthesized.of_type("AWS::SecretsManager::Secret")
    for suffix, sorter in (("gpu", "kilosort3"), ("cpu", "kilosort4")):
        container = _job_definition(synthesized, suffix)["ContainerProperties"]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        # run.json records which image ran: the job definition's own image URI.
        assert env.pop(IMAGE_VAR) == container["Image"]
        assert env == {
            Env.OUTPUT_URI: {"Fn::Join": ["", ["s3://", {"Ref": bucket_id}, "/results"]]},
            Env.DANDI_API_KEY_SECRET_ARN: {"Ref": secret_id},
            Env.DANDI_API_URL: synthesized.config.dandi_api_url,
            Env.SCRATCH_DIR: "/scratch",
            Env.SORTER: sorter,
            "DANDI_NO_ET": "1",
            # Not left to botocore's IMDS fallback, which the jobs cannot reach.
            "AWS_DEFAULT_REGION": {"Ref": "AWS::Region"},
        }
        assert container["Volumes"] == [
            {"Host": {"SourcePath": "/scratch"}, "Name": "scratch"},
            {"Host": {"SourcePath": "/etc/spikebatch"}, "Name": "instance-facts"},
        ]
        # The instance facts (stacks.imds) are the host's: read-only in the job.
        assert container["MountPoints"] == [
            {"ContainerPath": "/scratch", "ReadOnly": False, "SourceVolume": "scratch"},
            {
                "ContainerPath": "/etc/spikebatch",
                "ReadOnly": True,
                "SourceVolume": "instance-facts",
            },
        ]
        log = container["LogConfiguration"]
        assert log["LogDriver"] == "awslogs"
        assert log["Options"]["awslogs-group"]["Ref"] in synthesized.of_type("AWS::Logs::LogGroup")


def test_job_image_is_the_cdk_docker_asset_built_for_linux_amd64(synthesized):
    images = _asset_manifest(synthesized)["dockerImages"]
    (image,) = images.values()
    assert image["source"]["dockerFile"] == "containers/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    image_uris = {
        p["ContainerProperties"]["Image"]["Fn::Sub"]
        for p in synthesized.props("AWS::Batch::JobDefinition")
    }
    (uri,) = image_uris
    assert uri.endswith(":" + next(iter(images)))


def test_docker_build_context_holds_only_the_allowlisted_files(synthesized):
    (image,) = _asset_manifest(synthesized)["dockerImages"].values()
    context = synthesized.assembly_dir / image["source"]["directory"]
    top = {p.name for p in context.iterdir()}
    assert top <= {
        ".dockerignore",
        "containers",
        "spikebatch",
        "pyproject.toml",
        "README.md",
        "requirements",
    }
    assert {"containers", "spikebatch", "pyproject.toml"} <= top
    assert not list(context.rglob("__pycache__"))


def _asset_manifest(synthesized) -> dict:
    path = synthesized.assembly_dir / f"{synthesized.stack.stack_name}.assets.json"
    return json.loads(path.read_text())

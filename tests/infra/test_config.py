"""Deployment settings: cdk.json defaults, overrides, and bad values that must fail synth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import aws_cdk as cdk
import pytest

import app as cdk_app
from stacks.config import ConfigError, SpikeBatchConfig, load_config
from tests.infra.build_inputs import REPO_ROOT, cdk_json_context

CDK_JSON_CONTEXT = cdk_json_context()


def test_cdk_json_holds_exactly_the_model_defaults():
    """cdk.json documents every key with its default; the model agrees."""
    block = CDK_JSON_CONTEXT["spikebatch"]
    assert set(block) == set(SpikeBatchConfig.model_fields)
    assert load_config(CDK_JSON_CONTEXT) == SpikeBatchConfig()


def test_cli_style_overrides_replace_single_keys():
    config = load_config(
        {
            **CDK_JSON_CONTEXT,
            "spikebatch:max_vcpus": "128",
            "spikebatch:spot": "false",
            "spikebatch:instance_types": '["g5.xlarge", "g5.8xlarge"]',
            "spikebatch:alarm_email": "lab@example.org",
        }
    )
    assert config.max_vcpus == 128
    assert config.spot is False
    assert config.instance_types == ["g5.xlarge", "g5.8xlarge"]
    assert config.alarm_email == "lab@example.org"
    assert config.resource_limits == {"max_vcpus": 32, "max_memory_gib": 128, "max_gpus": 1}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"instance_types": ["c6i.2xlarge"]},
            "spikebatch.instance_types: 'c6i.2xlarge' has no GPU",
        ),
        (
            {"instance_types": ["p9.huge"]},
            "spikebatch.instance_types: unknown instance type 'p9.huge'",
        ),
        ({"instance_types": []}, "spikebatch.instance_types:"),
        ({"max_vcpus": 8}, "spikebatch.max_vcpus: 8 is smaller than one g4dn.4xlarge (16 vCPUs)"),
        ({"max_vcps": 64}, "spikebatch.max_vcps: unknown key; known keys: stack_name,"),
        (
            {"root_volume_gib": 50},
            "spikebatch.root_volume_gib: Input should be greater than or equal to 100",
        ),
        (
            {"log_retention_days": 10},
            "spikebatch.log_retention_days: 10 is not a CloudWatch retention",
        ),
        ({"removal_policy": "keep"}, "spikebatch.removal_policy:"),
        ({"spot_bid_percentage": 0}, "spikebatch.spot_bid_percentage:"),
        ({"runnable_timeout_minutes": 5}, "spikebatch.runnable_timeout_minutes:"),
        (
            {"alarm_email": "not-an-address"},
            "spikebatch.alarm_email: 'not-an-address' is not an e-mail",
        ),
        (
            {"extra_input_bucket_arns": ["my-bucket"]},
            "spikebatch.extra_input_bucket_arns: 'my-bucket'",
        ),
        ({"default_sorter": "kilosort9"}, "spikebatch.default_sorter: unknown sorter 'kilosort9'"),
        ({"vpc_mode": "nat"}, "spikebatch.vpc_mode:"),
        ({"stack_name": "1-bad name"}, "spikebatch.stack_name: must start with a letter"),
        (
            {"gpu_job_memory_gib": 64},
            "spikebatch.gpu_job_vcpus/gpu_job_memory_gib: 8 vCPUs + 64 GiB",
        ),
        (
            {"powertools_layer_arn": "arn:aws:lambda:us-east-1:017000801446:layer:X"},
            "spikebatch.powertools_layer_arn:",
        ),
        (
            {"noncurrent_version_expiry_days": 0},
            "spikebatch.noncurrent_version_expiry_days: Input should be greater than or equal to 1",
        ),
        (
            {"failed_events_alarm_age_days": 14},
            "spikebatch.failed_events_alarm_age_days: Input should be less than or equal to 13",
        ),
        (
            {"run_record_reserved_concurrency": 0},
            "spikebatch.run_record_reserved_concurrency: Input should be greater than or equal",
        ),
        (
            {"submit_reserved_concurrency": 51},
            "spikebatch.submit_reserved_concurrency: Input should be less than or equal to 50",
        ),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_key(override, message):
    block = {**CDK_JSON_CONTEXT["spikebatch"], **override}
    with pytest.raises(ConfigError) as excinfo:
        load_config({"spikebatch": block})
    assert str(excinfo.value).startswith(message), str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_a_bad_override_fails_app_construction_before_any_resource():
    app = cdk.App(context={**CDK_JSON_CONTEXT, "spikebatch:instance_types": '["m6i.2xlarge"]'})
    with pytest.raises(ConfigError, match=r"^spikebatch.instance_types: 'm6i.2xlarge' has no GPU"):
        cdk_app.build(app)
    assert app.node.children == []


def test_app_entry_point_exits_with_one_line_naming_the_key(tmp_path):
    """What `cdk synth -c spikebatch:max_vcpus=4` prints: the CLI passes context this way."""
    env = {
        **os.environ,
        "CDK_CONTEXT_JSON": json.dumps({**CDK_JSON_CONTEXT, "spikebatch:max_vcpus": "4"}),
        "CDK_OUTDIR": str(tmp_path / "cdk.out"),
    }
    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "spikebatch config error: spikebatch.max_vcpus: 4 is smaller than one g4dn.4xlarge"
        " (16 vCPUs); raise it or drop that instance type"
    )

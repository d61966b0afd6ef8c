"""The real CDK CLI (pinned in package.json) synthesizes with no AWS credentials at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.infra.build_inputs import REPO_ROOT, cdk_json_context, require_build_inputs


def test_npx_cdk_synth_works_offline_without_credentials(tmp_path):
    require_build_inputs()
    if shutil.which("npx") is None or not (REPO_ROOT / "node_modules" / "aws-cdk").is_dir():
        pytest.skip("the pinned CDK CLI is not installed (make install runs npm ci)")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CDK_DEFAULT_")) or k == "AWS_EC2_METADATA_DISABLED"
    }
    env.update(
        AWS_EC2_METADATA_DISABLED="true",  # no instance-role credentials either
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        CDK_DISABLE_CLI_TELEMETRY="true",
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
    )
    out = tmp_path / "cdk.out"
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "-o", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    stack_name = cdk_json_context()["spikebatch"]["stack_name"]
    template = json.loads((out / f"{stack_name}.template.json").read_text())
    assert "JobQueueArn" in template["Outputs"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["artifacts"][stack_name]["environment"] == "aws://unknown-account/unknown-region"
    )

"""One synth per session: the real app, built from the real cdk.json context.

Every infra test asserts on this one cloud assembly (synth takes ~15 s here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.build_inputs import cdk_json_context, require_build_inputs

# jsii prints a banner for Node 20 (end-of-life) unless told which major to accept.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@dataclass
class Synthesized:
    app: Any
    stack: Any
    config: Any
    template: dict[str, Any]
    assembly_dir: Path

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r["Type"] == cfn_type}

    def props(self, cfn_type: str) -> list[dict[str, Any]]:
        return [r["Properties"] for r in self.of_type(cfn_type).values()]

    @property
    def data_bucket_id(self) -> str:
        """The data bucket: the one that logs its access (to the other bucket)."""
        (bucket_id,) = [
            k
            for k, r in self.of_type("AWS::S3::Bucket").items()
            if "LoggingConfiguration" in r["Properties"]
        ]
        return bucket_id

    def function(self, service: str) -> tuple[str, dict[str, Any]]:
        """(logical id, properties) of the Lambda with POWERTOOLS_SERVICE_NAME=service."""
        for k, r in self.of_type("AWS::Lambda::Function").items():
            env = r["Properties"].get("Environment", {}).get("Variables", {})
            if env.get("POWERTOOLS_SERVICE_NAME") == service:
                return k, r["Properties"]
        raise AssertionError(f"no Lambda with POWERTOOLS_SERVICE_NAME={service}")


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    require_build_inputs()
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    import app as cdk_app
    from stacks.config import load_config
    from stacks.nag import describe_findings

    context = cdk_json_context()
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(context=context, outdir=str(outdir))
    stack = cdk_app.build(app)
    # The same rule pack app.py registers, run directly so a failure lists the findings.
    violations = list(AwsSolutionsChecks(app).validate_scope(app).violations)
    if violations:  # app.synth() would fail on them too; say which ones
        pytest.fail("unacknowledged cdk-nag findings:\n" + describe_findings(violations))
    assembly = app.synth()
    template = json.loads((Path(assembly.directory) / stack.template_file).read_text())
    yield Synthesized(
        app=app,
        stack=stack,
        config=load_config(context),
        template=template,
        assembly_dir=Path(assembly.directory),
    )

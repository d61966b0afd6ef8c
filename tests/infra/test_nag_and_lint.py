"""cdk-nag AwsSolutions and cfn-lint on the synthesized app: zero findings."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file

from stacks.nag import describe_findings

# GPU-rich regions a lab is likely to deploy in; cfn-lint checks region-specific specs.
LINT_REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]


def test_cdk_nag_aws_solutions_has_no_unacknowledged_findings(synthesized):
    report = AwsSolutionsChecks(synthesized.app).validate_scope(synthesized.app)
    assert report.violations == [], describe_findings(report.violations)


def test_cdk_nag_check_really_catches_an_insecure_bucket():
    """The check above can fail: the same pack flags an unlogged, non-SSL bucket."""
    app = cdk.App()
    stack = cdk.Stack(app, "Insecure")
    s3.Bucket(stack, "Open")
    rules = {v.rule_name for v in AwsSolutionsChecks(app).validate_scope(app).violations}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_every_acknowledgement_gives_a_specific_reason(synthesized):
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    reasons: dict[str, str] = {}
    for construct in synthesized.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == key and entry.data:
                for rule_id, reason in entry.data.items():
                    reasons[f"{construct.node.path}: {rule_id}"] = reason
    assert reasons, "expected acknowledgements (IAM prefixes, managed ECS role, ...)"
    for where, reason in reasons.items():
        assert len(reason) >= 40, f"{where}: reason too vague: {reason!r}"


def test_cfn_lint_reports_no_errors_or_warnings_on_any_template(synthesized):
    templates = sorted(Path(synthesized.assembly_dir).glob("*.template.json"))
    assert templates
    for template in templates:
        matches = lint_file(template, config=ManualArgs(regions=LINT_REGIONS))
        assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == [], (
            template.name
        )

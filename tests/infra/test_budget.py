"""The monthly budget in the stack: the cost-allocation tag always; with monthly_budget_usd
the AWS Budgets budget, its two alerts, the brake Lambda (scoped) and cdk-nag/cfn-lint clean.

The default synth (cdk.json: no budget) is the session's; the budgeted one is built once
here from the same cdk.json with ``spikebatch:monthly_budget_usd`` set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from stacks.budget import COST_TAG_KEY
from tests.infra.conftest import Synthesized
from tests.infra.test_iam import _as_list, _function_role, _queue_arns, _role_statements
from tests.infra.test_nag_and_lint import LINT_REGIONS

BUDGET_USD = 250


def brake_json(synthesized: Synthesized) -> dict[str, Any]:
    """The ARN of the data bucket's brake.json, as synthesized."""
    arn = {"Fn::GetAtt": [synthesized.data_bucket_id, "Arn"]}
    return {"Fn::Join": ["", [arn, "/brake.json"]]}


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    from tests.infra.build_inputs import cdk_json_context, require_build_inputs

    require_build_inputs()
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    import app as cdk_app
    from stacks.config import load_config
    from stacks.nag import describe_findings

    context = cdk_json_context() | {
        "spikebatch:monthly_budget_usd": str(BUDGET_USD),
        "spikebatch:alarm_email": "lab@example.org",
    }
    app = cdk.App(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out.budget")))
    stack = cdk_app.build(app)
    violations = list(AwsSolutionsChecks(app).validate_scope(app).violations)
    if violations:
        pytest.fail("unacknowledged cdk-nag findings:\n" + describe_findings(violations))
    assembly = app.synth()
    template = json.loads((Path(assembly.directory) / stack.template_file).read_text())
    yield Synthesized(app, stack, load_config(context), template, Path(assembly.directory))


def _tags(props: dict[str, Any]) -> dict[str, str]:
    tags = props.get("Tags") or {}
    return tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags}


def test_every_resource_that_costs_carries_the_cost_allocation_tag(synthesized):
    name = synthesized.config.stack_name
    envs = synthesized.props("AWS::Batch::ComputeEnvironment")
    assert envs and all(_tags(e)[COST_TAG_KEY] == name for e in envs)
    # Batch tags the instances it launches; so does the launch template, and their volumes.
    assert all(e["ComputeResources"]["Tags"][COST_TAG_KEY] == name for e in envs)
    (template,) = synthesized.props("AWS::EC2::LaunchTemplate")
    specs = {
        s["ResourceType"]: _tags(s) for s in template["LaunchTemplateData"]["TagSpecifications"]
    }
    assert specs["instance"][COST_TAG_KEY] == name and specs["volume"][COST_TAG_KEY] == name
    data = synthesized.resources[synthesized.data_bucket_id]["Properties"]
    assert _tags(data)[COST_TAG_KEY] == name


def test_without_monthly_budget_usd_there_is_no_budget_and_no_brake(synthesized):
    assert synthesized.config.monthly_budget_usd is None
    assert synthesized.of_type("AWS::Budgets::Budget") == {}
    services = {
        r["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
        for r in synthesized.of_type("AWS::Lambda::Function").values()
        if "POWERTOOLS_SERVICE_NAME" in r["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert "spikebatch-brake" not in services
    assert "MonthlyBudgetUsd" not in synthesized.template["Outputs"]
    _, submit = synthesized.function("spikebatch-submit")
    assert "MONTHLY_BUDGET_USD" not in submit["Environment"]["Variables"]


def test_budget_counts_the_tag_and_alerts_at_80_forecast_and_100_actual(budgeted):
    (budget,) = budgeted.props("AWS::Budgets::Budget")
    data = budget["Budget"]
    assert data["BudgetLimit"] == {"Amount": BUDGET_USD, "Unit": "USD"}
    assert (data["BudgetType"], data["TimeUnit"]) == ("COST", "MONTHLY")
    assert data["CostFilters"] == {"TagKeyValue": [f"user:{COST_TAG_KEY}$SpikeBatch"]}
    failures, brake_topic = (
        next(k for k, r in budgeted.of_type("AWS::SNS::Topic").items() if word in k)
        for word in ("Failures", "Brake")
    )
    alerts = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"]): n
        for n in budget["NotificationsWithSubscribers"]
    }
    assert set(alerts) == {("FORECASTED", 80), ("ACTUAL", 100)}
    for alert in alerts.values():
        assert alert["Notification"]["ComparisonOperator"] == "GREATER_THAN"
        assert alert["Notification"]["ThresholdType"] == "PERCENTAGE"
    assert alerts["FORECASTED", 80]["Subscribers"] == [
        {"SubscriptionType": "SNS", "Address": {"Ref": failures}}
    ]
    assert alerts["ACTUAL", 100]["Subscribers"] == [
        {"SubscriptionType": "SNS", "Address": {"Ref": brake_topic}},
        {"SubscriptionType": "EMAIL", "Address": "lab@example.org"},
    ]
    # The brake Lambda is what the 100 % topic delivers to.
    brake_id, _ = budgeted.function("spikebatch-brake")
    (subscription,) = [
        s for s in budgeted.props("AWS::SNS::Subscription") if s["TopicArn"] == {"Ref": brake_topic}
    ]
    assert subscription["Protocol"] == "lambda"
    assert subscription["Endpoint"] == {"Fn::GetAtt": [brake_id, "Arn"]}
    outputs = budgeted.template["Outputs"]
    assert float(outputs["MonthlyBudgetUsd"]["Value"]) == BUDGET_USD


def test_only_this_accounts_budgets_may_publish_to_both_topics_and_use_their_key(budgeted):
    topics = {k for k in budgeted.of_type("AWS::SNS::Topic")}
    allowed = set()
    for policy in budgeted.props("AWS::SNS::TopicPolicy"):
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement.get("Principal") == {"Service": "budgets.amazonaws.com"}:
                assert statement["Action"] == "sns:Publish"
                assert statement["Condition"]["StringEquals"] == {
                    "aws:SourceAccount": {"Ref": "AWS::AccountId"}
                }
                assert ":budgets::" in json.dumps(statement["Condition"]["ArnLike"])
                allowed.add(statement["Resource"]["Ref"])
    assert allowed == topics
    (key,) = budgeted.props("AWS::KMS::Key")
    [kms] = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "budgets.amazonaws.com"}
    ]
    assert kms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert "aws:SourceAccount" in kms["Condition"]["StringEquals"]


def test_brake_lambda_may_only_disable_our_queues_and_environments_and_write_brake_json(
    budgeted,
):
    statements = _role_statements(budgeted, _function_role(budgeted, "spikebatch-brake"))
    batch = [s for s in statements if any(a.startswith("batch:") for a in _as_list(s["Action"]))]
    assert [(s["Sid"], s["Action"]) for s in batch] == [
        ("DisableOurQueues", "batch:UpdateJobQueue"),
        ("DisableOurComputeEnvironments", "batch:UpdateComputeEnvironment"),
    ]
    environments = [
        {"Fn::GetAtt": [k, "ComputeEnvironmentArn"]}
        for k in budgeted.of_type("AWS::Batch::ComputeEnvironment")
    ]
    assert sorted(map(str, batch[0]["Resource"])) == sorted(map(str, _queue_arns(budgeted)))
    assert sorted(map(str, batch[1]["Resource"])) == sorted(map(str, environments))
    s3 = [s for s in statements if any(a.startswith("s3:") for a in _as_list(s["Action"]))]
    assert s3 == [
        {
            "Sid": "RecordTheBrake",
            "Action": "s3:PutObject",
            "Effect": "Allow",
            "Resource": brake_json(budgeted),
        }
    ]
    (failures,) = [k for k in budgeted.of_type("AWS::SNS::Topic") if "Failures" in k]
    publish = [s for s in statements if s["Action"] == "sns:Publish"]
    assert [s["Resource"] for s in publish] == [{"Ref": failures}]
    _, brake = budgeted.function("spikebatch-brake")
    env = brake["Environment"]["Variables"]
    assert env["JOB_QUEUE_ARNS"]["Fn::Join"][1] == batch[0]["Resource"]
    assert env["COMPUTE_ENVIRONMENT_ARNS"]["Fn::Join"][1] == batch[1]["Resource"]
    assert env["FAILURE_TOPIC_ARN"] == {"Ref": failures}
    # The CLI enables the same ones again.
    joined = budgeted.template["Outputs"]["ComputeEnvironmentArns"]["Value"]
    assert joined == env["COMPUTE_ENVIRONMENT_ARNS"]


def test_submit_lambda_knows_the_budget_and_may_say_it_refused(budgeted):
    _, submit = budgeted.function("spikebatch-submit")
    env = submit["Environment"]["Variables"]
    assert float(env["MONTHLY_BUDGET_USD"]) == BUDGET_USD
    (failures,) = [k for k in budgeted.of_type("AWS::SNS::Topic") if "Failures" in k]
    assert env["FAILURE_TOPIC_ARN"] == {"Ref": failures}
    statements = _role_statements(budgeted, _function_role(budgeted, "spikebatch-submit"))
    assert [s["Resource"] for s in statements if s["Action"] == "sns:Publish"] == [
        {"Ref": failures}
    ]
    # It reads brake.json, and only that, outside its own prefixes: a braked stack refuses.
    (brake,) = [s for s in statements if s.get("Sid") == "ReadTheBrake"]
    assert (brake["Action"], brake["Resource"]) == ("s3:GetObject", brake_json(budgeted))


def test_budgeted_template_passes_cfn_lint(budgeted):
    for template in sorted(budgeted.assembly_dir.glob("*.template.json")):
        matches = lint_file(template, config=ManualArgs(regions=LINT_REGIONS))
        assert [f"{m.rule.id} {m.message}" for m in matches] == [], template.name

"""Storage, network, triggers, observability and the stack outputs the CLI reads."""

from __future__ import annotations

import json
import tomllib

from aws_cdk import Token
from aws_cdk.assertions import Match, Template

from stacks.spikebatch_stack import OUTPUT_KEYS
from tests.infra.build_inputs import REPO_ROOT, cdk_json_context


def _buckets(synthesized) -> tuple[dict, dict]:
    """(data bucket, access-log bucket) properties."""
    buckets = synthesized.props("AWS::S3::Bucket")
    data = next(b for b in buckets if "LoggingConfiguration" in b)
    logs = next(b for b in buckets if "LoggingConfiguration" not in b)
    return data, logs


def test_buckets_are_encrypted_private_and_ssl_only(synthesized):
    for bucket in synthesized.props("AWS::S3::Bucket"):
        assert bucket["BucketEncryption"] == {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        }
        assert bucket["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
    policies = synthesized.props("AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies:
        deny = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert [(s["Action"], s["Principal"], s["Condition"]) for s in deny] == [
            ("s3:*", {"AWS": "*"}, {"Bool": {"aws:SecureTransport": "false"}})
        ]


def test_data_bucket_logs_access_and_expires_scratch_and_stale_uploads(synthesized):
    data, _ = _buckets(synthesized)
    (logs_id,) = [
        k
        for k, r in synthesized.of_type("AWS::S3::Bucket").items()
        if "LoggingConfiguration" not in r["Properties"]
    ]
    assert data["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": logs_id},
        "LogFilePrefix": "data-bucket/",
    }
    rules = {r["Id"]: r for r in data["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-scratch"]["Prefix"] == "scratch/"
    assert rules["expire-scratch"]["ExpirationInDays"] > 0
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 2
    }


def test_data_bucket_is_versioned_and_replaced_versions_expire(synthesized):
    """A mistaken delete, or a rerun that replaced results, can be undone for N days."""
    data, logs = _buckets(synthesized)
    assert data["VersioningConfiguration"] == {"Status": "Enabled"}
    assert "VersioningConfiguration" not in logs
    rules = {r["Id"]: r for r in data["LifecycleConfiguration"]["Rules"]}
    replaced = rules["expire-replaced-versions"]
    days = synthesized.config.noncurrent_version_expiry_days
    assert days == 30
    assert replaced == {
        "Id": "expire-replaced-versions",
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        "ExpiredObjectDeleteMarker": True,
        "Status": "Enabled",
    }


def test_the_noncurrent_expiry_follows_the_config():
    import aws_cdk as cdk
    from aws_cdk import RemovalPolicy

    from stacks.storage import Storage

    stack = cdk.Stack(cdk.App(context=cdk_json_context()), "StorageOnly")
    Storage(
        stack, "Storage", removal_policy=RemovalPolicy.DESTROY, noncurrent_version_expiry_days=7
    )
    Template.from_stack(stack).has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"NoncurrentVersionExpiration": {"NoncurrentDays": 7}})]
                )
            },
        },
    )


def test_access_log_bucket_expires_its_logs(synthesized):
    _, logs = _buckets(synthesized)
    (rule,) = logs["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 90 and rule["Status"] == "Enabled"
    # A decision, not an omission (stacks/storage.py says why): logs are write-once.
    assert "VersioningConfiguration" not in logs


def test_the_default_security_group_is_emptied(synthesized):
    """restrict_default_security_group: CDK's custom resource strips the VPC default
    group's rules, so nothing launched into it by hand gets the open default."""
    (restrict,) = [
        r["Properties"]
        for r in synthesized.resources.values()
        if r["Type"] == "Custom::VpcRestrictDefaultSG"
    ]
    (vpc_id,) = synthesized.of_type("AWS::EC2::VPC")
    assert restrict["DefaultSecurityGroupId"] == {"Fn::GetAtt": [vpc_id, "DefaultSecurityGroup"]}


def test_stateful_resources_are_retained_by_default(synthesized):
    assert synthesized.config.removal_policy == "retain"
    for cfn_type in ("AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::SecretsManager::Secret"):
        for resource in synthesized.of_type(cfn_type).values():
            assert resource["DeletionPolicy"] == "Retain", cfn_type


def test_every_log_group_has_the_configured_retention(synthesized):
    groups = synthesized.props("AWS::Logs::LogGroup")
    assert len(groups) >= 4  # jobs, job events, flow logs, two Lambdas
    assert {g["RetentionInDays"] for g in groups} == {synthesized.config.log_retention_days}


def test_vpc_has_no_nat_gateway_and_instances_accept_no_inbound_traffic(synthesized):
    template = Template.from_json(synthesized.template)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 0)
    subnets = synthesized.props("AWS::EC2::Subnet")
    assert subnets and all(s["MapPublicIpOnLaunch"] is True for s in subnets)
    (group,) = synthesized.props("AWS::EC2::SecurityGroup")
    assert "SecurityGroupIngress" not in group
    assert group["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "Allow all outbound traffic by default",
            "IpProtocol": "-1",
        }
    ]
    template.resource_count_is("AWS::EC2::FlowLog", 1)


def test_stack_is_env_agnostic_so_synth_needs_no_credentials(synthesized):
    assert Token.is_unresolved(synthesized.stack.account)
    assert Token.is_unresolved(synthesized.stack.region)


def test_s3_uploads_and_requests_trigger_the_submit_lambda(synthesized):
    (notifications,) = synthesized.props("Custom::S3BucketNotifications")
    submit = next(
        k
        for k, r in synthesized.of_type("AWS::Lambda::Function").items()
        if r["Properties"].get("Environment", {}).get("Variables", {}).get("JOB_QUEUE_ARN")
    )
    configs = notifications["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    got = {
        tuple(sorted((f["Name"], f["Value"]) for f in c["Filter"]["Key"]["FilterRules"]))
        for c in configs
    }
    assert got == {
        (("prefix", "requests/"), ("suffix", ".json")),
        (("prefix", "uploads/"), ("suffix", ".nwb")),
        (("prefix", "uploads/"), ("suffix", ".ap.meta")),  # a SpikeGLX probe, after its .bin
    }
    for c in configs:
        assert c["Events"] == ["s3:ObjectCreated:*"]
        assert c["LambdaFunctionArn"] == {"Fn::GetAtt": [submit, "Arn"]}


def test_submit_lambda_environment_is_the_documented_contract(synthesized):
    _, fn = synthesized.function("spikebatch-submit")
    env = fn["Environment"]["Variables"]
    assert set(env) == {
        "DATA_BUCKET",
        "JOB_QUEUE_ARN",
        "PRIORITY_QUEUE_ARN",
        "GPU_JOB_DEFINITION_ARN",
        "CPU_JOB_DEFINITION_ARN",
        "IDEMPOTENCY_TABLE",
        "DEFAULT_SORTER",
        "DANDI_API_URL",
        "RESOURCE_LIMITS",
        "POWERTOOLS_SERVICE_NAME",
        "LOG_LEVEL",
    }
    queues = synthesized.props("AWS::Batch::JobQueue")
    default_id, priority_id = (
        next(
            k
            for k, r in synthesized.of_type("AWS::Batch::JobQueue").items()
            if len(r["Properties"]["ComputeEnvironmentOrder"]) == n
        )
        for n in (2, 1)
    )
    assert len(queues) == 2
    assert env["JOB_QUEUE_ARN"] == {"Fn::GetAtt": [default_id, "JobQueueArn"]}
    assert env["PRIORITY_QUEUE_ARN"] == {"Fn::GetAtt": [priority_id, "JobQueueArn"]}
    # The largest configured instance (default config: the *.4xlarge sizes).
    assert json.loads(env["RESOURCE_LIMITS"]) == {
        "max_vcpus": 16,
        "max_memory_gib": 64,
        "max_gpus": 1,
    }
    assert env["DEFAULT_SORTER"] == "kilosort3"
    # ... and the submit path's own model reads it.
    from spikebatch.control.request import ResourceLimits

    assert ResourceLimits.from_json(env["RESOURCE_LIMITS"]) == ResourceLimits(16, 64.0, 1)


def test_run_record_lambda_environment_is_the_documented_contract(synthesized):
    _, fn = synthesized.function("spikebatch-run-record")
    assert set(fn["Environment"]["Variables"]) == {
        "DATA_BUCKET",
        "FAILURE_TOPIC_ARN",
        "LOG_GROUP_NAME",
        "IDEMPOTENCY_TABLE",
        "POWERTOOLS_SERVICE_NAME",
        "LOG_LEVEL",
    }


def test_lambdas_run_python_3_12_on_x86_with_the_pinned_powertools_layer(synthesized):
    pin = next(
        dep.split("==")[1]
        for dep in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["lambda"]
        if dep.startswith("aws-lambda-powertools==")
    )
    assert synthesized.config.powertools_version == pin
    parameters = synthesized.template["Parameters"]
    for service in ("spikebatch-submit", "spikebatch-run-record"):
        _, fn = synthesized.function(service)
        assert fn["Runtime"] == "python3.12"
        assert fn["Architectures"] == ["x86_64"]
        assert fn["Handler"] == "handler.handler"
        (layer,) = fn["Layers"]
        assert parameters[layer["Ref"]] == {
            "Type": "AWS::SSM::Parameter::Value<String>",
            "Default": f"/aws/service/powertools/python/x86_64/python3.12/{pin}",
        }


def test_job_state_changes_of_our_queues_reach_the_run_record_lambda_and_the_log(synthesized):
    run_record, _ = synthesized.function("spikebatch-run-record")
    (rule,) = [
        r
        for r in synthesized.props("AWS::Events::Rule")
        if r["EventPattern"]["detail-type"] == ["Batch Job State Change"]
    ]
    assert rule["EventPattern"] == {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job State Change"],
        "detail": {
            "jobQueue": [
                {"Fn::GetAtt": [k, "JobQueueArn"]}
                for k in synthesized.of_type("AWS::Batch::JobQueue")
            ]
        },
    }
    arns = [t["Arn"] for t in rule["Targets"]]
    assert {"Fn::GetAtt": [run_record, "Arn"]} in arns
    (events_log,) = [
        k
        for k, r in synthesized.of_type("AWS::Logs::LogGroup").items()
        if "/batch-job-state" in json.dumps(r["Properties"].get("LogGroupName", ""))
    ]
    assert any(json.dumps({"Ref": events_log}) in json.dumps(a) for a in arns)
    # EventBridge may write to that log group (a resource policy, not a custom resource).
    (policy,) = [
        p
        for p in synthesized.props("AWS::Logs::ResourcePolicy")
        if events_log in json.dumps(p["PolicyDocument"])
    ]
    assert "events.amazonaws.com" in json.dumps(policy["PolicyDocument"])


def test_idempotency_table_is_on_demand_with_pitr_and_ttl(synthesized):
    (table,) = synthesized.props("AWS::DynamoDB::Table")
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_failure_topic_is_encrypted_and_ssl_only(synthesized):
    (topic,) = synthesized.props("AWS::SNS::Topic")
    # Its own, rotated key: CloudWatch alarms cannot publish with the AWS-managed aws/sns key.
    (key_id,) = synthesized.of_type("AWS::KMS::Key")
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = synthesized.resources[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    (policy,) = synthesized.props("AWS::SNS::TopicPolicy")
    (deny,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # No alarm_email in the default config: no subscription.
    Template.from_json(synthesized.template).resource_count_is("AWS::SNS::Subscription", 0)


def test_dashboard_counts_jobs_by_state_durations_and_gpu_vcpus(synthesized):
    (dashboard,) = synthesized.props("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["DashboardBody"])
    for needed in (
        "stats count(*) as jobs by current",
        "detail.stoppedAt - detail.startedAt",
        "AWS/Usage",
        "G/Spot",
        "G/OnDemand",
    ):
        assert needed in body, needed


def test_dandi_secret_holds_a_placeholder_never_a_key(synthesized):
    from stacks.secrets import UNSET_SECRET_VALUE

    (secret,) = synthesized.props("AWS::SecretsManager::Secret")
    assert secret["SecretString"] == UNSET_SECRET_VALUE
    assert "GenerateSecretString" not in secret


def test_outputs_the_cli_reads_are_all_there(synthesized):
    outputs = synthesized.template["Outputs"]
    assert set(OUTPUT_KEYS) <= set(outputs)
    assert json.loads(outputs["ResourceLimits"]["Value"]) == synthesized.config.resource_limits
    assert outputs["DefaultSorter"]["Value"] == synthesized.config.default_sorter
    assert "#dashboards:name=" in json.dumps(outputs["DashboardUrl"]["Value"])

"""Least privilege, asserted statement by statement with the actual ARNs and prefixes."""

from __future__ import annotations

from typing import Any


def _role_statements(synthesized, role_id: str) -> list[dict[str, Any]]:
    statements = []
    for policy in synthesized.props("AWS::IAM::Policy"):
        if {"Ref": role_id} in policy["Roles"]:
            statements += policy["PolicyDocument"]["Statement"]
    return statements


def _by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements if "Sid" in s}


def _ref_id(value: dict) -> str:
    return value.get("Ref") or value["Fn::GetAtt"][0]


def _logical_id(synthesized, cfn_type: str, **props: Any) -> str:
    (logical_id,) = [
        k
        for k, r in synthesized.of_type(cfn_type).items()
        if all(r["Properties"].get(key) == v for key, v in props.items())
    ]
    return logical_id


def _objects(bucket_id: str, prefix: str) -> dict:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}*"]]}


def _object_pattern(bucket_id: str, pattern: str) -> dict:
    return {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{pattern}"]]}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _function_role(synthesized, service_name: str) -> str:
    return _ref_id(synthesized.function(service_name)[1]["Role"])


def _queue_arns(synthesized) -> list[dict]:
    return [{"Fn::GetAtt": [k, "JobQueueArn"]} for k in synthesized.of_type("AWS::Batch::JobQueue")]


def _job_definition_pattern(name: str) -> dict:
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":batch:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                f":job-definition/{name}:*",
            ],
        ]
    }


def test_job_role_reads_inputs_writes_results_and_reads_only_the_dandi_secret(synthesized):
    bucket = synthesized.data_bucket_id
    (jd,) = [
        p
        for p in synthesized.props("AWS::Batch::JobDefinition")
        if p["JobDefinitionName"].endswith("-gpu")
    ]
    role = _ref_id(jd["ContainerProperties"]["JobRoleArn"])
    statements = _role_statements(synthesized, role)
    (secret,) = synthesized.of_type("AWS::SecretsManager::Secret")
    assert _by_sid(statements) == {
        "ReadInputs": {
            "Sid": "ReadInputs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [_objects(bucket, "uploads/"), _objects(bucket, "manifests/")],
        },
        # A folder input (a SpikeGLX run, an Open Ephys recording) is listed before it is read.
        "ListInputs": {
            "Sid": "ListInputs",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": {"Fn::GetAtt": [bucket, "Arn"]},
            "Condition": {"StringLike": {"s3:prefix": ["uploads/*"]}},
        },
        "WriteResults": {
            "Sid": "WriteResults",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
            ],
            "Resource": _objects(bucket, "results/"),
        },
        "ListResults": {
            "Sid": "ListResults",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": {"Fn::GetAtt": [bucket, "Arn"]},
            "Condition": {"StringLike": {"s3:prefix": ["results/*"]}},
        },
        "ReadDandiApiKey": {
            "Sid": "ReadDandiApiKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": secret},
        },
    }
    assert len(statements) == 5, "the job role holds nothing but the five statements above"


def test_job_role_reads_configured_extra_input_buckets_and_stays_nag_clean():
    """A small stack with just the Jobs construct: the role may read the extra bucket's
    objects, and its cdk-nag acknowledgement matches the finding."""
    import aws_cdk as cdk
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_logs as logs
    from aws_cdk import aws_s3 as s3
    from aws_cdk import aws_secretsmanager as secretsmanager
    from aws_cdk.assertions import Match, Template
    from cdk_nag import AwsSolutionsChecks

    from stacks.jobs import Jobs

    app = cdk.App()
    stack = cdk.Stack(app, "JobsOnly")
    Jobs(
        stack,
        "Jobs",
        image=ecs.ContainerImage.from_registry("public.ecr.aws/docker/library/busybox:stable"),
        image_uri="public.ecr.aws/docker/library/busybox:stable",
        bucket=s3.Bucket(stack, "Data"),
        dandi_api_key=secretsmanager.Secret(stack, "Key"),
        dandi_api_url="https://api.dandiarchive.org/api",
        extra_input_bucket_arns=["arn:aws:s3:::lab-raw-data"],
        gpu_vcpus=8,
        gpu_memory_gib=30,
        cpu_vcpus=4,
        cpu_memory_gib=14,
        timeout=cdk.Duration.hours(1),
        retry_attempts=2,
        log_retention=logs.RetentionDays.ONE_WEEK,
    )
    Template.from_stack(stack).has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Sid": "ReadExtraInputs",
                            "Effect": "Allow",
                            "Action": "s3:GetObject",
                            "Resource": "arn:aws:s3:::lab-raw-data/*",
                        },
                        {  # a SpikeGLX run or an Open Ephys recording there is listed first
                            "Sid": "ListExtraInputs",
                            "Effect": "Allow",
                            "Action": "s3:ListBucket",
                            "Resource": "arn:aws:s3:::lab-raw-data",
                        },
                    ]
                )
            }
        },
    )
    findings = [
        v.rule_name
        for v in AwsSolutionsChecks(app).validate_scope(stack.node.find_child("Jobs")).violations
    ]
    assert findings == []


def test_submit_lambda_submits_only_to_this_apps_queues_and_job_definitions(synthesized):
    stack_name = synthesized.config.stack_name
    bucket = synthesized.data_bucket_id
    table = next(iter(synthesized.of_type("AWS::DynamoDB::Table")))
    statements = _by_sid(
        _role_statements(synthesized, _function_role(synthesized, "spikebatch-submit"))
    )
    submit = statements["SubmitToOurQueues"]
    assert submit["Action"] == "batch:SubmitJob"
    assert sorted(map(str, submit["Resource"])) == sorted(
        map(
            str,
            [
                *_queue_arns(synthesized),
                _job_definition_pattern(f"{stack_name}-sort-gpu"),
                _job_definition_pattern(f"{stack_name}-sort-cpu"),
            ],
        )
    )
    tag = statements["TagJobsOnSubmit"]
    assert tag["Action"] == "batch:TagResource"
    assert tag["Condition"] == {"StringEquals": {"batch:CreateAction": "SubmitJob"}}
    # Events name the object version they announce; reading a version needs GetObjectVersion.
    assert statements["ReadRequests"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert statements["ReadRequests"]["Resource"] == [
        _objects(bucket, "requests/"),
        _objects(bucket, "uploads/"),
    ]
    assert statements["WriteRecords"]["Action"] == "s3:PutObject"
    assert statements["WriteRecords"]["Resource"] == [
        _objects(bucket, "errors/"),
        _objects(bucket, "runs/"),
        _objects(bucket, "manifests/"),
        _objects(bucket, "campaigns/"),
        _objects(bucket, "requests/continue/"),  # a campaign's follow-up request
    ]
    assert statements["SpendLedger"]["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert statements["SpendLedger"]["Resource"] == _objects(bucket, "spend/")
    # A campaign skips what is done or in flight: it lists and reads the run records.
    assert statements["ReadRecords"]["Action"] == "s3:GetObject"
    assert statements["ReadRecords"]["Resource"] == [
        _objects(bucket, "runs/"),
        _objects(bucket, "campaigns/"),
    ]
    assert statements["ListRuns"]["Action"] == "s3:ListBucket"
    assert statements["ListRuns"]["Condition"] == {"StringLike": {"s3:prefix": ["runs/*"]}}
    # A SpikeGLX .meta's missing .bin reads as 404, and an input_uri glob lists uploads/.
    assert statements["ListUploads"]["Action"] == "s3:ListBucket"
    assert statements["ListUploads"]["Condition"] == {"StringLike": {"s3:prefix": ["uploads/*"]}}
    assert statements["Idempotency"]["Action"] == ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    assert statements["Idempotency"]["Resource"] == {"Fn::GetAtt": [table, "Arn"]}
    # A retry that takes over an interrupted invocation's claim looks its job up.
    find = statements["FindSubmittedJobs"]
    assert (find["Action"], find["Resource"]) == (["batch:ListJobs", "batch:DescribeJobs"], "*")


def test_run_record_lambda_writes_run_records_publishes_failures_describes_jobs(synthesized):
    bucket = synthesized.data_bucket_id
    (topic,) = synthesized.of_type("AWS::SNS::Topic")
    statements = _role_statements(synthesized, _function_role(synthesized, "spikebatch-run-record"))
    sids = _by_sid(statements)
    assert sids["RunRecords"]["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert sids["RunRecords"]["Resource"] == _objects(bucket, "runs/")
    # ListBucket lets a missing status.json read as 404, not 403; only under runs/.
    assert sids["ListRunRecords"]["Action"] == "s3:ListBucket"
    assert sids["ListRunRecords"]["Condition"] == {"StringLike": {"s3:prefix": ["runs/*"]}}
    assert sids["DescribeJobs"]["Action"] == "batch:DescribeJobs"
    assert sids["DescribeJobs"]["Resource"] == "*"
    # Issue 11: a run's publication and an array's children (run.json) read, the array's
    # summary page written; one file name per run folder, nothing else under results/.
    assert sids["ReadRunManifests"]["Action"] == "s3:GetObject"
    assert sids["ReadRunManifests"]["Resource"] == _object_pattern(bucket, "results/*/run.json")
    assert sids["WriteArraySummaries"]["Action"] == "s3:PutObject"
    assert sids["WriteArraySummaries"]["Resource"] == _object_pattern(
        bucket, "results/*/report/index.html"
    )
    assert sids["ListResults"]["Condition"] == {"StringLike": {"s3:prefix": ["results/*"]}}
    # Issue 19: a campaign's records read; only its progress shards written.
    assert sids["ReadCampaigns"]["Action"] == "s3:GetObject"
    assert sids["ReadCampaigns"]["Resource"] == _objects(bucket, "campaigns/")
    assert sids["WriteCampaignProgress"]["Action"] == "s3:PutObject"
    assert sids["WriteCampaignProgress"]["Resource"] == _object_pattern(
        bucket, "campaigns/*/progress/*"
    )
    assert sids["ListCampaigns"]["Condition"] == {"StringLike": {"s3:prefix": ["campaigns/*"]}}
    writes = [s for s in statements if "s3:PutObject" in _as_list(s["Action"])]
    assert [s["Sid"] for s in writes] == [
        "RunRecords",
        "WriteArraySummaries",
        "WriteCampaignProgress",
        "SpendLedger",
    ]
    # The month's spend ledger (spikebatch.control.budget), kept here and at submission.
    assert sids["SpendLedger"]["Resource"] == _objects(bucket, "spend/")
    assert sids["ListSpendLedger"]["Condition"] == {"StringLike": {"s3:prefix": ["spend/*"]}}
    publish = [s for s in statements if s["Action"] == "sns:Publish"]
    assert publish == [{"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": topic}}]
    # The topic has its own key (so CloudWatch alarms can publish): using it, and only it.
    (key,) = synthesized.of_type("AWS::KMS::Key")
    kms = [s for s in statements if "kms:Decrypt" in _as_list(s["Action"])]
    assert kms == [
        {
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [key, "Arn"]},
        }
    ]


def test_both_lambdas_may_send_what_they_give_up_on_to_the_failed_events_queue(synthesized):
    (queue,) = synthesized.of_type("AWS::SQS::Queue")
    for service in ("spikebatch-submit", "spikebatch-run-record"):
        statements = _role_statements(synthesized, _function_role(synthesized, service))
        send = [s for s in statements if "sqs:SendMessage" in _as_list(s["Action"])]
        assert send == [
            {
                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                "Effect": "Allow",
                "Resource": {"Fn::GetAtt": [queue, "Arn"]},
            }
        ], service


def test_no_policy_grants_service_wide_wildcard_actions(synthesized):
    for policy in synthesized.props("AWS::IAM::Policy"):
        for statement in policy["PolicyDocument"]["Statement"]:
            for action in _as_list(statement["Action"]):
                assert not action.endswith(":*") and action != "*", (action, statement)
            # '*' resources only where AWS offers no resource-level permission.
            if statement["Resource"] == "*":
                assert _as_list(statement["Action"]) in (
                    ["batch:DescribeJobs"],
                    ["batch:ListJobs", "batch:DescribeJobs"],
                    ["ecr:GetAuthorizationToken"],
                    ["ecs:DiscoverPollEndpoint", "ec2:DescribeTags"],
                ), statement


def test_lambda_roles_use_no_aws_managed_policies(synthesized):
    for service in ("spikebatch-submit", "spikebatch-run-record"):
        role = synthesized.resources[_function_role(synthesized, service)]["Properties"]
        assert "ManagedPolicyArns" not in role


def _ecs_arn(kind: str, name: str) -> dict:
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":ecs:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                f":{kind}/{name}",
            ],
        ]
    }


def test_instance_role_reaches_only_this_stacks_clusters_images_and_logs(synthesized):
    """The ECS agent's role, scoped (not the AWS-managed policy's Resource '*'): the
    clusters Batch names after the stack's compute environments, its repositories and
    the job log group."""
    envs = synthesized.props("AWS::Batch::ComputeEnvironment")
    names = sorted(ce["ComputeEnvironmentName"] for ce in envs)
    stack_name = synthesized.config.stack_name
    assert names == [f"{stack_name}-on-demand", f"{stack_name}-spot"]
    (profile_role,) = {
        _ref_id(role)
        for profile in synthesized.props("AWS::IAM::InstanceProfile")
        for role in profile["Roles"]
    }
    role = synthesized.resources[profile_role]["Properties"]
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    statements = _by_sid(_role_statements(synthesized, profile_role))
    clusters = [_ecs_arn("cluster", f"{n}_Batch_*") for n in names]
    instances = [_ecs_arn("container-instance", f"{n}_Batch_*/*") for n in names]
    assert sorted(map(str, statements["AgentClusters"]["Resource"])) == sorted(map(str, clusters))
    assert sorted(map(str, statements["AgentInstances"]["Resource"])) == sorted(map(str, instances))
    assert "ecs:Poll" in statements["AgentInstances"]["Action"]
    assert "ecs:RegisterContainerInstance" in statements["AgentClusters"]["Action"]
    assert statements["AgentDiscovery"]["Resource"] == "*"
    assert statements["AgentTagsOnRegister"]["Condition"] == {
        "StringEquals": {"ecs:CreateAction": "RegisterContainerInstance"}
    }
    unsid = [s for s in _role_statements(synthesized, profile_role) if "Sid" not in s]
    pulls = [s for s in unsid if "ecr:BatchGetImage" in _as_list(s["Action"])]
    assert pulls and all(s["Resource"] != "*" for s in pulls)
    logs = [s for s in unsid if "logs:PutLogEvents" in _as_list(s["Action"])]
    (log_statement,) = logs
    assert log_statement["Resource"]["Fn::GetAtt"][0] in synthesized.of_type("AWS::Logs::LogGroup")
    actions = {
        a for s in _role_statements(synthesized, profile_role) for a in _as_list(s["Action"])
    }
    assert "ecs:CreateCluster" not in actions

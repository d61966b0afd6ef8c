"""The non-default network and compute choices, on a small stack (no image, no Lambdas)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from stacks.compute import Compute
from stacks.nag import describe_findings
from stacks.network import Network
from stacks.observability import Observability


def test_endpoints_mode_without_spot_with_alarm_email_is_private_and_nag_clean():
    app = cdk.App()
    stack = cdk.Stack(app, "PrivateOnDemand")
    network = Network(
        stack, "Network", mode="endpoints", flow_log_retention=logs.RetentionDays.ONE_WEEK
    )
    compute = Compute(
        stack,
        "Compute",
        vpc=network.vpc,
        subnets=network.subnets,
        security_group=network.security_group,
        instance_types=["g5.xlarge"],
        max_vcpus=4,
        spot=False,
        spot_bid_percentage=100,
        root_volume_gib=100,
        runnable_timeout=cdk.Duration.minutes(10),
    )
    Observability(
        stack,
        "Observability",
        queues=compute.queues,
        job_log_group=logs.LogGroup(stack, "JobLogs", retention=logs.RetentionDays.ONE_WEEK),
        alarm_email="lab@example.org",
        log_retention=logs.RetentionDays.ONE_WEEK,
    )
    report = AwsSolutionsChecks(app).validate_scope(app)
    assert report.violations == [], describe_findings(report.violations)

    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    resources = template.to_json()["Resources"]
    endpoints = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::VPCEndpoint"
    ]
    gateway = [e for e in endpoints if e.get("VpcEndpointType", "Gateway") == "Gateway"]
    assert len(gateway) == 1 and "s3" in str(gateway[0]["ServiceName"])
    services = {str(e["ServiceName"]) for e in endpoints if e.get("VpcEndpointType") == "Interface"}
    for needed in (
        "ecr.api",
        "ecr.dkr",
        ".ecs",
        "ecs-agent",
        "ecs-telemetry",
        "logs",
        "secretsmanager",
        "sts",
    ):
        assert any(needed in s for s in services), needed
    # Endpoint HTTPS is open to the Batch instances' security group only, not to a CIDR.
    ingress = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    assert len(ingress) == 8
    assert all("SourceSecurityGroupId" in i and "CidrIp" not in i for i in ingress)
    assert all(i["FromPort"] == 443 for i in ingress)
    subnets = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::Subnet"]
    assert all(s["MapPublicIpOnLaunch"] is False for s in subnets)
    # spot=false: one on-demand environment serves both queues.
    (env,) = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::Batch::ComputeEnvironment"
    ]
    assert env["ComputeResources"]["Type"] == "EC2"
    queues = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Batch::JobQueue"]
    assert [len(q["ComputeEnvironmentOrder"]) for q in queues] == [1, 1]
    # alarm_email set: FAILED-job notifications go to that address.
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "lab@example.org"}
    )

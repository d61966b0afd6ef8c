"""The VPC: no NAT gateway, so it costs nothing while idle.

``public`` (default): instances get public IPs in public subnets and reach DANDI, ECR and
S3 through the internet gateway; the security group allows no inbound traffic at all.
``endpoints``: private isolated subnets with an S3 gateway endpoint and interface endpoints
for ECR, ECS, CloudWatch Logs, Secrets Manager and STS. No public IPs, but each interface
endpoint costs about $7/month per AZ, and DANDI (on the internet) is out of reach, so
only S3 inputs work.
"""

from __future__ import annotations

from typing import Literal

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.cfn_tidy import drop_provider_depends_on

# CDK's provider of the custom resource that empties the default security group.
RESTRICT_DEFAULT_SG_PROVIDER = "Custom::VpcRestrictDefaultSGCustomResourceProvider"

_INTERFACE_ENDPOINTS = {
    "Ecr": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
}


class Network(Construct):
    """``self.vpc``, ``self.subnets`` (where instances launch) and ``self.security_group``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        mode: Literal["public", "endpoints"],
        flow_log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, id)
        public = mode == "public"
        subnet_type = ec2.SubnetType.PUBLIC if public else ec2.SubnetType.PRIVATE_ISOLATED
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
            max_azs=2,  # env-agnostic stacks resolve at most two AZs (Fn::GetAZs)
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="batch",
                    subnet_type=subnet_type,
                    cidr_mask=20,
                    map_public_ip_on_launch=True if public else None,
                )
            ],
            # CDK removes the default security group's rules (a deploy-time custom resource):
            # nothing here uses it, and an open default group is a trap for anyone who does.
            restrict_default_security_group=True,
        )
        drop_provider_depends_on(Stack.of(self), RESTRICT_DEFAULT_SG_PROVIDER)
        self.subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=flow_log_retention)
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "Instances",
            vpc=self.vpc,
            description="Batch GPU instances: no inbound, all outbound",
            allow_all_outbound=True,
        )
        if not public:
            self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
            for name, service in _INTERFACE_ENDPOINTS.items():
                endpoint = self.vpc.add_interface_endpoint(
                    name, service=service, subnets=self.subnets, open=False
                )
                # HTTPS from the Batch instances only, not from the whole VPC CIDR.
                endpoint.connections.allow_default_port_from(self.security_group)

"""GPU compute: launch template, spot and on-demand compute environments, job queues."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.imds import instance_guard_script
from stacks.nag import acknowledge, arn_finding

SCRATCH_USER_DATA = Path(__file__).resolve().parent / "userdata" / "mount_scratch.sh"

# Reasons a job can sit in RUNNABLE forever; the queues cancel such jobs after a while.
_STUCK_REASONS = (
    batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY,
    batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
    batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
)


# What the ECS agent on a Batch instance calls, by the resource it names (the AWS-managed
# AmazonEC2ContainerServiceforEC2Role, less CreateCluster: Batch creates the cluster and sets
# ECS_CLUSTER, so the agent never creates one).
AGENT_CLUSTER_ACTIONS = [
    "ecs:RegisterContainerInstance",
    "ecs:DeregisterContainerInstance",
    "ecs:SubmitAttachmentStateChanges",
    "ecs:SubmitContainerStateChange",
    "ecs:SubmitTaskStateChange",
]
AGENT_INSTANCE_ACTIONS = [
    "ecs:Poll",
    "ecs:StartTelemetrySession",
    "ecs:UpdateContainerInstancesState",
]
# No resource-level permissions exist for these.
AGENT_UNSCOPED_ACTIONS = ["ecs:DiscoverPollEndpoint", "ec2:DescribeTags"]


def compute_environment_names(stack_name: str, spot: bool) -> dict[str, str]:
    """Fixed names: Batch names each CE's ECS cluster ``<name>_Batch_<uuid>``, so the
    instance role can name its clusters."""
    names = {"on_demand": f"{stack_name}-on-demand"}
    if spot:
        names["spot"] = f"{stack_name}-spot"
    return names


def scratch_user_data() -> ec2.MultipartUserData:
    """Batch merges launch-template user data only in MIME multipart form. The IMDS guard
    (stacks.imds) comes first, so the rule holds before anything else can fail."""
    user_data = ec2.MultipartUserData()
    for body in (instance_guard_script(), SCRATCH_USER_DATA.read_text()):
        user_data.add_part(
            ec2.MultipartBody.from_raw_body(
                content_type='text/x-shellscript; charset="utf-8"', body=body
            )
        )
    return user_data


class Compute(Construct):
    """``self.default_queue`` (spot first, then on-demand) and ``self.priority_queue``
    (on-demand only), both on GPU instances that scale to zero when idle; ``self.queues``
    and ``self.environments`` (the compute environments) for whoever acts on all of them."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        instance_types: Sequence[str],
        max_vcpus: int,
        spot: bool,
        spot_bid_percentage: int,
        root_volume_gib: int,
        runnable_timeout: Duration,
    ) -> None:
        super().__init__(scope, id)
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            require_imdsv2=True,
            # Jobs use host networking and, for non-root, IMDS is firewalled (stacks.imds);
            # one hop also keeps any bridge-network container from getting a token.
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        root_volume_gib,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
            user_data=scratch_user_data(),
        )
        stack = Stack.of(self)
        self.names = compute_environment_names(stack.stack_name, spot)
        self.instance_role = self._instance_role(list(self.names.values()))
        common = dict(
            instance_role=self.instance_role,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security_group],
            instance_types=[ec2.InstanceType(name) for name in instance_types],
            use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2023_NVIDIA)],
            minv_cpus=0,
            maxv_cpus=max_vcpus,
            launch_template=self.launch_template,
            update_to_latest_image_version=True,
            replace_compute_environment=False,
        )
        self.on_demand = batch.ManagedEc2EcsComputeEnvironment(
            self,
            "OnDemand",
            **common,
            compute_environment_name=self.names["on_demand"],
            spot=False,
            allocation_strategy=batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
        )
        self.spot = (
            batch.ManagedEc2EcsComputeEnvironment(
                self,
                "Spot",
                **common,
                compute_environment_name=self.names["spot"],
                spot=True,
                spot_bid_percentage=spot_bid_percentage,
                allocation_strategy=batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
            )
            if spot
            else None
        )
        stuck = [
            batch.JobStateTimeLimitAction(
                max_time=runnable_timeout,
                reason=reason,
                action=batch.JobStateTimeLimitActionsAction.CANCEL,
                state=batch.JobStateTimeLimitActionsState.RUNNABLE,
            )
            for reason in _STUCK_REASONS
        ]
        default_ces = [self.spot, self.on_demand] if self.spot else [self.on_demand]
        self.default_queue = batch.JobQueue(
            self,
            "DefaultQueue",
            priority=1,
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=ce, order=order)
                for order, ce in enumerate(default_ces, start=1)
            ],
            job_state_time_limit_actions=stuck,
        )
        self.priority_queue = batch.JobQueue(
            self,
            "PriorityQueue",
            priority=10,
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=self.on_demand, order=1)
            ],
            job_state_time_limit_actions=stuck,
        )
        self.queues = (self.default_queue, self.priority_queue)
        self.environments = tuple(ce for ce in (self.spot, self.on_demand) if ce is not None)

    def _instance_role(self, ce_names: list[str]) -> iam.Role:
        """The ECS agent's role on the instances: this stack's clusters only, instead of
        the AWS-managed policy's ``Resource: *`` (every cluster in the account)."""
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="ECS agent on spikebatch Batch instances: this stack's clusters only",
        )
        clusters = [
            stack.format_arn(service="ecs", resource="cluster", resource_name=f"{n}_Batch_*")
            for n in ce_names
        ]
        instances = [
            stack.format_arn(
                service="ecs", resource="container-instance", resource_name=f"{n}_Batch_*/*"
            )
            for n in ce_names
        ]
        statements = [
            ("AgentClusters", AGENT_CLUSTER_ACTIONS, clusters, None),
            ("AgentInstances", AGENT_INSTANCE_ACTIONS, instances, None),
            ("AgentDiscovery", AGENT_UNSCOPED_ACTIONS, ["*"], None),
            (
                "AgentTagsOnRegister",
                ["ecs:TagResource"],
                instances,
                {"StringEquals": {"ecs:CreateAction": "RegisterContainerInstance"}},
            ),
        ]
        for sid, actions, resources, conditions in statements:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid=sid, actions=actions, resources=resources, conditions=conditions
                )
            )
        for arn in (*clusters, *instances):
            acknowledge(
                role,
                arn_finding(stack, arn),
                "The ECS clusters Batch creates for this stack's named compute environments"
                " (<name>_Batch_<uuid>) and their container instances; the uuid is Batch's.",
            )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecs:DiscoverPollEndpoint, ec2:DescribeTags and ecr:GetAuthorizationToken have no"
            " resource-level permissions; every other agent call names this stack's clusters.",
        )
        return role

    def allow_agent(
        self, *, repositories: Sequence[ecr.IRepository], log_groups: Sequence[logs.ILogGroup]
    ) -> None:
        """Image pulls and log writes the agent may do with the instance's own credentials
        (the job definitions' execution role normally does both): this stack's only."""
        for repository in repositories:
            repository.grant_pull(self.instance_role)
        for log_group in log_groups:
            log_group.grant_write(self.instance_role)

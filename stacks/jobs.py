"""Job definitions (GPU Kilosort3 and CPU) and the least-privilege job role."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from spikebatch.contract import (
    DEFAULT_SCRATCH_DIR,
    IMAGE_VAR,
    INSTANCE_FACTS_DIR,
    MANIFESTS_PREFIX,
    RESULTS_PREFIX,
    UPLOADS_PREFIX,
    Env,
)
from spikebatch.worker_image import BATCH_RUNTIME
from stacks.nag import acknowledge
from stacks.storage import allow_list_prefixes, allow_object_prefixes

SCRATCH_VOLUME = "scratch"
INSTANCE_FACTS_VOLUME = "instance-facts"
# Spot reclaims end a job with this status reason: retry those, exit on anything else.
SPOT_RECLAIM_STATUS_REASON = "Host EC2*"


def job_definition_names(stack_name: str) -> tuple[str, str]:
    """Fixed names (GPU, CPU): revisions keep them, so IAM can name them as ``name:*``."""
    return f"{stack_name}-sort-gpu", f"{stack_name}-sort-cpu"


class Jobs(Construct):
    """``self.gpu`` / ``self.cpu`` job definitions (named ``self.definition_names``),
    ``self.job_role``, ``self.log_group``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        image: ecs.ContainerImage,
        image_uri: str,
        bucket: s3.IBucket,
        dandi_api_key: secretsmanager.ISecret,
        dandi_api_url: str,
        extra_input_bucket_arns: Sequence[str],
        gpu_vcpus: int,
        gpu_memory_gib: int,
        cpu_vcpus: int,
        cpu_memory_gib: int,
        timeout: Duration,
        retry_attempts: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention)
        self.job_role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="spikebatch worker: read inputs, write results, read the DANDI key",
        )
        self._grant_job_role(bucket, dandi_api_key, extra_input_bucket_arns)
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="ECS agent: pull the worker image, write the job logs",
        )
        self.log_group.grant_write(self.execution_role)
        acknowledge(
            self.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken (image pull login) has no resource-level permissions;"
            " the layer pulls themselves are limited to the worker repositories.",
        )

        environment = {
            Env.OUTPUT_URI.value: bucket.s3_url_for_object(RESULTS_PREFIX.rstrip("/")),
            Env.DANDI_API_KEY_SECRET_ARN.value: dandi_api_key.secret_arn,
            Env.DANDI_API_URL.value: dandi_api_url,
            Env.SCRATCH_DIR.value: DEFAULT_SCRATCH_DIR,
            "DANDI_NO_ET": "1",
            IMAGE_VAR: image_uri,
            # botocore's last resort for a region is IMDS, which jobs may not reach
            # (stacks/imds.py): name it.
            "AWS_DEFAULT_REGION": Stack.of(self).region,
        }
        self.definition_names = job_definition_names(Stack.of(self).stack_name)
        gpu_name, cpu_name = self.definition_names
        common = dict(
            timeout=timeout,
            retry_attempts=retry_attempts,
            retry_strategies=[
                batch.RetryStrategy.of(
                    batch.Action.RETRY,
                    batch.Reason.custom(on_status_reason=SPOT_RECLAIM_STATUS_REASON),
                ),
                batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
            ],
            propagate_tags=True,
        )
        self.gpu = batch.EcsJobDefinition(
            self,
            "Gpu",
            job_definition_name=gpu_name,
            container=self._container(
                "GpuContainer",
                image,
                environment | {Env.SORTER.value: "kilosort3"},
                vcpus=gpu_vcpus,
                memory_gib=gpu_memory_gib,
                gpus=1,
            ),
            **common,
        )
        self.cpu = batch.EcsJobDefinition(
            self,
            "Cpu",
            job_definition_name=cpu_name,
            container=self._container(
                "CpuContainer",
                image,
                environment | {Env.SORTER.value: "kilosort4"},
                vcpus=cpu_vcpus,
                memory_gib=cpu_memory_gib,
                gpus=None,
            ),
            **common,
        )

    def _container(
        self,
        id: str,
        image: ecs.ContainerImage,
        environment: dict[str, str],
        *,
        vcpus: int,
        memory_gib: int,
        gpus: int | None,
    ) -> batch.EcsEc2ContainerDefinition:
        return batch.EcsEc2ContainerDefinition(
            self,
            id,
            image=image,
            cpu=vcpus,
            memory=Size.gibibytes(memory_gib),
            gpu=gpus,
            environment=environment,
            job_role=self.job_role,
            execution_role=self.execution_role,
            logging=ecs.LogDriver.aws_logs(stream_prefix="worker", log_group=self.log_group),
            # Init as PID 1 and a /dev/shm the sorters fit in: spikebatch.worker_image says why
            # (run-local --image and the container tests run with the same settings).
            linux_parameters=batch.LinuxParameters(
                self,
                f"{id}Linux",
                init_process_enabled=BATCH_RUNTIME.init_process,
                shared_memory_size=Size.mebibytes(BATCH_RUNTIME.shared_memory_mib),
            ),
            volumes=[
                batch.EcsVolume.host(
                    name=SCRATCH_VOLUME,
                    host_path=DEFAULT_SCRATCH_DIR,
                    container_path=DEFAULT_SCRATCH_DIR,
                    readonly=False,
                ),
                # Instance type and spot, written by the user data: the job cannot reach
                # IMDS (stacks.imds), so the cost record reads them here.
                batch.EcsVolume.host(
                    name=INSTANCE_FACTS_VOLUME,
                    host_path=INSTANCE_FACTS_DIR,
                    container_path=INSTANCE_FACTS_DIR,
                    readonly=True,
                ),
            ],
        )

    def _grant_job_role(
        self,
        bucket: s3.IBucket,
        dandi_api_key: secretsmanager.ISecret,
        extra_input_bucket_arns: Sequence[str],
    ) -> None:
        allow_object_prefixes(
            self.job_role,
            sid="ReadInputs",
            actions=["s3:GetObject"],
            bucket=bucket,
            prefixes=[UPLOADS_PREFIX, MANIFESTS_PREFIX],
        )
        # A folder input (a SpikeGLX run, an Open Ephys recording) is listed before it is read.
        allow_list_prefixes(
            self.job_role, sid="ListInputs", bucket=bucket, prefixes=[UPLOADS_PREFIX]
        )
        if extra_input_bucket_arns:
            self.job_role.add_to_policy(
                iam.PolicyStatement(
                    sid="ReadExtraInputs",
                    actions=["s3:GetObject"],
                    resources=[f"{arn}/*" for arn in extra_input_bucket_arns],
                )
            )
            self.job_role.add_to_policy(
                iam.PolicyStatement(
                    sid="ListExtraInputs",
                    actions=["s3:ListBucket"],
                    resources=list(extra_input_bucket_arns),
                )
            )
        for arn in extra_input_bucket_arns:
            acknowledge(
                self.job_role,
                f"AwsSolutions-IAM5[Resource::{arn}/*]",
                "s3:GetObject on an input bucket the deployer listed in extra_input_bucket_arns.",
            )
        allow_object_prefixes(
            self.job_role,
            sid="WriteResults",
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            bucket=bucket,
            prefixes=[RESULTS_PREFIX],
        )
        allow_list_prefixes(
            self.job_role, sid="ListResults", bucket=bucket, prefixes=[RESULTS_PREFIX]
        )
        self.job_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadDandiApiKey",
                actions=["secretsmanager:GetSecretValue"],
                resources=[dandi_api_key.secret_arn],
            )
        )

"""The one stack: constructs per concern, wired together, and the outputs the CLI reads."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Duration, Fn, RemovalPolicy, Stack, Tags
from aws_cdk import aws_logs as logs
from constructs import Construct

from spikebatch.control.stack_outputs import OUTPUT_KEYS
from stacks.budget import COST_TAG_KEY, Budget
from stacks.compute import Compute
from stacks.config import LOG_RETENTION_DAYS, SpikeBatchConfig
from stacks.jobs import Jobs
from stacks.network import Network
from stacks.observability import Observability
from stacks.registry import Registry
from stacks.secrets import Secrets
from stacks.storage import Storage
from stacks.triggers import Triggers


class SpikeBatchStack(Stack):
    """Everything ``cdk deploy`` stands up. Env-agnostic: synth needs no AWS account."""

    def __init__(
        self, scope: Construct, id: str, *, config: SpikeBatchConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, id, **kwargs)
        # The cost-allocation tag the budget counts: on every taggable resource, and through
        # the launch template's tag specifications on the instances and their volumes.
        Tags.of(self).add(COST_TAG_KEY, self.stack_name)
        retention = getattr(logs.RetentionDays, LOG_RETENTION_DAYS[config.log_retention_days])

        removal = RemovalPolicy.RETAIN if config.retain else RemovalPolicy.DESTROY

        storage = Storage(
            self,
            "Storage",
            removal_policy=removal,
            noncurrent_version_expiry_days=config.noncurrent_version_expiry_days,
        )
        registry = Registry(
            self, "Registry", removal_policy=removal, worker_image_tag=config.worker_image_tag
        )
        secrets = Secrets(self, "Secrets", removal_policy=removal)
        network = Network(self, "Network", mode=config.vpc_mode, flow_log_retention=retention)
        compute = Compute(
            self,
            "Compute",
            vpc=network.vpc,
            subnets=network.subnets,
            security_group=network.security_group,
            instance_types=config.instance_types,
            max_vcpus=config.max_vcpus,
            spot=config.spot,
            spot_bid_percentage=config.spot_bid_percentage,
            root_volume_gib=config.root_volume_gib,
            runnable_timeout=Duration.minutes(config.runnable_timeout_minutes),
        )
        jobs = Jobs(
            self,
            "Jobs",
            image=registry.image,
            image_uri=registry.image_uri,
            bucket=storage.bucket,
            dandi_api_key=secrets.dandi_api_key,
            dandi_api_url=config.dandi_api_url,
            extra_input_bucket_arns=config.extra_input_bucket_arns,
            gpu_vcpus=config.gpu_job_vcpus,
            gpu_memory_gib=config.gpu_job_memory_gib,
            cpu_vcpus=config.cpu_job_vcpus,
            cpu_memory_gib=config.cpu_job_memory_gib,
            timeout=Duration.minutes(round(config.job_timeout_hours * 60)),
            retry_attempts=config.retry_attempts,
            log_retention=retention,
        )
        registry.repository.grant_pull(jobs.execution_role)
        compute.allow_agent(repositories=registry.pull_repositories, log_groups=[jobs.log_group])
        observability = Observability(
            self,
            "Observability",
            queues=compute.queues,
            job_log_group=jobs.log_group,
            alarm_email=config.alarm_email,
            log_retention=retention,
            failed_events_alarm_age=Duration.days(config.failed_events_alarm_age_days),
        )
        triggers = Triggers(
            self,
            "Triggers",
            bucket=storage.bucket,
            default_queue=compute.default_queue,
            priority_queue=compute.priority_queue,
            gpu_job_definition=jobs.gpu,
            cpu_job_definition=jobs.cpu,
            job_definition_names=jobs.definition_names,
            job_events=observability.job_events,
            failure_topic=observability.failure_topic,
            failed_events=observability.failed_events,
            submit_reserved_concurrency=config.submit_reserved_concurrency,
            run_record_reserved_concurrency=config.run_record_reserved_concurrency,
            job_log_group=jobs.log_group,
            default_sorter=config.default_sorter,
            dandi_api_url=config.dandi_api_url,
            resource_limits=config.resource_limits,
            monthly_budget_usd=config.monthly_budget_usd,
            powertools_version=config.powertools_version,
            powertools_layer_arn=config.powertools_layer_arn,
            log_level=config.lambda_log_level,
            log_retention=retention,
            removal_policy=removal,
        )
        observability.alarm_on_errors(triggers.submit, "SubmitErrorsAlarm", "submit (S3 upload)")
        observability.alarm_on_errors(triggers.run_record, "RunRecordErrorsAlarm", "run-record")
        if config.monthly_budget_usd is not None:
            Budget(
                self,
                "Budget",
                monthly_budget_usd=config.monthly_budget_usd,
                observability=observability,
                queues=compute.queues,
                environments=compute.environments,
                bucket=storage.bucket,
                alarm_email=config.alarm_email,
                make_function=triggers.function,
                publish_failures=triggers.publish_failures,
                log_level=config.lambda_log_level,
            )
            # The CLI refuses work over it as the submit Lambda does (stack_outputs reads it).
            CfnOutput(self, "MonthlyBudgetUsd", value=repr(float(config.monthly_budget_usd)))

        outputs = {
            "DataBucketName": storage.bucket.bucket_name,
            "JobQueueArn": compute.default_queue.job_queue_arn,
            "PriorityQueueArn": compute.priority_queue.job_queue_arn,
            "GpuJobDefinitionArn": jobs.gpu.job_definition_arn,
            "CpuJobDefinitionArn": jobs.cpu.job_definition_arn,
            "LogGroupName": jobs.log_group.log_group_name,
            "FailureTopicArn": observability.failure_topic.topic_arn,
            "DashboardUrl": (
                f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region="
                f"{self.region}#dashboards:name={observability.dashboard.dashboard_name}"
            ),
            "IdempotencyTableName": triggers.idempotency_table.table_name,
            "DandiApiKeySecretArn": secrets.dandi_api_key.secret_arn,
            "ImageUri": registry.image_uri,
            "FailedEventsQueueUrl": observability.failed_events.queue_url,
            "SubmitFunctionName": triggers.submit.function_name,
            "RunRecordFunctionName": triggers.run_record.function_name,
        }
        assert tuple(outputs) == OUTPUT_KEYS
        for key, value in outputs.items():
            CfnOutput(self, key, value=value)
        # Extras the CLI uses to check a request the way the submit Lambda will.
        CfnOutput(self, "ResourceLimits", value=json.dumps(config.resource_limits, sort_keys=True))
        CfnOutput(self, "DefaultSorter", value=config.default_sorter)
        CfnOutput(self, "DandiApiUrl", value=config.dandi_api_url)
        CfnOutput(self, "WorkerRepositoryUri", value=registry.repository.repository_uri)
        # `spikebatch status` says when failures reach no one (alarm_email unset).
        CfnOutput(
            self,
            "FailureAlertsSubscribed",
            value="true" if observability.alerts_subscribed else "false",
        )
        # What `spikebatch queues enable` enables again after the budget brake.
        CfnOutput(
            self,
            "ComputeEnvironmentArns",
            value=Fn.join(",", [e.compute_environment_arn for e in compute.environments]),
        )

"""Deployment settings: the `spikebatch` block of cdk.json context, validated.

Only ``app.py`` reads context; it hands the result of :func:`load_config` to the stack,
and constructs receive plain typed values. Every bad value fails synth with one line
that names the key (``spikebatch.<key>: ...``), before any construct is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spikebatch.contract import DEFAULT_DANDI_API_URL
from spikebatch.control.stack_outputs import DEFAULT_STACK_NAME
from spikebatch.instances import INSTANCE_TYPES, InstanceSpec
from spikebatch.sorters import SORTERS

CONTEXT_KEY = "spikebatch"
# `cdk deploy -c spikebatch:max_vcpus=128` overrides one key of the cdk.json block.
OVERRIDE_PREFIX = f"{CONTEXT_KEY}:"

# CloudWatch Logs accepts only these retention periods (days -> aws_logs.RetentionDays name).
LOG_RETENTION_DAYS: dict[int, str] = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1827: "FIVE_YEARS",
    3653: "TEN_YEARS",
}

SUBMIT_JOB_TPS = 50
"""AWS Batch's SubmitJob quota: 50 transactions per second per account and region, not
adjustable (AWS Batch User Guide, "AWS Batch service quotas")."""

_STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,100}$")
_S3_BUCKET_ARN_RE = re.compile(r"^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LAYER_ARN_RE = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]+:\d+$")


class ConfigError(ValueError):
    """A bad deployment setting; the message names the key."""


class SpikeBatchConfig(BaseModel):
    """Typed deployment settings; defaults live in cdk.json (and mirror these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack_name: str = Field(
        DEFAULT_STACK_NAME,
        description="CloudFormation stack name (also prefixes the job-definition names)",
    )
    instance_types: list[str] = Field(
        default=[
            *("g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge"),
            *("g5.xlarge", "g5.2xlarge", "g5.4xlarge"),
            *("g6.xlarge", "g6.2xlarge", "g6.4xlarge"),
        ],
        min_length=1,
        description="GPU instance types of both compute environments; must be types in "
        "`spikebatch/instances.py` with a GPU",
    )
    max_vcpus: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="vCPU ceiling of each compute environment; at least the largest instance type",
    )
    spot: bool = Field(
        True,
        description="add the spot compute environment in front of on-demand in the default queue",
    )
    spot_bid_percentage: int = Field(
        default=100, ge=1, le=100, description="maximum spot price as % of on-demand"
    )
    root_volume_gib: int = Field(
        default=200,
        ge=100,
        le=16_384,
        description="encrypted gp3 root volume (≥ 100); holds `/scratch` on types without NVMe",
    )
    log_retention_days: int = Field(
        30,
        description="retention of every log group (a CloudWatch value: 1, 3, 5, 7, 14, 30, 60, "
        "90, …)",
    )
    removal_policy: Literal["retain", "destroy"] = Field(
        "retain",
        description="`retain` keeps bucket, table, secret and repository on `cdk destroy`; "
        "`destroy` deletes them (they must be empty)",
    )
    alarm_email: str | None = Field(
        None,
        description="e-mail address subscribed to the failure topic (confirm the mail AWS "
        "sends). Unset, synth warns and `spikebatch status` says no one is subscribed",
    )
    failed_events_alarm_age_days: int = Field(
        default=3,
        ge=1,
        le=13,
        description="alarm (repeated daily) once the oldest failed event has waited this many "
        "days; SQS deletes it at 14",
    )
    run_record_reserved_concurrency: int | None = Field(
        default=10,
        ge=1,
        le=1000,
        description="concurrent executions reserved for (and capping) the run-record Lambda, "
        "so a burst of Batch events (an array of 10,000 makes ~60,000) cannot starve the "
        "account's other Lambdas; the excess waits in Lambda's queue (up to 6 h). With both "
        "reservations the account's Lambda quota must be at least 30; `null` reserves none",
    )
    runnable_timeout_minutes: int = Field(
        default=60,
        ge=10,
        le=1440,
        description="cancel a job stuck in RUNNABLE for capacity or resource reasons after this "
        "long",
    )
    job_timeout_hours: float = Field(
        default=12, gt=0, le=336, description="attempt timeout of both job definitions"
    )
    retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="attempts per job; only spot reclaims (`Host EC2*`) are retried, any other "
        "failure exits",
    )
    gpu_job_vcpus: int = Field(
        default=8,
        ge=1,
        description="default vCPUs of a GPU job (a request may ask for more, up to "
        "`ResourceLimits`)",
    )
    gpu_job_memory_gib: int = Field(
        default=30,
        ge=1,
        description="default memory (GiB) of a GPU job (a request may ask for more, up to "
        "`ResourceLimits`)",
    )
    cpu_job_vcpus: int = Field(default=4, ge=1, description="default vCPUs of a CPU job")
    cpu_job_memory_gib: int = Field(
        default=14, ge=1, description="default memory (GiB) of a CPU job"
    )
    extra_input_bucket_arns: list[str] = Field(
        default_factory=list,
        description="other buckets (`arn:aws:s3:::name`) the workers may read inputs from",
    )
    vpc_mode: Literal["public", "endpoints"] = Field(
        "public", description="`public` or `endpoints` (see [Network](deploy.md#network))"
    )
    default_sorter: str = Field("kilosort3", description="sorter of requests that name none")
    dandi_api_url: str = Field(
        DEFAULT_DANDI_API_URL, description="DANDI instance for requests and workers"
    )
    powertools_version: str = Field(
        default="3.37.0",
        pattern=r"^\d+\.\d+\.\d+$",
        description="Powertools for AWS Lambda layer version (kept equal to the `lambda` extra "
        "in `pyproject.toml`)",
    )
    powertools_layer_arn: str | None = Field(
        None,
        description="explicit layer ARN, for regions without the public SSM parameter",
    )
    lambda_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level of both Lambdas"
    )
    noncurrent_version_expiry_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="days a replaced or deleted object of the data bucket stays restorable",
    )
    submit_reserved_concurrency: int | None = Field(
        default=10,
        ge=1,
        le=SUBMIT_JOB_TPS,
        description="concurrent executions reserved for the S3-triggered submit Lambda, which "
        "caps its SubmitJob rate ([why 10](submit.md#uploads-under-faults)); at most 50; "
        "`null` reserves none (needed while the account's Lambda concurrency quota is still 10)",
    )
    monthly_budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="month-to-date spend (USD) beyond which new work is refused, plus an AWS "
        "Budgets budget with alerts and the brake; see [Budgets](operations.md#budgets). "
        "`null`: no budget",
    )
    worker_image_tag: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="a tag of the stack's `WorkerRepositoryUri` (pushed by `spikebatch image "
        "build --push`) for the job definitions to run; `null` builds `containers/Dockerfile` "
        "at deploy time instead",
    )

    @field_validator("stack_name")
    @classmethod
    def _stack_name(cls, value: str) -> str:
        if not _STACK_NAME_RE.match(value):
            raise ValueError("must start with a letter and hold only letters, digits and '-'")
        return value

    @field_validator("instance_types")
    @classmethod
    def _gpu_instance_types(cls, value: list[str]) -> list[str]:
        for name in value:
            spec = INSTANCE_TYPES.get(name)
            if spec is None:
                known = ", ".join(sorted(s.name for s in INSTANCE_TYPES.values() if s.gpus))
                raise ValueError(f"unknown instance type {name!r}; known GPU types: {known}")
            if spec.gpus == 0:
                raise ValueError(f"{name!r} has no GPU; the compute environments need GPU types")
        if len(set(value)) != len(value):
            raise ValueError("lists an instance type twice")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"{value} is not a CloudWatch retention; use one of {sorted(LOG_RETENTION_DAYS)}"
            )
        return value

    @field_validator("alarm_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_RE.match(value):
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @field_validator("extra_input_bucket_arns")
    @classmethod
    def _bucket_arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not _S3_BUCKET_ARN_RE.match(arn):
                raise ValueError(f"{arn!r} is not a bucket ARN like arn:aws:s3:::my-bucket")
        return value

    @field_validator("default_sorter")
    @classmethod
    def _sorter(cls, value: str) -> str:
        if value not in SORTERS:
            raise ValueError(f"unknown sorter {value!r}; known: {', '.join(sorted(SORTERS))}")
        return value

    @field_validator("dandi_api_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("powertools_layer_arn")
    @classmethod
    def _layer_arn(cls, value: str | None) -> str | None:
        if value is not None and not _LAYER_ARN_RE.match(value):
            raise ValueError(f"{value!r} is not a versioned Lambda layer ARN")
        return value

    @model_validator(mode="after")
    def _fits(self) -> SpikeBatchConfig:
        largest = self.largest_instance
        if self.max_vcpus < largest.vcpus:
            raise ConfigError(
                f"{CONTEXT_KEY}.max_vcpus: {self.max_vcpus} is smaller than one {largest.name}"
                f" ({largest.vcpus} vCPUs); raise it or drop that instance type"
            )
        for kind in ("gpu", "cpu"):
            vcpus = getattr(self, f"{kind}_job_vcpus")
            memory = getattr(self, f"{kind}_job_memory_gib")
            if not any(s.vcpus >= vcpus and s.memory_gib > memory for s in self.instances):
                raise ConfigError(
                    f"{CONTEXT_KEY}.{kind}_job_vcpus/{kind}_job_memory_gib: {vcpus} vCPUs +"
                    f" {memory} GiB fit none of instance_types (memory must stay below the"
                    " instance's, which the ECS agent shares)"
                )
        return self

    @property
    def instances(self) -> list[InstanceSpec]:
        return [INSTANCE_TYPES[name] for name in self.instance_types]

    @property
    def largest_instance(self) -> InstanceSpec:
        """The biggest single instance a job can land on (vCPUs, then memory, then GPUs)."""
        return max(self.instances, key=lambda s: (s.vcpus, s.memory_gib, s.gpus))

    @property
    def resource_limits(self) -> dict[str, int]:
        """What one job may ask for: the submit Lambda rejects anything bigger."""
        largest = self.largest_instance
        return {
            "max_vcpus": largest.vcpus,
            "max_memory_gib": largest.memory_gib,
            "max_gpus": largest.gpus,
        }

    @property
    def retain(self) -> bool:
        return self.removal_policy == "retain"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "(config)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = ", ".join(SpikeBatchConfig.model_fields)
        msg = f"unknown key; known keys: {known}"
    if isinstance(err.get("ctx", {}).get("error"), ConfigError):
        return msg
    return f"{CONTEXT_KEY}.{key}: {msg}"


def _parse_override(raw: Any) -> Any:
    """CLI `-c` values arrive as strings: read JSON (lists, numbers, booleans) when it is."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_config(context: Mapping[str, Any]) -> SpikeBatchConfig:
    """Build the config from CDK context: the ``spikebatch`` block plus ``spikebatch:<key>``
    overrides. Raises :class:`ConfigError` with one line naming the bad key."""
    block = context.get(CONTEXT_KEY) or {}
    if isinstance(block, str):
        block = _parse_override(block)
    if not isinstance(block, Mapping):
        raise ConfigError(f"{CONTEXT_KEY}: must be a JSON object of settings")
    values = dict(block)
    for key, raw in context.items():
        if key.startswith(OVERRIDE_PREFIX):
            values[key.removeprefix(OVERRIDE_PREFIX)] = _parse_override(raw)
    try:
        return SpikeBatchConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None

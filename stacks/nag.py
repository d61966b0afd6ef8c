"""cdk-nag v3 acknowledgements: one helper so every one carries a specific reason.

v3 reports each wildcard resource as its own finding (``AwsSolutions-IAM5[Resource::...]``)
and has no prefix matching, so the helpers below spell the finding ids the way cdk-nag
renders them (``<LogicalId.Arn>``, ``<AWS::Region>``).
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_s3 as s3
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``construct`` and everything below it."""
    if len(reason) < 20:
        raise ValueError(f"{rule_id}: give a specific reason, not {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def object_prefix_finding(bucket: s3.IBucket, prefix: str) -> str:
    """The IAM5 finding id of ``<bucket ARN>/<prefix>*``."""
    return object_pattern_finding(bucket, f"{prefix}*")


def object_pattern_finding(bucket: s3.IBucket, pattern: str) -> str:
    """The IAM5 finding id of ``<bucket ARN>/<pattern>`` (a key pattern with wildcards)."""
    stack = Stack.of(bucket)
    logical_id = stack.resolve(stack.get_logical_id(bucket.node.default_child))
    return f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{pattern}]"


def acknowledge_object_prefixes(
    construct: IConstruct, bucket: s3.IBucket, prefixes: Iterable[str], actions: str
) -> None:
    """Object access limited to key prefixes is the least privilege S3 offers."""
    for prefix in prefixes:
        acknowledge(
            construct,
            object_prefix_finding(bucket, prefix),
            f"{actions} on objects under '{prefix}' only: S3 object ARNs need the trailing"
            " wildcard to name a key prefix.",
        )


def arn_finding(stack: Stack, arn: str) -> str:
    """The IAM5 finding id of an ARN built with ``Stack.format_arn`` (pseudo parameters
    render as ``<AWS::Region>``)."""
    rendered = stack.resolve(arn)
    if isinstance(rendered, dict):  # {"Fn::Join": ["", [...]]}
        parts = rendered["Fn::Join"][1]
        rendered = "".join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in parts)
    return f"AwsSolutions-IAM5[Resource::{rendered}]"


def describe_findings(violations: Iterable[object]) -> str:
    """One line per unacknowledged finding (a cdk-nag report's ``violations``)."""
    return "\n".join(
        f"{v.rule_name}: {[r.construct_path for r in v.violating_resources]}"  # type: ignore[attr-defined]
        for v in violations
    )

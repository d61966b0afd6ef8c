"""Small template fixes so cfn-lint passes with zero warnings."""

from __future__ import annotations

from aws_cdk import CfnResource, Stack
from aws_cdk import aws_iam as iam


def drop_role_depends_on(function: CfnResource, role: iam.IRole) -> None:
    """CDK makes a Lambda function DependsOn its role although its ``Role: GetAtt``
    already orders them (cfn-lint W3005). Keep only the role's policy dependency."""
    policy = role.node.try_find_child("DefaultPolicy")
    if policy is None:
        function.add_deletion_override("DependsOn")
    else:
        logical_id = Stack.of(function).get_logical_id(policy.node.default_child)
        function.add_override("DependsOn", [logical_id])


def drop_provider_depends_on(stack: Stack, provider_id: str) -> None:
    """The same for a CDK custom-resource provider (a stack-level singleton): its Handler
    DependsOn its Role, which ``Role: GetAtt`` already orders (cfn-lint W3005)."""
    provider = stack.node.try_find_child(provider_id)
    handler = provider.node.try_find_child("Handler") if provider else None
    if isinstance(handler, CfnResource):
        handler.add_deletion_override("DependsOn")

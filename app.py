#!/usr/bin/env python3
"""CDK app entry: the only place that reads context. ``cdk synth`` needs no AWS account."""

from __future__ import annotations

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import ConfigError, load_config
from stacks.spikebatch_stack import SpikeBatchStack


def build(app: cdk.App) -> SpikeBatchStack:
    """Validate the context into a config and add the stack (with cdk-nag) to ``app``.

    The stack is env-agnostic (no account/region): CloudFormation fills them in at
    deploy time, so synth makes no AWS calls and needs no credentials.
    """
    config = load_config(app.node.get_all_context())
    stack = SpikeBatchStack(
        app,
        config.stack_name,
        config=config,
        description="spikebatch: Kilosort and other spike sorters on AWS Batch GPUs",
    )
    cdk.Tags.of(stack).add("project", "spikebatch")
    # AwsSolutions checks run on every synth: an unacknowledged finding fails it.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack


def main() -> None:
    app = cdk.App()
    try:
        build(app)
    except ConfigError as exc:
        sys.exit(f"spikebatch config error: {exc}")
    app.synth()


if __name__ == "__main__":
    main()

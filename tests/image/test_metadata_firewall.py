"""The IMDS firewall in the launch template's user data, run for real in a throwaway
network namespace: the worker's uid (1000) cannot reach 169.254.169.254, root can, and both
still reach the ECS agent's credential endpoint (169.254.170.2).

The rule block is taken from the synthesized launch template, not copied. Everything runs
inside one ``unshare --net``, so the host's network and these addresses are never touched.
Needs root, ``unshare``, ``ip``, ``iptables`` and ``setpriv``; skipped with the reason
otherwise. In the docker tier (this folder): ``make test-image``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "netns" / "imds_firewall.sh"
TOOLS = ("unshare", "ip", "iptables", "setpriv")


@pytest.fixture(scope="module")
def netns() -> None:
    if os.geteuid() != 0:
        pytest.skip("metadata firewall test needs root (iptables in a network namespace)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"metadata firewall test needs {', '.join(missing)} (apt-get install iptables)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")


def synthesized_user_data() -> str:
    """The launch template's user data of a stack with the real Network and Compute."""
    import aws_cdk as cdk
    from aws_cdk import aws_logs as logs
    from aws_cdk.assertions import Template

    from stacks.compute import Compute
    from stacks.network import Network

    app = cdk.App()
    stack = cdk.Stack(app, "ImdsFirewall")
    network = Network(
        stack, "Network", mode="public", flow_log_retention=logs.RetentionDays.ONE_DAY
    )
    Compute(
        stack,
        "Compute",
        vpc=network.vpc,
        subnets=network.subnets,
        security_group=network.security_group,
        instance_types=["g5.xlarge"],
        max_vcpus=8,
        spot=False,
        spot_bid_percentage=100,
        root_volume_gib=200,
        runnable_timeout=cdk.Duration.hours(1),
    )
    (template,) = Template.from_stack(stack).find_resources("AWS::EC2::LaunchTemplate").values()
    user_data = template["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    assert isinstance(user_data, str), "the user data must synthesize to plain text"
    return user_data


def run_in_namespace(rules: str, tmp_path: Path) -> tuple[int, dict[tuple[str, str], str]]:
    """Apply ``rules`` twice in a fresh network namespace: (how many IMDS rules OUTPUT
    then holds, {(uid, address): open|blocked})."""
    script = tmp_path / "rules.sh"
    script.write_text(f"set -euo pipefail\n{rules}\n")
    done = subprocess.run(
        ["unshare", "--net", "bash", str(DRIVER), str(script), sys.executable],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    (count,) = [int(line[1]) for line in lines if line[0] == "rules"]
    return count, {(line[0], line[1]): line[2] for line in lines if len(line) == 3}


def test_only_root_reaches_imds_and_everyone_reaches_the_agent(netns, tmp_path):
    from stacks.imds import ECS_CREDENTIALS_ADDRESS, IMDS_ADDRESS, firewall_from_user_data

    rules = firewall_from_user_data(synthesized_user_data())
    assert "iptables" in rules
    count, reach = run_in_namespace(rules, tmp_path)
    assert count == 1, "applied twice (boot unit + user data), the rule must appear once"
    assert reach == {
        ("0", IMDS_ADDRESS): "open",
        ("1000", IMDS_ADDRESS): "blocked",
        ("0", ECS_CREDENTIALS_ADDRESS): "open",
        ("1000", ECS_CREDENTIALS_ADDRESS): "open",
    }


def test_without_the_rules_the_worker_uid_reaches_imds(netns, tmp_path):
    """The control: the namespace and probes themselves do not block anything."""
    count, reach = run_in_namespace("true", tmp_path)
    assert count == 0
    assert set(reach.values()) == {"open"}

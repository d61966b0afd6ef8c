"""The IMDS guard's user-data part is valid bash, and its rule sits where tests find it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from stacks.imds import (
    FIREWALL_BEGIN,
    FIREWALL_END,
    IMDS_RULE,
    firewall_block,
    firewall_from_user_data,
    instance_guard_script,
)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_guard_script_parses_as_bash(tmp_path):
    script = tmp_path / "guard.sh"
    script.write_text(instance_guard_script())
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_rule_is_checked_before_it_is_inserted_at_the_top():
    """Idempotent: the boot unit and the first-boot run may both apply it."""
    (line,) = [x for x in firewall_block().splitlines() if x.startswith("iptables")]
    check, insert = line.split(" || ")
    assert check.startswith("iptables -w -C ") and check.endswith("2>/dev/null")
    assert insert.startswith("iptables -w -I OUTPUT 1 ")
    assert IMDS_RULE.removeprefix("OUTPUT ") in insert


def test_the_block_is_found_between_its_markers():
    guard = instance_guard_script()
    block = firewall_from_user_data(f"MIME preamble\n{guard}\n--boundary--")
    assert block.startswith(FIREWALL_BEGIN) and block.endswith(FIREWALL_END)
    assert block == firewall_block()
    # The rule must hold before the best-effort facts (which may fail) are fetched.
    assert guard.index(FIREWALL_BEGIN) < guard.index("instance-life-cycle")

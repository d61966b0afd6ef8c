"""The instance metadata service (IMDS) is the host's, not the jobs'.

Batch jobs on EC2 use host networking, so without a rule the worker (uid 1000, parsing
untrusted files) could fetch the *instance* role's credentials from 169.254.169.254. The
launch template's user data (root, at boot) therefore:

1. rejects every packet to IMDS that a non-root process sends (``iptables -m owner``),
   now and at every boot (a systemd unit), before the ECS agent starts jobs;
2. writes what the worker used to read from IMDS (instance type, spot or on-demand) to
   ``INSTANCE_FACTS_FILE``, read-only, which the job definitions mount read-only;
3. leaves the ECS agent's credential endpoint (169.254.170.2), where the *job* role comes
   from, open, and says so in ecs.config (``ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST``).

The rule text lives only in :func:`firewall_commands`; tests take it from the synthesized
user data, between ``FIREWALL_BEGIN`` and ``FIREWALL_END``, and run it in a network namespace.
"""

from __future__ import annotations

from spikebatch.contract import INSTANCE_FACTS_DIR, INSTANCE_FACTS_FILE

IMDS_ADDRESS = "169.254.169.254"
ECS_CREDENTIALS_ADDRESS = "169.254.170.2"
FIREWALL_BEGIN = "# >>> spikebatch imds firewall"
FIREWALL_END = "# <<< spikebatch imds firewall"
FIREWALL_SCRIPT = "/usr/local/sbin/spikebatch-imds-firewall"
FIREWALL_UNIT = "spikebatch-imds-firewall.service"
# Only root (the ECS agent, ecs-init, cloud-init, SSM) may talk to IMDS.
IMDS_RULE = f"OUTPUT -d {IMDS_ADDRESS}/32 -m owner ! --uid-owner 0 -j REJECT"


def firewall_commands() -> tuple[str, ...]:
    """Idempotent shell lines that put ``IMDS_RULE`` first in the OUTPUT chain."""
    return (f"iptables -w -C {IMDS_RULE} 2>/dev/null || iptables -w -I {_first(IMDS_RULE)}",)


def _first(rule: str) -> str:
    """``CHAIN spec`` -> ``CHAIN 1 spec``: insert at the top, ahead of any ACCEPT."""
    chain, spec = rule.split(" ", 1)
    return f"{chain} 1 {spec}"


def firewall_block() -> str:
    """The rule lines between the markers a test looks for."""
    return "\n".join((FIREWALL_BEGIN, *firewall_commands(), FIREWALL_END))


def instance_guard_script() -> str:
    """The user-data part: the rule first (now and at each boot; it must not wait on
    anything that can fail), then the instance facts (root still reaches IMDS; best
    effort), then the ECS agent's host-network job-role setting."""
    return f"""#!/bin/bash
# spikebatch: keep the instance metadata service (and the instance role) from the jobs.
set -euo pipefail
cat > {FIREWALL_SCRIPT} <<'RULES'
#!/bin/bash
set -euo pipefail
{firewall_block()}
RULES
chmod 0755 {FIREWALL_SCRIPT}
{FIREWALL_SCRIPT}
cat > /etc/systemd/system/{FIREWALL_UNIT} <<'UNIT'
[Unit]
Description=spikebatch: only root may reach the instance metadata service
Before=docker.service ecs.service
[Service]
Type=oneshot
ExecStart={FIREWALL_SCRIPT}
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable {FIREWALL_UNIT}

IMDS=http://{IMDS_ADDRESS}/latest
TOKEN=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/api/token" || true)
md() {{ curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/meta-data/$1" || true; }}
mkdir -p {INSTANCE_FACTS_DIR}
chmod 0755 {INSTANCE_FACTS_DIR}
printf '{{"instance_type": "%s", "instance_life_cycle": "%s"}}\\n' \\
  "$(md instance-type)" "$(md instance-life-cycle)" > {INSTANCE_FACTS_FILE}.tmp
chmod 0444 {INSTANCE_FACTS_FILE}.tmp
mv -f {INSTANCE_FACTS_FILE}.tmp {INSTANCE_FACTS_FILE}

# Jobs get the job role from the agent's endpoint ({ECS_CREDENTIALS_ADDRESS}), not from IMDS.
mkdir -p /etc/ecs
touch /etc/ecs/ecs.config
grep -q '^ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST=' /etc/ecs/ecs.config \\
  || echo 'ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST=true' >> /etc/ecs/ecs.config
echo "spikebatch: IMDS closed to non-root processes; facts in {INSTANCE_FACTS_FILE}"
"""


def firewall_from_user_data(user_data: str) -> str:
    """The rule block as it appears in rendered user data (for tests and audits)."""
    start = user_data.index(FIREWALL_BEGIN)
    end = user_data.index(FIREWALL_END, start) + len(FIREWALL_END)
    return user_data[start:end]

"""Which EC2 instance we run on (for the cost in run.json).

In order: ``INSTANCE_TYPE``; the facts file the launch template's user data writes
(``INSTANCE_FACTS_FILE``, mounted read-only: on Batch the job may not reach IMDS, see
stacks/imds.py); else IMDSv2, for a worker run by hand on EC2. IMDS is only reachable on
EC2; elsewhere the short timeouts make this return quickly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import requests

from spikebatch.contract import INSTANCE_FACTS_FILE

log = logging.getLogger(__name__)

IMDS_URL = "http://169.254.169.254/latest"
_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    instance_type: str | None
    spot: bool
    source: str  # "env", "file", "imds" or "unknown"


def _imds_get(session: requests.Session, token: str, path: str) -> str | None:
    response = session.get(
        f"{IMDS_URL}/meta-data/{path}",
        headers={"X-aws-ec2-metadata-token": token},
        timeout=_TIMEOUT_S,
    )
    return response.text.strip() if response.ok else None


def read_facts(path: Path) -> dict[str, str] | None:
    """The user data's ``{"instance_type", "instance_life_cycle"}``; None when absent or
    unreadable (a run outside Batch)."""
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) else None


def detect_instance(
    instance_type: str | None, *, facts_file: Path = Path(INSTANCE_FACTS_FILE)
) -> InstanceInfo:
    """The instance type and purchase option: the facts file first, then IMDS."""
    facts = read_facts(facts_file)
    if facts is not None:
        return InstanceInfo(
            instance_type=instance_type or facts.get("instance_type") or None,
            spot=facts.get("instance_life_cycle") == "spot",
            source="env" if instance_type else "file",
        )
    return _from_imds(instance_type)


def _from_imds(instance_type: str | None) -> InstanceInfo:
    try:
        with requests.Session() as session:
            token = session.put(
                f"{IMDS_URL}/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
                timeout=_TIMEOUT_S,
            ).text
            life_cycle = _imds_get(session, token, "instance-life-cycle")
            found_type = instance_type or _imds_get(session, token, "instance-type")
        return InstanceInfo(
            instance_type=found_type,
            spot=life_cycle == "spot",
            source="env" if instance_type else "imds",
        )
    except requests.RequestException:
        log.debug("IMDS not reachable; not on EC2")
    return InstanceInfo(
        instance_type=instance_type, spot=False, source="env" if instance_type else "unknown"
    )

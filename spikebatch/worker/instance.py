"""Which EC2 instance we run on (for the cost in run.json): INSTANCE_TYPE, else IMDSv2.

IMDS is only reachable on EC2; elsewhere the short timeouts make this return quickly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

log = logging.getLogger(__name__)

IMDS_URL = "http://169.254.169.254/latest"
_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    instance_type: str | None
    spot: bool
    source: str  # "env", "imds" or "unknown"


def _imds_get(session: requests.Session, token: str, path: str) -> str | None:
    response = session.get(
        f"{IMDS_URL}/meta-data/{path}",
        headers={"X-aws-ec2-metadata-token": token},
        timeout=_TIMEOUT_S,
    )
    return response.text.strip() if response.ok else None


def detect_instance(instance_type: str | None) -> InstanceInfo:
    """The instance type and purchase option; spot is read from IMDS when reachable."""
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

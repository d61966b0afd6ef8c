"""The one seam where spikebatch creates boto3 clients.

boto3 already honours ``AWS_ENDPOINT_URL`` (tests point it at a loopback moto server) and
the usual credential chain, so this module only adds caching (a Lambda invocation or a
polling CLI must not rebuild clients every call) and standard retries.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from botocore.config import Config

# 32 pooled connections: the transfer manager runs up to 16 parallel parts per transfer,
# and botocore's default pool of 10 would serialise them.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    user_agent_extra="spikebatch",
    max_pool_connections=32,
)


@functools.lru_cache(maxsize=64)
def _cached_client(service: str, region: str | None, endpoint: str | None) -> Any:
    session = boto3.session.Session(region_name=region)
    return session.client(service, config=_CONFIG)


_default_region: str | None = None


def use_region(region: str | None) -> None:
    """Make ``region`` the default for every client (the CLI's ``--region``)."""
    global _default_region
    _default_region = region


def client(service: str, *, region: str | None = None) -> Any:
    """A boto3 client for ``service``; cached per region and endpoint override."""
    return _cached_client(service, region or _default_region, os.environ.get("AWS_ENDPOINT_URL"))


def region_of(any_client: Any) -> str:
    """The region a client talks to (for console links)."""
    return str(any_client.meta.region_name)


def clear_cache() -> None:
    """Forget cached clients (tests that switch credentials or regions)."""
    _cached_client.cache_clear()

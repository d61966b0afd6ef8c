"""Batch job state change → ``runs/<run-id>/status.json`` (+ SNS on FAILED). Thin handler."""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from spikebatch.control import batch_events

logger = Logger()
logging.getLogger("spikebatch")
copy_config_to_registered_loggers(source_logger=logger, include={"spikebatch"})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return batch_events.handle(event, os.environ)

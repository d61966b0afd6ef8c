"""AWS Budgets' 100 % ACTUAL alert (SNS) → job queues DISABLED + ``brake.json``. Thin: the
logic is ``spikebatch.control.brake`` (tested directly)."""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from spikebatch.control import brake

logger = Logger()
logging.getLogger("spikebatch")
copy_config_to_registered_loggers(source_logger=logger, include={"spikebatch"})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return brake.handle(event, os.environ)

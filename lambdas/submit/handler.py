"""S3 upload → AWS Batch. Thin: the logic is ``spikebatch.control.upload_trigger`` (tested directly)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from spikebatch.control import upload_trigger

logger = Logger()
logging.getLogger("spikebatch")
copy_config_to_registered_loggers(source_logger=logger, include={"spikebatch"})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A campaign too large for one invocation stops starting arrays before this, and
    # carries on in a follow-up (spikebatch.control.campaign).
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000
    return upload_trigger.handle(event, os.environ, deadline=deadline)

"""Publish stage: results to ``OUTPUT_URI/RUN_ID/`` in an order readers can trust.

1. ``begin``: clear whatever an earlier attempt of this RUN_ID left, then write
   ``run.json`` = running. A rerun therefore replaces a failed or partial run and never
   mixes two.
2. ``upload``: every result object (sorting/, units.nwb, quality_metrics.csv, phy/,
   report/*.png), then the run's page (``write_page``), which says how the run ended.
3. ``run.json`` = succeeded, last, so "succeeded" means everything is there.
On any failure the pipeline writes ``run.json`` = failed (with the stage and error) instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from spikebatch import transfer
from spikebatch.contract import RUN_JSON, RUN_PAGE, run_results_uri
from spikebatch.worker import stop

log = logging.getLogger(__name__)


class Publisher:
    """Writes one run's objects under ``<output_uri>/<run_id>``."""

    def __init__(self, output_uri: str, run_id: str) -> None:
        self.dest = run_results_uri(output_uri, run_id).rstrip("/")

    @property
    def run_json_uri(self) -> str:
        return f"{self.dest}/{RUN_JSON}"

    def previous_record(self) -> dict[str, Any] | None:
        """The record an earlier run of this RUN_ID left behind, if any ({} if unreadable)."""
        try:
            record = json.loads(transfer.read_bytes(self.run_json_uri))
        except transfer.NotFoundError:
            return None
        except json.JSONDecodeError:
            return {}
        return record if isinstance(record, dict) else {}

    def previous_status(self) -> str | None:
        """The status an earlier run of this RUN_ID left behind, if any."""
        record = self.previous_record()
        return None if record is None else record.get("status", "unreadable")

    def begin(self, record: dict[str, Any], *, final: bool = False) -> None:
        previous = self.previous_status()
        removed = transfer.delete_prefix(self.dest)
        if previous is not None or removed:
            log.info(
                "publish: replaced an earlier %s run (%d objects) at %s",
                previous,
                removed,
                self.dest,
            )
        self.write_record(record, final=final)

    def write_record(self, record: dict[str, Any], *, final: bool = False) -> bool:
        """Write run.json; ``final`` (succeeded or failed) seals it: later writes, the main
        thread's or a stop watchdog's, are skipped (False), so a finished record stays."""
        body = json.dumps(record, indent=2, sort_keys=False, default=str).encode()
        with stop.record_write(final=final) as allowed:
            if allowed:
                transfer.write_bytes(self.run_json_uri, body, content_type="application/json")
        if not allowed:
            log.info("%s is final already: not rewritten (%s)", RUN_JSON, record.get("status"))
        return allowed

    def write_page(self, html: str) -> None:
        """The run's page, ``report/index.html`` (self-contained: one object is all it needs)."""
        transfer.write_bytes(
            f"{self.dest}/{RUN_PAGE}", html.encode("utf-8"), content_type="text/html; charset=utf-8"
        )

    def upload(self, results_dir: Path) -> list[str]:
        """Upload every result object; ``run.json`` is never part of it."""
        if (results_dir / RUN_JSON).exists():
            raise RuntimeError(f"{RUN_JSON} must not be among the uploaded results")
        return transfer.upload_tree(results_dir, self.dest, progress=True)

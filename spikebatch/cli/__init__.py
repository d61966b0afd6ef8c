"""The ``spikebatch`` command line: submit, follow and fetch sorting runs on AWS Batch."""

from __future__ import annotations

from spikebatch.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]

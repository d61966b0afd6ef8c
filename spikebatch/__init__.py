"""spikebatch: spike sorting (Kilosort3 and friends) on AWS Batch GPUs.

The package is layered so each deployment unit carries only what it needs:
the core modules (contract, sorters, request, cost) are pure Python + pydantic and
go into the Lambda; ``spikebatch.worker`` needs SpikeInterface and runs in the image;
``spikebatch.cli`` needs typer/rich and runs on the user's machine.
"""

__version__ = "0.1.0"

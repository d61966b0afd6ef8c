"""spikebatch: spike sorting (Kilosort3 and friends) on AWS Batch GPUs.

The package is layered by architecture, so each deployment unit carries only what it needs:

- the shared contract, top-level modules (``contract``: env vars, run ids, bucket layout;
  ``sorters``, ``instances``, ``cost``, ``aws``), pure Python used by every part;
- the control plane, ``spikebatch.control`` (job requests, submission, the S3 and
  EventBridge triggers, run records): pure Python on boto3, shipped in the Lambdas;
- the data plane, ``spikebatch.worker`` (the pipeline in the image, SpikeInterface) and
  ``spikebatch.transfer`` (verified parallel downloads and uploads);
- ``spikebatch.cli``, the user's ``spikebatch`` command (typer, rich, the docker SDK).

Imports point one way only: cli -> control/data plane -> contract. No cycles.
"""

__version__ = "0.1.0"

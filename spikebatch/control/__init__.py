"""The control plane: job requests, submission to AWS Batch, the S3 and EventBridge
triggers, and the run records that follow each job.

Pure Python on boto3 (plus Powertools and pydantic in the Lambdas): it ships in both
Lambda assets, so it never imports the data plane (``spikebatch.worker``,
``spikebatch.transfer``) or the CLI.
"""

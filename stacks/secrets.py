"""The DANDI API key: a Secrets Manager secret whose value the user sets after deploy."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, SecretValue
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from spikebatch.contract import UNSET_SECRET_VALUE
from stacks.nag import acknowledge


class Secrets(Construct):
    """``self.dandi_api_key``: set it with ``aws secretsmanager put-secret-value``."""

    def __init__(self, scope: Construct, id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, id)
        self.dandi_api_key = secretsmanager.Secret(
            self,
            "DandiApiKey",
            description=(
                "DANDI API key for embargoed dandisets. Holds the placeholder "
                f"'{UNSET_SECRET_VALUE}' until you run: aws secretsmanager put-secret-value "
                "--secret-id <DandiApiKeySecretArn> --secret-string <key>"
            ),
            secret_string_value=SecretValue.unsafe_plain_text(UNSET_SECRET_VALUE),
            removal_policy=removal_policy,
        )
        acknowledge(
            self.dandi_api_key,
            "AwsSolutions-SMG4",
            "A DANDI API key is issued by the DANDI web UI; no rotation Lambda can renew it.",
        )

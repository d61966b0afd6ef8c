"""Lambda packaging without Docker: the handler plus the pure-Python spikebatch core.

The asset holds ``lambdas/<name>/*.py`` at its root (handler ``handler.handler``), the
shared contract (every top-level ``spikebatch/*.py`` module) and the control plane
(``spikebatch/control/``) as a ``spikebatch`` package; never the data plane
(``spikebatch/worker``, ``spikebatch/transfer``) or ``spikebatch/cli``, which need
SpikeInterface, typer or the docker SDK.
pydantic and Powertools come from the Powertools layer; boto3 from the runtime.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"
CORE_PACKAGE = REPO_ROOT / "spikebatch"
#: Subpackages of ``spikebatch`` the Lambdas carry (pure Python on boto3 + Powertools).
LAMBDA_SUBPACKAGES = ("control",)
HANDLER = "handler.handler"


def stage_lambda_asset(name: str, dest: Path) -> Path:
    """Copy the files of Lambda ``name`` into ``dest`` (created if needed); return it.

    Tests import the handler from ``dest`` to prove the asset is self-contained.
    """
    source = LAMBDAS_DIR / name
    if not (source / "handler.py").is_file():
        raise FileNotFoundError(f"lambdas/{name}/handler.py is missing; nothing to package")
    dest.mkdir(parents=True, exist_ok=True)
    for module in sorted(source.glob("*.py")):
        shutil.copyfile(module, dest / module.name)
    for folder in (CORE_PACKAGE, *(CORE_PACKAGE / sub for sub in LAMBDA_SUBPACKAGES)):
        package = dest / folder.relative_to(REPO_ROOT)
        package.mkdir(parents=True, exist_ok=True)
        for module in sorted(folder.glob("*.py")):
            shutil.copyfile(module, package / module.name)
    return dest


@jsii.implements(ILocalBundling)
class _StageLocally:
    def __init__(self, name: str) -> None:
        self._name = name

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        stage_lambda_asset(self._name, Path(output_dir))
        return True


def lambda_code(name: str) -> lambda_.Code:
    """The asset of Lambda ``name``, staged by plain file copies (no Docker)."""
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR / name),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Never used: local staging always succeeds or raises. Docker would only
            # see lambdas/<name>, not the spikebatch package, so it must not run.
            image=DockerImage.from_registry("public.ecr.aws/docker/library/busybox:stable"),
            command=["sh", "-c", "echo 'spikebatch stages Lambda assets locally' >&2; exit 1"],
            local=_StageLocally(name),
        ),
    )

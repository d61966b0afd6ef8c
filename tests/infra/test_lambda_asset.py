"""The Lambda assets: handler + pure-Python spikebatch core, importable on their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stacks.lambda_asset import CORE_PACKAGE, LAMBDAS_DIR, stage_lambda_asset

LAMBDAS = ("submit", "run_record", "brake")


@pytest.mark.parametrize("name", LAMBDAS)
def test_asset_holds_the_handler_the_contract_and_the_control_plane_only(name, tmp_path):
    if not (LAMBDAS_DIR / name / "handler.py").is_file():
        pytest.skip(f"lambdas/{name}/handler.py not written yet")
    staged = stage_lambda_asset(name, tmp_path / name)
    assert (staged / "handler.py").read_bytes() == (LAMBDAS_DIR / name / "handler.py").read_bytes()
    package = staged / "spikebatch"
    modules = {p.name for p in CORE_PACKAGE.glob("*.py")}
    assert {p.name for p in package.iterdir()} == modules | {"control"}
    control = {p.name for p in (CORE_PACKAGE / "control").glob("*.py")}
    assert {p.name for p in (package / "control").iterdir()} == control
    for data_plane_or_cli in ("worker", "transfer", "cli"):
        assert not (package / data_plane_or_cli).exists()


@pytest.mark.parametrize("name", LAMBDAS)
def test_handler_imports_from_the_staged_asset_alone(name, tmp_path):
    """Python 3.12 in Lambda sees only the asset, the layer (Powertools + pydantic) and
    boto3: import the handler with the asset first on the path and check where
    spikebatch came from."""
    if not (LAMBDAS_DIR / name / "handler.py").is_file():
        pytest.skip(f"lambdas/{name}/handler.py not written yet")
    staged = stage_lambda_asset(name, tmp_path / name)
    probe = (
        "import handler, spikebatch, sys; "
        "assert callable(handler.handler); "
        f"assert spikebatch.__file__.startswith({str(staged)!r}), spikebatch.__file__; "
        "assert not [m for m in sys.modules if m.startswith(('spikebatch.worker', 'spikebatch.cli'))]"
    )
    env = {**os.environ, "PYTHONPATH": str(staged), "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=staged,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_missing_handler_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lambdas/no_such_lambda/handler.py is missing"):
        stage_lambda_asset("no_such_lambda", tmp_path / "x")

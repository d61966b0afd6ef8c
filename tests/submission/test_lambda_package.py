"""The Lambda assets are self-contained: each handler imports and runs from its staged
directory with only what the Lambda runtime (boto3) and the Powertools layer (Powertools,
pydantic) provide. Nothing from the CLI or worker extras may sneak in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

lambda_asset = pytest.importorskip("stacks.lambda_asset")

# What the python3.11 runtime (boto3) and the Powertools v3 layer (Powertools, pydantic v2) hold.
PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "urllib3",
    "six.py",
    "aws_lambda_powertools",
    "pydantic",
    "pydantic_core",
    "typing_extensions.py",
    "annotated_types",
    "typing_inspection",
)
FORBIDDEN = (
    "dandi",
    "typer",
    "rich",
    "spikeinterface",
    "pydantic_settings",
    "numpy",
    "moto",
    "docker",
)

PROBE = """
import json, os, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
os.environ.update(json.loads(sys.argv[3]))
import handler

class Context:
    function_name = "probe"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:probe"
    aws_request_id = "probe"

    def get_remaining_time_in_millis(self):
        return 40_000

result = handler.handler([], Context())  # a malformed event: answered, not raised
leaked = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[4]))
print("PROBE " + json.dumps({"result": result, "leaked": leaked}))
"""


@pytest.fixture(scope="module")
def runtime_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site-packages holding only what Lambda provides (links into this venv)."""
    site = tmp_path_factory.mktemp("lambda-site")
    purelib = Path(sysconfig.get_paths()["purelib"])
    for name in PROVIDED:
        source = purelib / name
        assert source.exists(), f"{name} is not installed here"
        (site / name).symlink_to(source)
    return site


ENV = {
    "submit": {
        "DATA_BUCKET": "b",
        "JOB_QUEUE_ARN": "q",
        "PRIORITY_QUEUE_ARN": "p",
        "GPU_JOB_DEFINITION_ARN": "g",
        "CPU_JOB_DEFINITION_ARN": "c",
        "IDEMPOTENCY_TABLE": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    },
    "run_record": {"DATA_BUCKET": "b", "LOG_GROUP_NAME": "l", "AWS_DEFAULT_REGION": "us-east-1"},
    "brake": {
        "DATA_BUCKET": "b",
        "JOB_QUEUE_ARNS": "q,p",
        "COMPUTE_ENVIRONMENT_ARNS": "s,o",
        "AWS_DEFAULT_REGION": "us-east-1",
    },
}


@pytest.mark.parametrize(
    ("name", "status"), [("submit", "rejected"), ("run_record", "ignored"), ("brake", "ignored")]
)
def test_handler_runs_from_its_asset_alone(
    name: str, status: str, runtime_site: Path, tmp_path: Path
) -> None:
    asset = lambda_asset.stage_lambda_asset(name, tmp_path / name)
    assert (asset / "handler.py").is_file() and (
        asset / "spikebatch" / "control" / "request.py"
    ).is_file()
    assert not (asset / "spikebatch" / "cli").exists()
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            PROBE,
            str(asset),
            str(runtime_site),
            json.dumps(ENV[name]),
            json.dumps(FORBIDDEN),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    [line] = [ln for ln in probe.stdout.splitlines() if ln.startswith("PROBE ")]
    report = json.loads(line.removeprefix("PROBE "))
    assert report["leaked"] == []
    results = report["result"].get("results", [report["result"]])
    assert results[0]["status"] == status

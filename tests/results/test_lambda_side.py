"""The array summary and the label thresholds ship in the run-record Lambda's asset."""

from __future__ import annotations

import os
import subprocess
import sys

from stacks.lambda_asset import stage_lambda_asset


def test_the_summary_renders_from_the_staged_lambda_asset_alone(tmp_path):
    """Phase B renders the summary in the run-record Lambda: its modules must import and
    render there, on the asset plus pydantic and boto3, without the worker or numpy."""
    staged = stage_lambda_asset("run_record", tmp_path / "run_record")
    probe = "\n".join(
        [
            "import sys",
            "from spikebatch.control.array_summary import child_row, render_array_summary",
            "from spikebatch.quality import QualityThresholds",
            "row = child_row({'run_id': 'c', 'array_index': 0, 'source': 's'}, "
            "{'status': 'FAILED', 'status_reason': 'OutOfMemoryError'}, None)",
            "html = render_array_summary('p', [row])",
            "assert 'OutOfMemoryError' in html and QualityThresholds().table()",
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'pandas', 'spikeinterface', 'dandi', 'typer', 'rich')"
            " or m.startswith(('spikebatch.worker', 'spikebatch.cli'))]",
            "assert not heavy, heavy",
            f"assert __import__('spikebatch').__file__.startswith({str(staged)!r})",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(staged), "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=staged, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]

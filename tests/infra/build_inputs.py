"""What synth needs from other issues' files, and the cdk.json context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def require_build_inputs() -> None:
    """The worker image and the Lambda handlers come from other issues; synth needs them."""
    from spikebatch.worker_image import DEPLOYED_IMAGE
    from stacks.lambda_asset import LAMBDAS_DIR
    from stacks.registry import REPO_ROOT as IMAGE_CONTEXT

    needed = [IMAGE_CONTEXT / DEPLOYED_IMAGE.dockerfile]
    needed += [LAMBDAS_DIR / name / "handler.py" for name in ("submit", "run_record")]
    missing = [str(p.relative_to(REPO_ROOT)) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"synth needs {', '.join(missing)} (not written yet)")

"""Campaign: plan and submit a request for 12,000 DANDI assets (moto + the fake archive).

What ``spikebatch submit`` does for a dandiset of 12,000 recordings, timed end to end in
this process: the DANDI listing (12 pages of 1000), 12,000 run ids, the run records checked
(one listing, nothing to read), two arrays planned, priced and submitted (records,
manifests, SubmitJob, the campaign record). moto keeps everything in memory and creates
each array child as an object, so the peak RSS bounds what the submitter itself holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import MB, BenchResult, PeakMemory, Ratio, scratch_dir

ASSETS = 12_000
TARGET_S = 120.0
TARGET_RSS_MB = 1024.0


def run() -> BenchResult:
    from moto import mock_aws

    from spikebatch import aws
    from spikebatch.control import campaign
    from spikebatch.control.request import parse_request
    from spikebatch.control.submission import Deployment
    from tests.submission.conftest import BIG_PATHS, build_stack
    from tests.support.dandi_server import FakeDandiArchive

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(var, "bench")
    with scratch_dir("campaign") as tmp, FakeDandiArchive(page_size=1000) as archive:
        blob = Path(tmp) / "rec.nwb"
        blob.write_bytes(b"\0" * (60 * 4 * 2 * 30_000))
        archive.add_assets("000800", BIG_PATHS[:ASSETS], blob)
        with mock_aws(config={"batch": {"use_docker": False}}):
            aws.clear_cache()
            stack = build_stack()
            deployment = Deployment.from_env(stack.lambda_env)
            request = parse_request({"dandiset_id": "000800", "asset_glob": "sub-*/*.nwb"})
            with PeakMemory() as memory:
                started = time.perf_counter()
                inputs = campaign.resolve_inputs(request, api_url=archive.api_url)
                resolved = time.perf_counter()
                plan, result = campaign.submit_request(
                    request,
                    deployment,
                    inputs,
                    submitted_by="bench",
                    table=stack.outputs["IdempotencyTableName"],
                )
                seconds = time.perf_counter() - started
            aws.clear_cache()
    assert result is not None and [len(a.runs) for a in plan.arrays] == [10_000, 2_000]
    peak_mb = memory.peak_bytes / MB
    note = f"{ASSETS:,} assets -> {len(plan.arrays)} arrays, load {os.getloadavg()[0]:.1f}"
    return BenchResult(
        "campaign",
        [
            Ratio(
                "campaign: plan + submit 12,000 inputs, seconds",
                seconds,
                TARGET_S,
                lower_is_better=True,
                note=note,
            ),
            Ratio(
                "campaign: peak RSS while planning + submitting, MB",
                peak_mb,
                TARGET_RSS_MB,
                lower_is_better=True,
                note="this process: moto's state included",
            ),
        ],
        measurements={
            "assets": ASSETS,
            "arrays": [len(a.runs) for a in plan.arrays],
            "seconds": round(seconds, 1),
            "resolve_s": round(resolved - started, 1),
            "plan_and_submit_s": round(seconds - (resolved - started), 1),
            "peak_rss_mb": round(peak_mb),
            "baseline_rss_mb": round(memory.baseline_bytes / MB),
            "estimate_usd": round(plan.estimate_usd, 2),
            "load_avg_1m": os.getloadavg()[0],
        },
        notes=["moto in this process (SubmitJob creates each array child); fake DANDI on loopback"],
    )

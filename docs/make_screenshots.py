"""Regenerate docs/run-page.png and docs/array-summary.png from the product, run for real.

    .venv/bin/python docs/make_screenshots.py [--work DIR]

An array job of three sessions of a dandiset on the fake DANDI archive (tests/support),
planned and recorded by the real submission code on a local S3 (moto), each child run by the
real worker entrypoint the way Batch runs it (the array manifest, ``AWS_BATCH_JOB_ARRAY_INDEX``):
two ground-truth sessions sorted with Kilosort4 (CPU here, about a minute each on 2 cores)
and published back to the dandiset, and a third whose download is corrupted, so it fails
for real. The summary page is then written as the run-record Lambda writes it when the
array ends, both pages are downloaded as ``spikebatch results --download`` leaves them, and
headless Chromium screenshots them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DANDISET = "000999"
SESSIONS = [("sim01", 42), ("sim02", 7), ("sim03", 11)]
BUCKET = "spikebatch-data-docs"
KEY = "lab-key"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="screens-")))
    parser.add_argument("--sorter", default="kilosort4", help="default: kilosort4 (CPU here)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="default: docs/")
    args = parser.parse_args()
    work = args.work.resolve()
    os.environ.setdefault("DANDI_NO_ET", "1")
    for name, value in (
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ):
        os.environ[name] = value

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    try:
        summary, first = _run_array(work, args.sorter)
    finally:
        server.stop()

    from tests.support import browser

    browser.screenshot(first, args.out / "run-page.png", width=1280, height=2200)
    browser.screenshot(summary, args.out / "array-summary.png", width=1280, height=760)
    print(
        f"pages: {first}\n       {summary}\nscreenshots: {args.out}/run-page.png, array-summary.png"
    )
    return 0


def _run_array(work: Path, sorter: str) -> tuple[Path, Path]:
    """The array submitted, run, summarized; returns the downloaded summary and first page."""
    from spikebatch import aws
    from spikebatch.contract import RUN_PAGE
    from spikebatch.control.array_summary import write_array_summary
    from spikebatch.control.request import parse_request
    from spikebatch.control.submission import plan_submission, write_submitted
    from spikebatch.worker.pipeline import main as worker_main
    from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb
    from tests.support.dandi_server import FakeDandiArchive
    from tests.support.deployment import fake_deployment

    aws.client("s3").create_bucket(Bucket=BUCKET)
    with FakeDandiArchive() as archive:
        assets = []
        for subject, seed in SESSIONS:
            truth = write_ground_truth_nwb(
                work / "input" / subject,
                GroundTruthSpec(duration_s=40.0, num_channels=32, num_units=10, seed=seed),
            )
            assets.append(f"sub-{subject}/sub-{subject}_ses-gt_ecephys.nwb")
            archive.add_asset(DANDISET, assets[-1], truth.nwb)
        archive.corrupt(assets[-1])
        archive.add_user("lab", token=KEY)
        archive.add_dandiset(DANDISET, owners=["lab"])  # publish beside the raw data
        deployment = fake_deployment(BUCKET, dandi_api_url=archive.api_url)
        request = parse_request(
            {
                "dandiset_id": DANDISET,
                "assets": assets,
                "sorter": sorter,
                "sorter_params": {"torch_device": "cpu"} if sorter == "kilosort4" else {},
                "publish_dandiset_id": DANDISET,
            }
        )
        plan = plan_submission(request, deployment)
        write_submitted(plan, None, bucket=BUCKET, submitted_by="docs/make_screenshots.py")
        aws.client("s3").put_object(
            Bucket=BUCKET, Key=plan.manifest_key, Body=_json(plan.manifest).encode()
        )
        batch_env = {
            e["name"]: e["value"] for e in plan.submit_job["containerOverrides"]["environment"]
        }
        for run in plan.runs:
            env = {
                **batch_env,
                "AWS_BATCH_JOB_ARRAY_INDEX": str(run.array_index),
                "DANDI_API_KEY": KEY,  # on Batch: the stack's secret
                "INSTANCE_TYPE": "g4dn.2xlarge",
                "SCRATCH_DIR": str(work / "scratch"),
            }
            print(f"worker: {run.run_id} -> exit {worker_main(env)}", flush=True)
    write_array_summary(BUCKET, plan.run_id)  # what the run-record Lambda does at the end
    pages = work / "download"
    s3 = aws.client("s3")
    for run_id in [plan.run_id, *(r.run_id for r in plan.runs)]:
        key = f"{plan.output_uri.removeprefix(f's3://{BUCKET}/')}/{run_id}/{RUN_PAGE}"
        target = pages / run_id / RUN_PAGE
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, key, str(target))
    return pages / plan.run_id / RUN_PAGE, pages / plan.runs[0].run_id / RUN_PAGE


def _json(value: object) -> str:
    import json

    return json.dumps(value, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())

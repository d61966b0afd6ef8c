"""Regenerate docs/run-page.png and docs/array-summary.png from real runs.

    .venv/bin/python docs/make_screenshots.py [--work DIR]

An array of three children on the fake DANDI archive (tests/support): two ground-truth
sessions sorted by the real worker with Kilosort4 (CPU here, ~3 min each on 2 cores) and a
third whose download is corrupted, so it fails for real. For the two that succeed, it adds
what issue 11 adds to a run (quality labels, phy/, the run page) from the run's own sorting
and recording (tests/support/run_completion.py: the phase-B wiring, rehearsed), then renders
the array summary and screenshots both pages in headless Chromium.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DANDISET = "000999"
SESSIONS = [("sim01", 42), ("sim02", 7), ("sim03", 11)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="screens-")))
    parser.add_argument("--sorter", default="kilosort4", help="default: kilosort4 (CPU here)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="default: docs/")
    args = parser.parse_args()
    work = args.work.resolve()

    from spikebatch.control.array_summary import child_row, render_array_summary
    from spikebatch.worker.pipeline import main as worker_main
    from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb
    from tests.support import browser
    from tests.support.dandi_server import FakeDandiArchive
    from tests.support.run_completion import complete_run, rebuild_analyzer

    results = work / "results"
    parent = f"dandiset-{DANDISET}-3-assets-{args.sorter}"
    children = []
    with FakeDandiArchive() as archive:
        nwbs = {}
        for index, (subject, seed) in enumerate(SESSIONS):
            truth = write_ground_truth_nwb(
                work / "input" / subject,
                GroundTruthSpec(duration_s=40.0, num_channels=32, num_units=10, seed=seed),
            )
            asset = f"sub-{subject}/sub-{subject}_ses-gt_ecephys.nwb"
            archive.add_asset(DANDISET, asset, truth.nwb)
            nwbs[subject] = truth.nwb
            children.append(
                {
                    "run_id": f"sub-{subject}-ses-gt-ecephys-{args.sorter}",
                    "array_index": index,
                    "source": f"dandi:{DANDISET}/draft/{asset}",
                    "asset": asset,
                    "subject": subject,
                }
            )
        archive.corrupt(children[-1]["asset"])
        for child in children:
            env = {
                "DANDISET_ID": DANDISET,
                "DANDI_ASSET_PATH": child["asset"],
                "DANDI_API_URL": archive.api_url,
                "OUTPUT_URI": results.as_uri(),
                "RUN_ID": child["run_id"],
                "SORTER": args.sorter,
                "SORTER_PARAMS": json.dumps(
                    {"torch_device": "cpu"} if args.sorter == "kilosort4" else {}
                ),
                "INSTANCE_TYPE": "g4dn.2xlarge",
                "SCRATCH_DIR": str(work / "scratch"),
            }
            print(f"worker: {child['run_id']} -> exit {worker_main(env)}", flush=True)
    rows = []
    for child in children:
        run_dir = results / child["run_id"]
        record = json.loads((run_dir / "run.json").read_text())
        if record["status"] == "succeeded":
            scratch = Path(tempfile.mkdtemp(prefix="analyzer-", dir=work))
            analyzer = rebuild_analyzer(run_dir, nwbs[child["subject"]], scratch)
            record = complete_run(run_dir, analyzer).record
        rows.append(child_row(child, None, record))
    summary = results / parent / "report" / "index.html"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(
        render_array_summary(parent, rows, source=f"dandiset {DANDISET}/draft sub-*/*.nwb")
    )
    first = results / children[0]["run_id"] / "report" / "index.html"
    browser.screenshot(first, args.out / "run-page.png", width=1280, height=2200)
    browser.screenshot(summary, args.out / "array-summary.png", width=1280, height=760)
    print(
        f"pages: {first}\n       {summary}\nscreenshots: {args.out}/run-page.png, array-summary.png"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a run leaves for people to act on, wired into the worker (issue 11): the quality
labels under the request's thresholds, phy/ (with or without its PC features), the run's
page (also for a failed run), and the publication of units.nwb to DANDI, once per run.

The real entrypoint on the fake DANDI archive, with SpikeInterface's fast ``simple`` sorter
(Kilosort4 end to end: ``test_worker_e2e.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from spikebatch import aws
from spikebatch.worker import postprocess
from spikebatch.worker.__main__ import main
from tests.support import browser
from tests.worker.helpers import ASSET, DANDISET, dandi_env, s3_json, s3_keys

FAST_SORTER = {"SORTER": "simple", "SORTER_PARAMS": '{"seed": 0}'}
OWNER_KEY = "alice-key"
TARGET = "000500"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_run_publishes_its_units_once_with_the_requests_options(archive, scratch, tmp_path):
    archive.add_user("alice", token=OWNER_KEY)
    archive.add_dandiset(TARGET, owners=["alice"])
    out = tmp_path / "results"
    env = {
        **dandi_env(archive, "unused", SCRATCH_DIR=str(scratch), RUN_ID="published", **FAST_SORTER),
        "OUTPUT_URI": out.as_uri(),
        "DANDI_API_KEY": OWNER_KEY,
        "PUBLISH_DANDISET_ID": TARGET,
        # the request's options: every unit fails SNR >= 1000 (mua at best); no PC features
        "QUALITY_THRESHOLDS": '{"mua": {"snr": {"greater": 1000}}}',
        "PHY_PC_FEATURES": "false",
    }

    assert main(env) == 0
    record = json.loads((out / "published" / "run.json").read_text())
    publication = record["publish"]
    assert publication["status"] == "published" and publication["dandiset_id"] == TARGET
    [asset] = archive.assets(TARGET)
    assert asset.asset_id == publication["asset_id"] and asset.path == publication["path"]
    assert (
        publication["path"].startswith("sub-sim01/sub-sim01_ses-")
        and "_desc-simple_" in (publication["path"])
    )
    rows = _rows(out / "published" / "quality_metrics.csv")
    assert rows and {r["label"] for r in rows} <= {"mua", "noise"}
    assert all("snr" in r["label_reason"] or r["label"] == "noise" for r in rows)
    assert {"section": "mua", "metric": "snr", "rule": "snr >= 1000"} in [
        {k: t[k] for k in ("section", "metric", "rule")} for t in record["labels"]["thresholds"]
    ]
    [phy] = record["phy"]
    assert phy["pc_features"] is False and not (out / "published/phy/pc_features.npy").exists()
    # Where the time after the sort went, step by step, inside its two stages.
    steps = record["post_sort_s"]
    assert list(steps) == [
        "sorting",
        "analyzer",
        *postprocess._EXTENSIONS,
        "quality_metrics",
        "labels",
        "units_nwb_add",
        "phy",
        "figures",
    ]
    stages = record["timings_s"]
    assert 0 < sum(steps.values()) <= stages["postprocess"] + stages["export"] + 0.1
    assert (out / "published/phy/params.py").is_file()

    # The same run again: new NWB bytes, the same run: nothing is uploaded.
    uploads = len(archive.upload_requests())
    assert main(env) == 0
    again = json.loads((out / "published" / "run.json").read_text())["publish"]
    assert again["status"] == "unchanged" and again["asset_id"] == publication["asset_id"]
    assert len(archive.upload_requests()) == uploads


def test_what_goes_wrong_after_the_sort_never_fails_the_run(
    archive, scratch, tmp_path, monkeypatch
):
    """Another job on the instance fills the scratch volume while this one sorts: phy's PC
    features (sized from the sorted spikes) are left out with the reason. DANDI refuses the
    publication (a dandiset the key's user does not own): the reason is recorded. The run
    succeeds either way."""
    from spikebatch.worker import postprocess
    from spikebatch.worker import scratch as worker_scratch

    full = {"now": False}
    real_free, real_write = worker_scratch.free_bytes, postprocess.write_quality_metrics

    def free_bytes(path: Path) -> int:
        return 1_000 if full["now"] else real_free(path)

    def write_then_fill(*args, **kwargs):  # the postprocess stage, after the budget checks
        real_write(*args, **kwargs)
        full["now"] = True

    monkeypatch.setattr(worker_scratch, "free_bytes", free_bytes)
    monkeypatch.setattr(postprocess, "write_quality_metrics", write_then_fill)
    archive.add_user("alice", token=OWNER_KEY)
    archive.add_dandiset("000777", owners=["bob"])
    out = tmp_path / "results"
    env = {
        **dandi_env(archive, "unused", SCRATCH_DIR=str(scratch), RUN_ID="full", **FAST_SORTER),
        "OUTPUT_URI": out.as_uri(),
        "DANDI_API_KEY": OWNER_KEY,
        "PUBLISH_DANDISET_ID": "000777",
    }

    assert main(env) == 0
    record = json.loads((out / "full" / "run.json").read_text())
    assert record["status"] == "succeeded" and record["publish"]["status"] == "failed"
    assert "may not write to dandiset 000777 (HTTP 403)" in record["publish"]["reason"]
    assert archive.assets("000777") == []
    [phy] = record["phy"]
    assert phy["pc_features"] is False
    assert phy["pc_features_left_out"].startswith("left out: ")
    assert "of PC features would not fit" in phy["pc_features_left_out"]
    assert not (out / "full/phy/pc_features.npy").exists()
    page = (out / "full/report/index.html").read_text()
    assert "PC features left out" in page
    assert 'class="badge failed"' in page and "HTTP 403" in page  # under "Published to DANDI"


def test_a_failed_run_has_a_page_that_says_where_and_why(archive, bucket, scratch):
    env = dandi_env(
        archive,
        bucket,
        SCRATCH_DIR=str(scratch),
        RUN_ID="failed-run",
        DANDI_ASSET_PATH="sub-sim01/sub-sim01_ecephys.nwb",  # no such asset
        **FAST_SORTER,
    )

    assert main(env) == 1

    prefix = "results/failed-run/"
    assert s3_keys(bucket, prefix) == [prefix + "report/index.html", prefix + "run.json"]
    record = s3_json(bucket, prefix + "run.json")
    assert record["status"] == "failed" and record["outputs"] == ["report/index.html"]
    page = aws.client("s3").get_object(Bucket=bucket, Key=prefix + "report/index.html")
    assert page["ContentType"].startswith("text/html")
    html = page["Body"].read().decode()
    assert "Failed in stage fetch:" in html and f"nearest: {ASSET}" in html
    assert f"dandi:{DANDISET}/draft/sub-sim01/sub-sim01_ecephys.nwb" in html
    _, sources = browser.links(html)
    assert sources == []  # self-contained; a failed run has no figures

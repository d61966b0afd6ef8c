"""SpikeGLX runs and Open Ephys recordings as inputs: found, picked, checked and fetched.

The files are written the way the acquisition software writes them
(:mod:`spikebatch.worker.simulate_rig`); these tests stop before the sort (the sorts are in
``test_worker_rig_sorts.py``, marker ``slow``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spikebatch.worker import acquisition, folder_input, recording
from spikebatch.worker.errors import InputError
from spikebatch.worker.pipeline import main
from spikebatch.worker.settings import WorkerSettings
from spikebatch.worker.simulate import GroundTruthSpec
from spikebatch.worker.simulate_rig import (
    RigRecording,
    write_openephys_recording,
    write_spikeglx_run,
)
from tests.worker.helpers import s3_keys

SPEC = GroundTruthSpec(duration_s=2.0, num_channels=32, num_units=4, noise_uv=10.0, seed=7)


@pytest.fixture(scope="module")
def sglx(tmp_path_factory: pytest.TempPathFactory) -> RigRecording:
    return write_spikeglx_run(tmp_path_factory.mktemp("sglx"), SPEC, n_probes=2)


@pytest.fixture(scope="module")
def openephys(tmp_path_factory: pytest.TempPathFactory) -> RigRecording:
    return write_openephys_recording(tmp_path_factory.mktemp("oe"), SPEC)


def _settings(uri: str, **env: str) -> WorkerSettings:
    return WorkerSettings.from_env(
        {"INPUT_URI": uri, "OUTPUT_URI": "file:///tmp/unused", "SORTER": "kilosort4", **env}
    )


def _upload(bucket: str, root: Path, prefix: str, *, part_size: int | None = None) -> None:
    """The folder under ``s3://bucket/prefix`` (in parts of ``part_size``: a multipart ETag)."""
    from boto3.s3.transfer import TransferConfig

    from spikebatch import aws

    s3 = aws.client("s3")
    config = (
        TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
        if part_size
        else None
    )
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}{path.relative_to(root).as_posix()}"
            s3.upload_file(str(path), bucket, key, Config=config)


# ---- what is picked -------------------------------------------------------------------------
def test_a_spikeglx_folder_is_read_in_place_and_only_its_ap_streams_are_planned(
    sglx: RigRecording, tmp_path: Path
) -> None:
    planned = folder_input.plan(_settings(sglx.root.as_uri() + "/"), tmp_path)
    assert planned.data_type == "spikeglx" and planned.in_place == sglx.root
    names = sorted(Path(f.rel).name for f in planned.files)
    assert names == [
        "sim_g0_t0.imec0.ap.bin",
        "sim_g0_t0.imec0.ap.meta",
        "sim_g0_t0.imec1.ap.bin",
        "sim_g0_t0.imec1.ap.meta",
    ]
    # The shapes from the .meta (before any download) are what SpikeInterface reads.
    opened = acquisition.spike_band("spikeglx", sglx.root, {}, "test")
    assert planned.series == opened
    assert [s.path for s in opened] == ["imec0.ap", "imec1.ap"]
    assert all(s.n_channels == 32 and s.n_frames == 60_000 for s in opened)


def test_one_probe_by_stream_name_or_by_its_meta_file(sglx: RigRecording, tmp_path: Path) -> None:
    kwargs = json.dumps({"stream_name": "imec1.ap"})
    by_name = folder_input.plan(
        _settings(sglx.root.as_uri() + "/", READ_RECORDING_KWARGS=kwargs), tmp_path
    )
    assert [s.path for s in by_name.series] == ["imec1.ap"]
    meta = next(sglx.root.rglob("*.imec0.ap.meta"))
    by_file = folder_input.plan(_settings(meta.as_uri()), tmp_path)
    assert [s.path for s in by_file.series] == ["imec0.ap"]
    assert sorted(Path(f.rel).name for f in by_file.files) == [
        "sim_g0_t0.imec0.ap.bin",
        "sim_g0_t0.imec0.ap.meta",
    ]


def test_each_probe_opens_with_its_own_positions_groups_and_sample_shifts(
    sglx: RigRecording,
) -> None:
    source = recording.Source(sglx.root, "spikeglx", in_place=True)
    series = acquisition.spike_band("spikeglx", sglx.root, {}, "test")
    parts = recording.plan_parts(source, series, by_group=False)
    assert [p.key for p in parts] == ["imec0.ap", "imec1.ap"]
    for part, probe in zip(parts, sglx.probes, strict=True):
        opened = recording.open_part(source, part)
        assert part.geometry is not None and part.geometry.source == "spikeglx"
        np.testing.assert_allclose(opened.get_channel_locations(), probe.positions)
        assert set(opened.get_channel_groups()) == {part.series.path.split(".")[0]}
        assert opened.get_property("inter_sample_shift") is not None
    session = recording.read_session(source, series)
    assert set(session.electrode_groups) == {"imec0", "imec1"}
    assert session.session_start_time.year == 2026


@pytest.mark.parametrize("level", ["top", "node", "recording"])
def test_open_ephys_at_any_folder_level_finds_its_ap_stream_and_settings(
    openephys: RigRecording, tmp_path: Path, level: str
) -> None:
    top = openephys.root
    folder = {
        "top": top,
        "node": top / "Record Node 101",
        "recording": top / "Record Node 101" / "experiment1" / "recording1",
    }[level]
    planned = folder_input.plan(_settings(folder.as_uri() + "/"), tmp_path)
    assert planned.data_type == "openephys"
    assert [s.path for s in planned.series] == [openephys.probes[0].stream_name]
    assert planned.skipped == ["Record Node 101#Neuropix-PXI-100.ProbeA-LFP"]
    names = {Path(f.rel).name for f in planned.files}
    assert {"structure.oebin", "continuous.dat", "settings.xml"} <= names
    assert not any("LFP" in f.rel for f in planned.files)


# ---- fetched from S3 ------------------------------------------------------------------------
def test_an_s3_prefix_downloads_only_the_ap_streams_each_checked_against_its_etag(
    sglx: RigRecording, bucket: str, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.s3.models

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 256)  # 1 MiB parts
    _upload(bucket, sglx.root, "rig1/sim_g0/", part_size=1 << 20)
    planned = folder_input.plan(_settings(f"s3://{bucket}/rig1/sim_g0/"), scratch)
    root, files = folder_input.fetch(planned, scratch)
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == sorted(
        Path(f.rel).name for f in planned.files
    )
    assert all(f["verified"] for f in files)
    assert {f["digest"]["name"].split(":")[0] for f in files} == {"md5", "s3-etag"}
    opened = acquisition.spike_band("spikeglx", root, {}, "test")
    assert [s.path for s in opened] == ["imec0.ap", "imec1.ap"]


def test_bytes_that_do_not_match_the_etag_are_not_sorted(
    sglx: RigRecording, bucket: str, scratch: Path
) -> None:
    _upload(bucket, sglx.root, "rig2/")
    planned = folder_input.plan(_settings(f"s3://{bucket}/rig2/"), scratch)
    planned.files = [
        folder_input.ListedFile(
            f.rel, f.uri, f.size, "0" * 32 if f.rel.endswith(".bin") else f.etag
        )
        for f in planned.files
    ]
    with pytest.raises(InputError, match="does not match its S3 ETag"):
        folder_input.fetch(planned, scratch)


# ---- bad inputs: one line, before any sort, nothing half-written -----------------------------
def _broken_run(sglx: RigRecording, tmp_path: Path, how: str) -> Path:
    root = tmp_path / "run" / "sim_g0"
    shutil.copytree(sglx.root, root)
    binary = next(root.rglob("*.imec0.ap.bin"))
    meta = binary.with_suffix(".meta")
    if how == "truncated":
        with binary.open("r+b") as fh:
            fh.truncate(binary.stat().st_size - 1000)
    elif how == "more channels":
        text = meta.read_text().replace("nSavedChans=33", "nSavedChans=65")
        meta.write_text(text)
    elif how == "two runs":
        for path in list(binary.parent.iterdir()):
            shutil.copy(path, path.with_name(path.name.replace("_g0_", "_g1_")))
    elif how == "no meta":
        meta.unlink()
    return root


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"sim_g0_t0.imec0.ap.bin: \d+ bytes, but its .meta says fileSizeBytes=\d+"),
        ("more channels", r"not a whole number of 65-channel int16 samples \(nSavedChans=65\)"),
        ("two runs", r"holds 2 SpikeGLX runs \(sim_g0_t0, sim_g1_t0\): point INPUT_URI at one"),
        ("no meta", r"sim_g0_t0.imec0.ap.bin: its .meta is missing"),
    ],
)
def test_a_broken_spikeglx_run_fails_in_fetch_with_one_line(
    sglx: RigRecording,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
    message: str,
) -> None:
    root = _broken_run(sglx, tmp_path, how)
    out = tmp_path / "out"
    env = {
        "INPUT_URI": root.as_uri() + "/",
        "OUTPUT_URI": out.as_uri(),
        "SORTER": "kilosort4",
        "RUN_ID": "broken",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
    }
    assert main(env) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("spikebatch-worker: failed in fetch: ")
    assert pytest.importorskip("re").search(message, err), err
    record = json.loads((out / "broken" / "run.json").read_text())
    assert record["status"] == "failed" and record["error"]["stage"] == "fetch"
    written = sorted(p.relative_to(out / "broken").as_posix() for p in (out / "broken").rglob("*"))
    assert [w for w in written if w not in ("report", "report/index.html")] == ["run.json"]


def test_an_empty_prefix_and_an_unknown_data_type_are_one_line_errors(
    bucket: str, scratch: Path, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"nothing under s3://[^ ]+/empty/ \(an empty prefix"):
        folder_input.plan(_settings(f"s3://{bucket}/empty/"), scratch)
    readme = tmp_path / "notes"
    readme.mkdir()
    (readme / "README.txt").write_text("not a recording")
    with pytest.raises(InputError, match=r"no recording under .*expected a SpikeGLX run"):
        folder_input.plan(_settings(readme.as_uri() + "/"), scratch)
    env = {"INPUT_URI": f"s3://{bucket}/x/", "OUTPUT_URI": "file:///tmp/o", "DATA_TYPE": "intan"}
    assert main(env) == 2


def test_a_run_on_s3_lists_no_objects_it_does_not_need(
    sglx: RigRecording, bucket: str, scratch: Path
) -> None:
    """LF and NI streams stay in the bucket: the scratch holds the AP pairs only."""
    _upload(bucket, sglx.root, "rig3/")
    assert any(k.endswith(".lf.bin") for k in s3_keys(bucket, "rig3/"))
    planned = folder_input.plan(_settings(f"s3://{bucket}/rig3/"), scratch)
    root, _ = folder_input.fetch(planned, scratch)
    assert not [p for p in root.rglob("*") if p.name.endswith((".lf.bin", ".nidq.bin"))]


# ---- the whole run, the sorter stood in by the truth -----------------------------------------
def _truths(recorded: RigRecording, tmp_path: Path, keys: list[str]) -> str:
    """The truth as one sorting folder per part, named by the part's key."""
    for key, probe in zip(keys, recorded.probes, strict=True):
        shutil.copytree(probe.sorting_dir, tmp_path / "truths" / key)
    return (tmp_path / "truths").as_uri()


def test_a_two_probe_spikeglx_run_on_s3_is_sorted_scored_and_published_per_probe(
    sglx: RigRecording, bucket: str, tmp_path: Path, truth_as_sorter: dict
) -> None:
    _upload(bucket, sglx.root, "uploads/rig1/sim_g0/")
    out = tmp_path / "out"
    env = {
        "INPUT_URI": f"s3://{bucket}/uploads/rig1/sim_g0/",
        "OUTPUT_URI": out.as_uri(),
        "RUN_ID": "sglx",
        "SORTER": "simple",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        "GROUND_TRUTH": _truths(sglx, tmp_path, ["imec0.ap", "imec1.ap"]),
    }
    assert main(env) == 0
    run = out / "sglx"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert record["input"]["data_type"] == "spikeglx"
    assert record["input"]["electrical_series_paths"] == ["imec0.ap", "imec1.ap"]
    assert record["input"]["digest"]["verified"] is True
    assert len(record["input"]["files"]) == 4 and record["input"]["n_channels"] == 64
    assert record["input"]["series"]["imec0.ap"]["geometry"]["source"] == "spikeglx"
    for key in ("imec0.ap", "imec1.ap"):
        score = json.loads((run / "probes" / key / "ground_truth_score.json").read_text())
        assert [u["accuracy"] for u in score["units"]] == [1.0] * SPEC.num_units
        assert score["electrode_groups"] == [key.split(".")[0]]
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(run / "units.nwb", "r") as io:
        nwb = io.read()
        assert set(nwb.electrode_groups) == {"imec0", "imec1"}
        assert set(nwb.devices) == {"Neuropixels imec0", "Neuropixels imec1"}
        assert "PRB_1_4_0480_1" in nwb.devices["Neuropixels imec0"].description
        assert nwb.session_start_time.isoformat().startswith("2026-01-05T10:11:12")
        assert len(nwb.units) == 2 * SPEC.num_units
        # SpikeGLX names no subject, experimenter or keywords: none is made up.
        assert nwb.subject is None and nwb.experimenter is None and nwb.keywords is None
    assert not (tmp_path / "scratch" / "sglx").exists()  # the input is freed with the rest


def test_an_open_ephys_folder_is_sorted_in_place_and_left_as_it_was(
    openephys: RigRecording, tmp_path: Path, truth_as_sorter: dict
) -> None:
    before = sorted(
        (p.relative_to(openephys.root), p.stat().st_size) for p in openephys.root.rglob("*")
    )
    out = tmp_path / "out"
    env = {
        "INPUT_URI": openephys.root.as_uri() + "/",
        "OUTPUT_URI": out.as_uri(),
        "RUN_ID": "oe",
        "SORTER": "simple",
        "SCRATCH_DIR": str(tmp_path / "scratch"),
        "GROUND_TRUTH": (openephys.probes[0].sorting_dir).as_uri(),
    }
    assert main(env) == 0
    record = json.loads((out / "oe" / "run.json").read_text())
    assert record["input"]["data_type"] == "openephys"
    assert record["input"]["skipped_streams"] == ["Record Node 101#Neuropix-PXI-100.ProbeA-LFP"]
    score = json.loads((out / "oe" / "ground_truth_score.json").read_text())
    assert [u["accuracy"] for u in score["units"]] == [1.0] * SPEC.num_units
    after = sorted(
        (p.relative_to(openephys.root), p.stat().st_size) for p in openephys.root.rglob("*")
    )
    assert after == before


def test_a_study_knows_a_recording_folder_by_its_files(
    sglx: RigRecording, tmp_path: Path, bucket: str
) -> None:
    """A study's cache key for a folder input: the same files, the same identity; one byte
    changed anywhere in it, another (so the case runs again)."""
    from spikebatch.study.cases import DigestCache, _uri_identity

    cache = DigestCache(tmp_path / "digests.json")
    copy = tmp_path / "copy" / "sim_g0"
    shutil.copytree(sglx.root, copy)
    size, first = _uri_identity(copy.as_uri(), cache)
    assert first.startswith("sha256-tree:") and size == sum(
        p.stat().st_size for p in copy.rglob("*") if p.is_file()
    )
    assert _uri_identity(copy.as_uri(), cache)[1] == first
    meta = next(copy.rglob("*.imec1.ap.meta"))
    meta.write_text(meta.read_text() + "userNotes=changed\n")
    assert _uri_identity(copy.as_uri(), cache)[1] != first
    _upload(bucket, sglx.root, "study/sim_g0/")
    _, remote = _uri_identity(f"s3://{bucket}/study/sim_g0/", cache)
    assert remote.startswith("s3-tree:")

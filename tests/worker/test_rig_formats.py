"""The rig-format writers (:mod:`spikebatch.worker.simulate_rig`) read back through
SpikeInterface / neo / probeinterface exactly as written: samples, scale, geometry, streams,
clocks and truth. Fast (a few seconds of 48-64 channels); no sorter."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from spikebatch.worker.simulate import GroundTruthSpec, generate_recording
from spikebatch.worker.simulate_rig import (
    IMEC_SYNC_BIT,
    LF_DECIMATION,
    OPENEPHYS_BIT_VOLTS,
    OPENEPHYS_FIRST_SAMPLE,
    SPIKEGLX_AP_UV_PER_BIT,
    SPIKEGLX_FIRST_SAMPLE,
    SPIKEGLX_LF_UV_PER_BIT,
    RigRecording,
    np1_adc_delays,
    np1_probe,
    rig_ground_truth,
    write_openephys_recording,
    write_spikeglx_run,
)

FS = 30_000.0
#: 10 uV noise: ~4 SpikeGLX steps (2.34 uV) wide.
SGLX_SPEC = GroundTruthSpec(
    duration_s=3.0, num_channels=48, num_units=5, noise_uv=10.0, sampling_frequency=FS, seed=7
)
OE_SPEC = GroundTruthSpec(
    duration_s=2.0, num_channels=64, num_units=6, noise_uv=6.0, sampling_frequency=FS, seed=11
)


@pytest.fixture(scope="module")
def sglx(tmp_path_factory) -> RigRecording:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_spikeglx_run(tmp_path_factory.mktemp("sglx"), SGLX_SPEC, n_probes=2)


@pytest.fixture(scope="module")
def oe(tmp_path_factory) -> RigRecording:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_openephys_recording(tmp_path_factory.mktemp("oe"), OE_SPEC)


def _read_spikeglx(root: Path, stream: str):
    from spikeinterface.extractors import read_spikeglx

    return read_spikeglx(root, stream_name=stream)


def test_spikeglx_layout(sglx):
    root = sglx.root
    assert sglx.data_type == "spikeglx" and root.name == "sim_g0"
    names = {p.relative_to(root).as_posix() for p in sglx.files}
    expected = {"sim_g0_t0.nidq.bin", "sim_g0_t0.nidq.meta"}
    for i in range(2):
        for band in ("ap", "lf"):
            for ext in ("bin", "meta"):
                expected.add(f"sim_g0_imec{i}/sim_g0_t0.imec{i}.{band}.{ext}")
    assert names == expected
    for probe in sglx.probes:  # the truth lives outside the run folder
        assert root not in probe.sorting_dir.parents


def test_spikeglx_meta_pairs_pass_the_upload_check(sglx):
    from spikebatch.input_format import formats_in, spikeglx_pair_problem

    assert formats_in(p.relative_to(sglx.root).as_posix() for p in sglx.files) == ["spikeglx"]
    for meta in (p for p in sglx.files if p.suffix == ".meta"):
        size = meta.with_suffix(".bin").stat().st_size
        assert spikeglx_pair_problem(meta.name, meta.read_text(), size) is None


def test_neo_lists_exactly_the_run_streams(sglx):
    from neo.rawio import SpikeGLXRawIO

    reader = SpikeGLXRawIO(dirname=str(sglx.root))
    reader.parse_header()
    names = set(reader.header["signal_streams"]["name"])
    main = {"imec0.ap", "imec0.lf", "imec1.ap", "imec1.lf", "nidq"}
    # neo 0.14 exposes each imec file's SY word as its own "<stream>-SYNC" stream.
    assert names == main | {f"{s}-SYNC" for s in main if s != "nidq"}
    assert [c[0] for c in reader.header["event_channels"]] == [f"XD{i}" for i in range(8)]


@pytest.mark.parametrize("index", [0, 1])
def test_spikeglx_ap_reads_back_exactly(sglx, index):
    probe = sglx.probes[index]
    assert probe.stream_name == f"imec{index}.ap"
    recording = _read_spikeglx(sglx.root, probe.stream_name)
    expected, _ = rig_ground_truth(SGLX_SPEC, index, SPIKEGLX_AP_UV_PER_BIT)
    n = int(SGLX_SPEC.duration_s * FS)
    assert recording.get_num_channels() == probe.n_channels == SGLX_SPEC.num_channels
    assert recording.get_num_samples() == n
    assert recording.sampling_frequency == probe.sampling_frequency == FS
    traces = recording.get_traces()
    assert traces.dtype == np.int16
    assert np.array_equal(traces, expected.get_traces())
    assert recording.get_probe() is not None
    np.testing.assert_array_equal(recording.get_channel_locations(), probe.positions)
    np.testing.assert_array_equal(probe.positions, np1_probe(probe.n_channels).contact_positions)
    shifts = recording.get_property("inter_sample_shift")
    assert shifts is not None and len(shifts) == probe.n_channels
    # Scale: 0.6 V / 512 / gain 500 = 2.34375 uV per step, and the noise is the spec's.
    np.testing.assert_allclose(recording.get_channel_gains(), SPIKEGLX_AP_UV_PER_BIT)
    np.testing.assert_allclose(recording.get_channel_offsets(), 0.0)
    uv = recording.get_traces(return_in_uV=True, end_frame=int(FS))
    noise = np.median(np.median(np.abs(uv - np.median(uv, axis=0)), axis=0)) / 0.6745
    assert 0.8 * SGLX_SPEC.noise_uv < noise < 1.25 * SGLX_SPEC.noise_uv
    # The stream starts at the file's firstSample on the run's clock.
    assert recording.get_times()[0] == pytest.approx(SPIKEGLX_FIRST_SAMPLE / FS)


def test_the_two_probes_hold_different_units(sglx):
    a = _read_spikeglx(sglx.root, "imec0.ap").get_traces(end_frame=3000)
    b = _read_spikeglx(sglx.root, "imec1.ap").get_traces(end_frame=3000)
    assert not np.array_equal(a, b)


def test_spikeglx_sync_lf_and_nidq(sglx):
    n = int(SGLX_SPEC.duration_s * FS)
    sync = _read_spikeglx(sglx.root, "imec0.ap-SYNC").get_traces()[:, 0]
    assert set(np.unique(sync)) == {0, 1 << IMEC_SYNC_BIT}
    t = (SPIKEGLX_FIRST_SAMPLE + np.arange(n)) / FS
    assert np.array_equal(sync > 0, t % 1.0 < 0.5)  # 1 Hz, 50 % duty, on the run's clock

    lf = _read_spikeglx(sglx.root, "imec0.lf")
    assert lf.sampling_frequency == FS / LF_DECIMATION
    assert lf.get_num_samples() == n // LF_DECIMATION
    np.testing.assert_allclose(lf.get_channel_gains(), SPIKEGLX_LF_UV_PER_BIT)
    np.testing.assert_array_equal(lf.get_channel_locations(), sglx.probes[0].positions)

    nidq = _read_spikeglx(sglx.root, "nidq")
    assert nidq.get_num_channels() == 2  # XA0 and the digital word
    word = nidq.get_traces()[:, 1]
    assert set(np.unique(word)) == {0, 1}


@pytest.mark.parametrize("fixture", ["sglx", "oe"])
def test_true_sortings(request, fixture):
    import spikeinterface as si

    rig: RigRecording = request.getfixturevalue(fixture)
    spec = SGLX_SPEC if fixture == "sglx" else OE_SPEC
    n = int(spec.duration_s * FS)
    for index, probe in enumerate(rig.probes):
        sorting = si.load(probe.sorting_dir)
        assert sorting.get_num_units() == spec.num_units
        assert sorting.sampling_frequency == FS
        gain = SPIKEGLX_AP_UV_PER_BIT if fixture == "sglx" else OPENEPHYS_BIT_VOLTS
        _, expected = rig_ground_truth(spec, index, gain)
        for unit in sorting.unit_ids:
            frames = sorting.get_unit_spike_train(unit)
            assert len(frames) > 0 and frames.min() >= 0 and frames.max() < n
            assert np.array_equal(frames, expected.get_unit_spike_train(unit))


@pytest.mark.parametrize("index", [0, 1])
def test_true_units_sit_over_the_saved_contacts(index):
    """A unit past the last saved row or column would be seen from one side only."""
    recording, sorting = rig_ground_truth(SGLX_SPEC, index, SPIKEGLX_AP_UV_PER_BIT)
    contacts = recording.get_channel_locations()
    units = sorting.get_property("gt_unit_locations")[:, :2]
    assert np.all(units >= contacts.min(axis=0)) and np.all(units <= contacts.max(axis=0))


@pytest.mark.parametrize("fixture", ["sglx", "oe"])
def test_each_channel_carries_the_adc_delay_its_reader_reports(request, fixture):
    """The samples are as the multiplexed ADCs take them: the phase shift, with the delays the
    reader gives, puts every channel's spikes back where the undelayed ones are."""
    from spikeinterface.extractors import read_openephys
    from spikeinterface.preprocessing.phase_shift import apply_frequency_shift

    rig: RigRecording = request.getfixturevalue(fixture)
    probe = rig.probes[0]
    if fixture == "sglx":
        opened = _read_spikeglx(rig.root, probe.stream_name)
    else:
        opened = read_openephys(rig.root, stream_name=probe.stream_name)
    delays = opened.get_property("inter_sample_shift")
    np.testing.assert_allclose(delays, np1_adc_delays(np1_probe(probe.n_channels)))
    spec = SGLX_SPEC if fixture == "sglx" else OE_SPEC
    delayed = rig_ground_truth(spec, 0, 1.0)[0].get_parent().templates
    plain = generate_recording(spec, probe=np1_probe(spec.num_channels), unit_margin_um=0.0)
    templates = plain[0].get_parent().templates
    scale = np.abs(templates).max()
    assert np.abs(delayed - templates).max() > 0.05 * scale
    for unit, channels_late in enumerate(delayed):
        undone = apply_frequency_shift(channels_late.astype(float), delays)
        np.testing.assert_allclose(undone, templates[unit], atol=1e-3 * scale)


def test_openephys_layout(oe):
    assert oe.data_type == "openephys"
    names = {p.relative_to(oe.root).as_posix() for p in oe.files}
    rec = "Record Node 101/experiment1/recording1"
    for band in ("AP", "LFP"):
        for f in ("continuous.dat", "sample_numbers.npy", "timestamps.npy"):
            assert f"{rec}/continuous/Neuropix-PXI-100.ProbeA-{band}/{f}" in names
    assert "Record Node 101/settings.xml" in names
    assert f"{rec}/structure.oebin" in names
    assert f"{rec}/events/Neuropix-PXI-100.ProbeA-AP/TTL/states.npy" in names
    assert oe.root not in oe.probes[0].sorting_dir.parents


def test_openephys_ap_reads_back_exactly(oe):
    from spikeinterface.extractors import read_openephys

    probe = oe.probes[0]
    assert probe.stream_name == "Record Node 101#Neuropix-PXI-100.ProbeA-AP"
    recording = read_openephys(oe.root, stream_name=probe.stream_name)
    expected, _ = rig_ground_truth(OE_SPEC, 0, OPENEPHYS_BIT_VOLTS)
    assert recording.get_num_channels() == probe.n_channels == OE_SPEC.num_channels
    assert recording.sampling_frequency == FS
    assert np.array_equal(recording.get_traces(), expected.get_traces())
    np.testing.assert_array_equal(recording.get_channel_locations(), probe.positions)
    np.testing.assert_array_equal(probe.positions, np1_probe(probe.n_channels).contact_positions)
    assert recording.get_property("inter_sample_shift") is not None
    np.testing.assert_allclose(recording.get_channel_gains(), OPENEPHYS_BIT_VOLTS)
    folder = recording._stream_folders[0]
    first = int(np.load(folder / "sample_numbers.npy")[0])
    assert first == OPENEPHYS_FIRST_SAMPLE != 0
    assert recording.get_times()[0] == pytest.approx(first / FS)


def test_openephys_streams_and_sync_events(oe):
    from neo.rawio import OpenEphysBinaryRawIO

    reader = OpenEphysBinaryRawIO(dirname=str(oe.root))
    reader.parse_header()
    assert set(reader.header["signal_streams"]["name"]) == {
        "Record Node 101#Neuropix-PXI-100.ProbeA-AP",
        "Record Node 101#Neuropix-PXI-100.ProbeA-LFP",
    }
    streams = list(reader.header["signal_streams"]["name"])
    lfp = streams.index("Record Node 101#Neuropix-PXI-100.ProbeA-LFP")
    assert reader.get_signal_sampling_rate(lfp) == FS / LF_DECIMATION
    assert reader.event_count(0, 0, 0) > 0  # the 1 Hz sync line as TTL epochs


def test_full_probe_saves_all_channels(tmp_path):
    """384 channels: ``snsSaveChanSubset=all`` / ``recording_state=ALL``."""
    spec = GroundTruthSpec(
        duration_s=0.2, num_channels=384, num_units=3, noise_uv=10.0, sampling_frequency=FS
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = write_spikeglx_run(tmp_path / "s", spec, n_probes=1, with_lf=False, with_nidq=False)
        oe = write_openephys_recording(tmp_path / "o", spec, with_lfp=False)
    meta = (run.root / "sim_g0_imec0" / "sim_g0_t0.imec0.ap.meta").read_text()
    assert "snsSaveChanSubset=all\n" in meta and "nSavedChans=385\n" in meta
    for rig in (run, oe):
        from spikeinterface.extractors import read_openephys, read_spikeglx

        reader = read_spikeglx if rig is run else read_openephys
        recording = reader(rig.root, stream_name=rig.probes[0].stream_name)
        assert recording.get_num_channels() == 384
        np.testing.assert_array_equal(recording.get_channel_locations(), rig.probes[0].positions)

"""Ground-truth recordings written in the acquisition software's own formats.

Why: the worker reads SpikeGLX runs and Open Ephys recordings (``data_type`` ``spikeglx`` /
``openephys``) with SpikeInterface's readers, which rest on neo and probeinterface. Testing that
path end to end needs files laid out byte for byte as the rigs write them (folder names,
``.meta`` keys, ``settings.xml`` probe elements, ``structure.oebin``, non-zero first samples),
with a known truth. This module writes them itself, from :func:`generate_recording`'s units
placed on the real Neuropixels 1.0 geometry, and saves each probe's true sorting beside (never
inside) the recording folder.

* :func:`write_spikeglx_run`: a SpikeGLX (2023 builds) multi-probe NP1.0 run: per probe
  ``<run>_g0_imec<i>/<run>_g0_t0.imec<i>.{ap,lf}.{bin,meta}`` plus ``<run>_g0_t0.nidq.{bin,meta}``.
  Fewer than 384 channels are saved as a channel subset (``snsSaveChanSubset``), which neo and
  probeinterface both honour. Samples are int16 at NP1.0 AP gain 500 (2.34375 uV per step), so
  ``spec.noise_uv`` of 5 uV is about two steps wide, as on a real probe; use 10 uV or more for
  finer-grained noise.
* :func:`write_openephys_recording`: an Open Ephys GUI 0.6 binary recording from the
  Neuropix-PXI plugin (one NP1.0 probe, ``ProbeA``), int16 at ``bit_volts`` 0.195 uV,
  sample numbers starting at :data:`OPENEPHYS_FIRST_SAMPLE`, sync line as TTL events.

Only ``spec``'s duration, sampling rate, unit count, firing rate, noise, seed, unit spacing and
drift are used: the geometry is always NP1.0's (``num_columns``/``num_shanks`` are ignored).
Units sit over the saved contacts and each channel carries its ADC's sampling delay, which the
readers report as ``inter_sample_shift`` (:func:`rig_ground_truth`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from spikebatch.worker.simulate import GroundTruthSpec, generate_recording

#: The NP1.0 part number SpikeGLX and the Open Ephys plugin write (probeinterface's catalogue
#: and neo's probe table both know it; its geometry equals NP1000's).
NP1_PART_NUMBER = "PRB_1_4_0480_1"
NP1_READOUT_CHANNELS = 384
NP1_AP_GAIN = 500
NP1_LF_GAIN = 250
IM_AI_RANGE_MAX_V = 0.6
IM_MAX_INT = 512
#: uV per int16 step of a SpikeGLX NP1.0 AP file: imAiRangeMax / imMaxInt / AP gain.
SPIKEGLX_AP_UV_PER_BIT = IM_AI_RANGE_MAX_V / IM_MAX_INT / NP1_AP_GAIN * 1e6
SPIKEGLX_LF_UV_PER_BIT = IM_AI_RANGE_MAX_V / IM_MAX_INT / NP1_LF_GAIN * 1e6
#: AP samples per LF sample (30 kHz / 2.5 kHz).
LF_DECIMATION = 12
#: The imec SY word carries the sync input on bit 6.
IMEC_SYNC_BIT = 6
SYNC_PERIOD_S = 1.0
NIDQ_SAMPLING_FREQUENCY = 25_000.0
NIDQ_RANGE_V = 5.0
#: Where the SpikeGLX files start in the run (AP samples): a run's first file rarely starts at 0.
SPIKEGLX_FIRST_SAMPLE = 120_000
OPENEPHYS_BIT_VOLTS = 0.195
#: Open Ephys sample numbers count from acquisition start, not from the start of recording.
OPENEPHYS_FIRST_SAMPLE = 123_456
CREATED = datetime(2026, 1, 5, 10, 11, 12)
SPIKEGLX_APP_VERSION = "20230425"
OPENEPHYS_GUI_VERSION = "0.6.4"
NEUROPIX_PXI_VERSION = "0.4.1"
_CHUNK_S = 1.0


@dataclass(frozen=True)
class RigProbe:
    """One probe's spike-band stream and its truth."""

    #: The name SpikeInterface's reader gives the AP stream, e.g. ``imec0.ap``.
    stream_name: str
    #: The probe's true sorting (``spikeinterface.load``), outside the recording folder.
    sorting_dir: Path
    #: (n_channels, 2) contact positions (um) of the saved channels, as the readers give them.
    positions: np.ndarray
    n_channels: int
    sampling_frequency: float


@dataclass(frozen=True)
class RigRecording:
    """What was written: the folder to read and each probe's truth."""

    #: The folder to hand to the reader / worker (the run folder / the Open Ephys top folder).
    root: Path
    data_type: str
    probes: list[RigProbe]
    #: Every file written under ``root``.
    files: list[Path]


def np1_probe(n_channels: int, part_number: str = NP1_PART_NUMBER):
    """The NP1.0 probe as recorded: bank 0, readout channels ``0..n_channels-1`` (wired 0..n-1).

    Positions are probeinterface's catalogue ones (x 16/48 on even rows, 0/32 on odd rows,
    20 um rows), which is what its SpikeGLX and Open Ephys readers give back; so are the ADC
    annotations (which ADC reads each channel, in which slot), set on all 384 readout channels
    before the slice, as the readers do.
    """
    from probeinterface.neuropixels_tools import (
        _annotate_probe_with_adc_sampling_info,
        build_neuropixels_probe,
    )

    if not 1 <= n_channels <= NP1_READOUT_CHANNELS:
        raise ValueError(f"an NP1.0 probe saves 1..384 channels, not {n_channels}")
    full = build_neuropixels_probe(part_number)
    _annotate_probe_with_adc_sampling_info(full, full.annotations.get("adc_sampling_table"))
    probe = full.get_slice(np.arange(n_channels))
    probe.set_device_channel_indices(np.arange(n_channels))
    return probe


def rig_ground_truth(spec: GroundTruthSpec, probe_index: int, gain_uv: float):
    """Probe ``probe_index``'s ``(int16 recording, true sorting)``: seed ``spec.seed + index``,
    units over the NP1.0 geometry, ``gain_uv`` uV per step. Deterministic: the writers use it
    and tests can call it again to get the exact samples.

    As the probe records them: the units sit over the saved contacts (a unit past the last
    saved row or column is seen from one side only, its footprint cut off where the probe
    records nothing), and each channel is sampled at its ADC's slot, the delays the readers
    give as ``inter_sample_shift`` (the worker's phase shift undoes them, as on a real probe).
    """
    probe = np1_probe(spec.num_channels)
    return generate_recording(
        replace(spec, seed=spec.seed + probe_index),
        probe=probe,
        gain_uv=gain_uv,
        unit_margin_um=0.0,
        adc_delays=np1_adc_delays(probe),
    )


def np1_adc_delays(probe) -> np.ndarray:
    """Each contact's ADC sampling delay (samples) as SpikeInterface's readers compute it from
    the probe's ADC table: NP1.0 reads 12 channels per ADC one after another, 13 slots."""
    from spikeinterface.extractors.neuropixels_utils import (
        get_neuropixels_sample_shifts_from_probe,
    )

    return np.asarray(get_neuropixels_sample_shifts_from_probe(probe), dtype=float)


# --------------------------------------------------------------------------------------------
# SpikeGLX
# --------------------------------------------------------------------------------------------


def write_spikeglx_run(
    folder: Path,
    spec: GroundTruthSpec,
    *,
    n_probes: int = 2,
    run_name: str = "sim",
    with_lf: bool = True,
    with_nidq: bool = True,
    first_sample: int = SPIKEGLX_FIRST_SAMPLE,
) -> RigRecording:
    """Write ``folder/<run_name>_g0/`` as SpikeGLX writes an NP1.0 run (probe folders on).

    Each probe ``i`` gets its own units (seed ``spec.seed + i``); its truth goes to
    ``folder/truth/imec<i>.ap/``. ``first_sample``: the AP ``firstSample`` of the files (neo
    starts the streams at ``firstSample / rate`` seconds); LF and nidq follow on their clocks.
    """
    if spec.sampling_frequency != 30_000.0:
        raise ValueError("NP1.0 samples AP at 30 kHz; set spec.sampling_frequency=30000")
    folder = Path(folder)
    run_dir = folder / f"{run_name}_g0"
    run_dir.mkdir(parents=True, exist_ok=True)
    n_saved = spec.num_channels
    probes = []
    for index in range(n_probes):
        recording, sorting = rig_ground_truth(spec, index, SPIKEGLX_AP_UV_PER_BIT)
        n_samples = recording.get_num_samples()
        probe_dir = run_dir / f"{run_name}_g0_imec{index}"
        probe_dir.mkdir(exist_ok=True)
        stem = probe_dir / f"{run_name}_g0_t0.imec{index}"
        fs = spec.sampling_frequency
        ap_bin = stem.with_name(stem.name + ".ap.bin")
        _write_interleaved(
            ap_bin,
            _ap_chunks(recording, n_samples, first_sample, fs),
        )
        common = _imec_meta_common(index, n_saved)
        _write_meta(
            ap_bin,
            {
                **common,
                "imSampRate": f"{fs:g}",
                "firstSample": str(first_sample),
                "snsApLfSy": f"{n_saved},0,1",
                "~snsChanMap": _imec_chan_map(n_saved, "AP", 0),
            },
            fs,
            n_saved + 1,
            run_name,
            index,
        )
        if with_lf:
            lf_bin = stem.with_name(stem.name + ".lf.bin")
            _write_interleaved(lf_bin, _lf_chunks(recording, n_samples, first_sample, fs))
            _write_meta(
                lf_bin,
                {
                    **common,
                    "imSampRate": f"{fs / LF_DECIMATION:g}",
                    "firstSample": str(first_sample // LF_DECIMATION),
                    "snsApLfSy": f"0,{n_saved},1",
                    "~snsChanMap": _imec_chan_map(n_saved, "LF", NP1_READOUT_CHANNELS),
                },
                fs / LF_DECIMATION,
                n_saved + 1,
                run_name,
                index,
            )
        sorting_dir = folder / "truth" / f"imec{index}.ap"
        sorting.save(folder=sorting_dir, overwrite=True)
        probes.append(
            RigProbe(
                stream_name=f"imec{index}.ap",
                sorting_dir=sorting_dir,
                positions=np.asarray(recording.get_channel_locations(), dtype=float),
                n_channels=n_saved,
                sampling_frequency=fs,
            )
        )
    if with_nidq:
        _write_nidq(run_dir, run_name, spec.duration_s, first_sample / spec.sampling_frequency)
    return RigRecording(run_dir, "spikeglx", probes, _files_under(run_dir))


def _ap_chunks(recording, n_samples: int, first_sample: int, fs: float) -> Iterator[np.ndarray]:
    """(samples, channels + SY) int16 blocks: the traces, then the SY word (sync on bit 6)."""
    step = int(_CHUNK_S * fs)
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        traces = recording.get_traces(start_frame=start, end_frame=stop)
        sync = _sync_high(first_sample + np.arange(start, stop), fs) * (1 << IMEC_SYNC_BIT)
        yield np.column_stack([traces, sync.astype(np.int16)])


def _lf_chunks(recording, n_samples: int, first_sample: int, fs: float) -> Iterator[np.ndarray]:
    """The LF band stand-in: 12-sample means of the AP signal (uV) at LF gain 250, plus SY."""
    n_lf = n_samples // LF_DECIMATION
    step = int(_CHUNK_S * fs) // LF_DECIMATION * LF_DECIMATION
    for start in range(0, n_lf * LF_DECIMATION, step):
        stop = min(start + step, n_lf * LF_DECIMATION)
        traces = recording.get_traces(start_frame=start, end_frame=stop).astype(np.float64)
        blocks = traces.reshape(-1, LF_DECIMATION, traces.shape[1]).mean(axis=1)
        lf = np.round(blocks * SPIKEGLX_AP_UV_PER_BIT / SPIKEGLX_LF_UV_PER_BIT).astype(np.int16)
        ap_index = first_sample + np.arange(start, stop, LF_DECIMATION)
        sync = _sync_high(ap_index, fs) * (1 << IMEC_SYNC_BIT)
        yield np.column_stack([lf, sync.astype(np.int16)])


def _sync_high(sample_index: np.ndarray, fs: float) -> np.ndarray:
    """The shared 1 Hz, 50 % sync square wave at these run sample indices (0/1, int16)."""
    phase = (sample_index / fs) % SYNC_PERIOD_S
    return (phase < SYNC_PERIOD_S / 2).astype(np.int16)


def _imec_meta_common(index: int, n_saved: int) -> dict[str, str]:
    """The keys an NP1.0 AP and LF ``.meta`` share."""
    subset = (
        "all"
        if n_saved == NP1_READOUT_CHANNELS
        else f"0:{n_saved - 1},{NP1_READOUT_CHANNELS}:{NP1_READOUT_CHANNELS + n_saved - 1},768"
    )
    imro = f"(0,{NP1_READOUT_CHANNELS})" + "".join(
        f"({ch} 0 0 {NP1_AP_GAIN} {NP1_LF_GAIN} 1)" for ch in range(NP1_READOUT_CHANNELS)
    )
    # SpikeGLX's geometry map: x from the shank's left edge, its own (mirrored) column order;
    # probeinterface reads the geometry from ~imroTbl and its catalogue, not from this.
    geom = f"({NP1_PART_NUMBER},1,0,70)" + "".join(
        f"(0:{59 - x:g}:{y:g}:1)" for x, y in np1_probe(n_saved).contact_positions
    )
    return {
        "acqApLfSy": "384,384,1",
        "appVersion": SPIKEGLX_APP_VERSION,
        "fileCreateTime": CREATED.isoformat(),
        "gateMode": "Immediate",
        "imAiRangeMax": f"{IM_AI_RANGE_MAX_V:g}",
        "imAiRangeMin": f"{-IM_AI_RANGE_MAX_V:g}",
        "imAnyChanFullBand": "false",
        "imCalibrated": "true",
        "imDatApi": "3.62.1",
        "imDatBs_fw": "2.0.169",
        "imDatBsc_fw": "3.2.176",
        "imDatBsc_hw": "2.1",
        "imDatBsc_pn": "NP2_QBSC_00",
        "imDatBsc_sn": "424",
        "imDatHs_fw": "1.2.0",
        "imDatHs_pn": "NP2_HS_30",
        "imDatHs_sn": str(2200 + index),
        "imDatPrb_dock": "1",
        "imDatPrb_pn": NP1_PART_NUMBER,
        "imDatPrb_port": str(index + 1),
        "imDatPrb_slot": "2",
        "imDatPrb_sn": str(18194814140 + index),
        "imDatPrb_type": "0",
        "imLEDEnable": "false",
        "imMaxInt": str(IM_MAX_INT),
        "imRoFile": "",
        "imStdby": "",
        "imSvyMaxBnk": "-1",
        "imSvyNShanks": "1",
        "imTrgRising": "true",
        "imTrgSource": "0",
        "nDataDirs": "1",
        "snsSaveChanSubset": subset,
        "syncImInputSlot": "2",
        "syncSourceIdx": "0",
        "syncSourcePeriod": f"{SYNC_PERIOD_S:g}",
        "trigMode": "Immediate",
        "typeImEnabled": "2",
        "typeNiEnabled": "1",
        "typeObEnabled": "0",
        "typeThis": "imec",
        "userNotes": "simulated ground truth (spikebatch.worker.simulate_rig)",
        "~imroTbl": imro,
        "~snsGeomMap": geom,
    }


def _imec_chan_map(n_saved: int, kind: str, first_id: int) -> str:
    """``~snsChanMap``: header (acquired AP, LF, SY), then ``(name;channel:order)`` for each
    saved channel and the SY word (acquisition channel 768)."""
    entries = "".join(f"({kind}{c};{first_id + c}:{c})" for c in range(n_saved))
    return f"(384,384,1){entries}(SY0;768:{n_saved})"


def _write_nidq(run_dir: Path, run_name: str, duration_s: float, t0_s: float) -> None:
    """``<run>_g0_t0.nidq.{bin,meta}``: XA0 a 2.5 V stimulus pulse train, XD0..7 a digital
    word whose line 0 is the shared sync."""
    fs = NIDQ_SAMPLING_FREQUENCY
    n = round(duration_s * fs)
    first = round(t0_s * fs)
    index = first + np.arange(n)
    stim = ((index / fs) % 0.7 < 0.1) * 2.5
    xa0 = np.round(stim / NIDQ_RANGE_V * 32768).astype(np.int16)
    word = _sync_high(index, fs)
    bin_path = run_dir / f"{run_name}_g0_t0.nidq.bin"
    _write_interleaved(bin_path, iter([np.column_stack([xa0, word])]))
    meta = {
        "acqMnMaXaDw": "0,0,1,1",
        "appVersion": SPIKEGLX_APP_VERSION,
        "fileCreateTime": CREATED.isoformat(),
        "firstSample": str(first),
        "gateMode": "Immediate",
        "nDataDirs": "1",
        "niAiRangeMax": f"{NIDQ_RANGE_V:g}",
        "niAiRangeMin": f"{-NIDQ_RANGE_V:g}",
        "niAiTermination": "Default",
        "niClockLine1": "Internal",
        "niClockSource": f"PXI1Slot4_2 : {fs:g}",
        "niDev1": "PXI1Slot4",
        "niDev1ProductName": "PXIe-6341",
        "niMAChans1": "",
        "niMAGain": "1",
        "niMNChans1": "",
        "niMNGain": "200",
        "niMaxInt": "32768",
        "niMuxFactor": "32",
        "niSampRate": f"{fs:g}",
        "niStartEnable": "false",
        "niXAChans1": "0",
        "niXDBytes1": "1",
        "niXDChans1": "0:7",
        "snsMnMaXaDw": "0,0,1,1",
        "snsSaveChanSubset": "all",
        "syncNiChan": "0",
        "syncNiChanType": "0",
        "syncNiThresh": "1.1",
        "syncSourceIdx": "0",
        "syncSourcePeriod": f"{SYNC_PERIOD_S:g}",
        "trigMode": "Immediate",
        "typeImEnabled": "2",
        "typeNiEnabled": "1",
        "typeObEnabled": "0",
        "typeThis": "nidq",
        "userNotes": "",
        "~snsChanMap": "(0,0,32,1,1)(XA0;0:0)(XD0;1:1)",
    }
    _write_meta(bin_path, meta, fs, 2, run_name, None)


def _write_meta(
    bin_path: Path,
    keys: dict[str, str],
    fs: float,
    n_saved: int,
    run_name: str,
    probe_index: int | None,
) -> None:
    """The ``.meta`` beside ``bin_path``: the file's own keys (size, span, SHA1, original path)
    added, plain keys sorted, then the ``~`` tables, as SpikeGLX orders them.

    What the readers rely on: neo takes the stream name from ``fileName`` (the original path,
    not the name on disk), the channel names from ``~snsChanMap`` (exactly the saved channels),
    the gains from ``imDatPrb_pn`` (must be in its probe table), ``~imroTbl`` and
    ``imAiRangeMax``, and the stream's start from ``firstSample``; probeinterface takes the
    geometry from ``imDatPrb_pn`` + ``~imroTbl`` and the saved subset from ``snsSaveChanSubset``.
    """
    size = bin_path.stat().st_size
    original = f"D:/SGL_DATA/{run_name}_g0/"
    if probe_index is not None:
        original += f"{run_name}_g0_imec{probe_index}/"
    keys = {
        **keys,
        "fileName": original + bin_path.name,
        "fileSHA1": hashlib.sha1(bin_path.read_bytes()).hexdigest().upper(),
        "fileSizeBytes": str(size),
        "fileTimeSecs": f"{size / 2 / n_saved / fs:.6f}",
        "nSavedChans": str(n_saved),
    }
    plain = sorted(k for k in keys if not k.startswith("~"))
    tables = sorted(k for k in keys if k.startswith("~"))
    text = "".join(f"{k}={keys[k]}\n" for k in plain + tables)
    bin_path.with_suffix(".meta").write_text(text, encoding="utf-8")


def _write_interleaved(path: Path, chunks: Iterator[np.ndarray]) -> None:
    """Append (samples, channels) int16 blocks sample-major: channel-interleaved, little endian."""
    with path.open("wb") as f:
        for chunk in chunks:
            np.ascontiguousarray(chunk, dtype="<i2").tofile(f)


# --------------------------------------------------------------------------------------------
# Open Ephys
# --------------------------------------------------------------------------------------------

_OE_SOURCE_ID = 100
_OE_NODE_ID = 101
_OE_PROBE = "ProbeA"


def write_openephys_recording(
    folder: Path,
    spec: GroundTruthSpec,
    *,
    with_lfp: bool = True,
    first_sample: int = OPENEPHYS_FIRST_SAMPLE,
) -> RigRecording:
    """Write ``folder/<date>_<time>/Record Node 101/...`` as the Open Ephys GUI 0.6 writes a
    Neuropix-PXI (NP1.0, ``ProbeA``) recording in the binary format.

    Fewer than 384 channels: the Record Node's channel selection (``recording_state``) saves
    the first ``spec.num_channels``. The truth goes to ``folder/truth/ProbeA/``.
    """
    if spec.sampling_frequency != 30_000.0:
        raise ValueError("NP1.0 samples AP at 30 kHz; set spec.sampling_frequency=30000")
    folder = Path(folder)
    root = folder / CREATED.strftime("%Y-%m-%d_%H-%M-%S")
    node = root / f"Record Node {_OE_NODE_ID}"
    rec_dir = node / "experiment1" / "recording1"
    fs = spec.sampling_frequency
    n_saved = spec.num_channels
    recording, sorting = rig_ground_truth(spec, 0, OPENEPHYS_BIT_VOLTS)
    n_samples = recording.get_num_samples()

    source = f"Neuropix-PXI-{_OE_SOURCE_ID}"
    ap_name = f"{source}.{_OE_PROBE}-AP"
    streams = [(f"{_OE_PROBE}-AP", ap_name, fs, first_sample, _oe_ap_chunks(recording, n_samples))]
    if with_lfp:
        streams.append(
            (
                f"{_OE_PROBE}-LFP",
                f"{source}.{_OE_PROBE}-LFP",
                fs / LF_DECIMATION,
                first_sample // LF_DECIMATION,
                _oe_lfp_chunks(recording, n_samples),
            )
        )
    continuous = []
    for stream, folder_name, rate, start, chunks in streams:
        out = rec_dir / "continuous" / folder_name
        out.mkdir(parents=True, exist_ok=True)
        _write_interleaved(out / "continuous.dat", chunks)
        n = (out / "continuous.dat").stat().st_size // 2 // n_saved
        numbers = np.arange(start, start + n, dtype=np.int64)
        np.save(out / "sample_numbers.npy", numbers)
        np.save(out / "timestamps.npy", numbers / rate)
        continuous.append(_oebin_continuous(stream, folder_name, rate, n_saved))

    events = [_write_oe_sync_events(rec_dir, ap_name, n_samples, first_sample, fs)]
    structure = {
        "GUI version": OPENEPHYS_GUI_VERSION,
        "continuous": continuous,
        "events": events,
        "spikes": [],
    }
    (rec_dir / "structure.oebin").write_text(json.dumps(structure, indent=4), encoding="utf-8")
    sync_lines = [f"Software Time (milliseconds since midnight Jan 1st 1970 UTC): {_epoch_ms()}"]
    for stream, _, rate, start, _ in streams:
        sync_lines.append(
            f"Start Time for Neuropix-PXI ({_OE_SOURCE_ID}) - {stream} @ {rate:g} Hz: {start}"
        )
    (rec_dir / "sync_messages.txt").write_text("\r\n".join(sync_lines) + "\r\n", encoding="utf-8")
    (node / "settings.xml").write_text(_oe_settings_xml(n_saved, fs, with_lfp), encoding="utf-8")

    sorting_dir = folder / "truth" / _OE_PROBE
    sorting.save(folder=sorting_dir, overwrite=True)
    probe = RigProbe(
        stream_name=f"Record Node {_OE_NODE_ID}#{ap_name}",
        sorting_dir=sorting_dir,
        positions=np.asarray(recording.get_channel_locations(), dtype=float),
        n_channels=n_saved,
        sampling_frequency=fs,
    )
    return RigRecording(root, "openephys", [probe], _files_under(root))


def _oe_ap_chunks(recording, n_samples: int) -> Iterator[np.ndarray]:
    step = int(_CHUNK_S * recording.sampling_frequency)
    for start in range(0, n_samples, step):
        yield recording.get_traces(start_frame=start, end_frame=min(start + step, n_samples))


def _oe_lfp_chunks(recording, n_samples: int) -> Iterator[np.ndarray]:
    """The LFP stand-in: 12-sample means of the AP samples (same 0.195 uV steps)."""
    n_lf = n_samples // LF_DECIMATION * LF_DECIMATION
    step = int(_CHUNK_S * recording.sampling_frequency) // LF_DECIMATION * LF_DECIMATION
    for start in range(0, n_lf, step):
        traces = recording.get_traces(start_frame=start, end_frame=min(start + step, n_lf))
        blocks = traces.astype(np.float64).reshape(-1, LF_DECIMATION, traces.shape[1]).mean(axis=1)
        yield np.round(blocks).astype(np.int16)


def _oebin_continuous(stream: str, folder_name: str, rate: float, n_saved: int) -> dict:
    band = "AP" if stream.endswith("-AP") else "LFP"
    return {
        "folder_name": folder_name + "/",
        "sample_rate": rate,
        "source_processor_name": "Neuropix-PXI",
        "source_processor_id": _OE_SOURCE_ID,
        "stream_name": stream,
        "recorded_processor": "Record Node",
        "recorded_processor_id": _OE_NODE_ID,
        "num_channels": n_saved,
        "channels": [
            {
                "channel_name": f"CH{c + 1}",
                "description": f"Neuropixels {band} channel",
                "identifier": f"neuropixels.{band.lower()}",
                "history": "Neuropix-PXI -> Record Node",
                "bit_volts": OPENEPHYS_BIT_VOLTS,
                "units": "uV",
            }
            for c in range(n_saved)
        ],
    }


def _write_oe_sync_events(
    rec_dir: Path, ap_name: str, n_samples: int, first_sample: int, fs: float
) -> dict:
    """The PXI card's sync input as TTL events on line 1 (states +1 / -1); its oebin entry."""
    out = rec_dir / "events" / ap_name / "TTL"
    out.mkdir(parents=True, exist_ok=True)
    level = _sync_high(first_sample + np.arange(n_samples), fs)
    edges = np.flatnonzero(np.diff(level)) + 1
    states = np.where(level[edges] == 1, 1, -1).astype(np.int16)
    numbers = (first_sample + edges).astype(np.int64)
    np.save(out / "states.npy", states)
    np.save(out / "sample_numbers.npy", numbers)
    np.save(out / "timestamps.npy", numbers / fs)
    np.save(out / "full_words.npy", (states > 0).astype(np.uint64))
    return {
        "folder_name": f"{ap_name}/TTL/",
        "channel_name": "Neuropixels PXI Sync",
        "description": "Status of SMA sync line on PXI card",
        "identifier": "neuropixels.sync",
        "sample_rate": fs,
        "type": "int16",
        "num_channels": 1,
        "source_processor": "Neuropix-PXI",
        "stream_name": f"{_OE_PROBE}-AP",
        "initial_state": 0,
    }


def _oe_settings_xml(n_saved: int, fs: float, with_lfp: bool) -> str:
    """``settings.xml`` of a GUI 0.6 Neuropix-PXI -> Record Node chain: the NP_PROBE element
    (part number, gains, per-channel bank and electrode x/y positions) and, when fewer than 384
    channels are saved, the Record Node's ``recording_state`` selection."""
    full = np1_probe(NP1_READOUT_CHANNELS).contact_positions
    channels = " ".join(f'CH{c}="0"' for c in range(NP1_READOUT_CHANNELS))
    # The plugin's x positions sit 11 um right of probeinterface's (the left column at 11 um);
    # probeinterface subtracts the smallest x, so any constant offset reads back the same.
    xpos = " ".join(f'CH{c}="{x + 11:g}"' for c, (x, _) in enumerate(full))
    ypos = " ".join(f'CH{c}="{y:g}"' for c, (_, y) in enumerate(full))
    state = "ALL" if n_saved == NP1_READOUT_CHANNELS else "1" * n_saved + "0" * (384 - n_saved)
    bands = [("AP", fs)] + ([("LFP", fs / LF_DECIMATION)] if with_lfp else [])
    source_streams = "\n".join(
        f'      <STREAM name="{_OE_PROBE}-{band}" description="Neuropixels {band} band data stream"'
        f' sample_rate="{rate:.1f}" channel_count="384">\n'
        f"        <PARAMETERS/>\n      </STREAM>"
        for band, rate in bands
    )
    record_streams = "\n".join(
        f'        <STREAM isMainStream="{int(band == "AP")}" sync_line="0" name="{_OE_PROBE}-{band}"'
        f' source_node_id="{_OE_SOURCE_ID}" sample_rate="{rate:.1f}" channel_count="384"'
        f' recording_state="{state}"/>'
        for band, rate in bands
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>

<SETTINGS>
  <INFO>
    <VERSION>{OPENEPHYS_GUI_VERSION}</VERSION>
    <PLUGIN_API_VERSION>8</PLUGIN_API_VERSION>
    <DATE>{CREATED.strftime("%d %b %Y %H:%M:%S")}</DATE>
    <OS>Windows 10</OS>
    <MACHINE name="RIG-PC" cpu_model="Intel(R) Xeon(R) W-2245 CPU @ 3.90GHz" cpu_num_cores="16"/>
  </INFO>
  <SIGNALCHAIN>
    <PROCESSOR name="Neuropix-PXI" insertionPoint="0" pluginName="Neuropix-PXI" type="4"
               index="0" libraryName="Neuropix-PXI" libraryVersion="{NEUROPIX_PXI_VERSION}"
               processorType="2" nodeId="{_OE_SOURCE_ID}">
      <GLOBAL_PARAMETERS/>
{source_streams}
      <EDITOR isCollapsed="0" isDrawerOpen="0" displayName="Neuropix-PXI" activeStream="0"
              version="{NEUROPIX_PXI_VERSION}" Type="Visualizer" Basestations="1">
        <NP_PROBE slot="2" port="1" dock="0" probe_serial_number="18194814141"
                  hs_serial_number="2200" probe_part_number="{NP1_PART_NUMBER}"
                  probe_name="Neuropixels 1.0" num_adcs="32" custom_probe_name="{_OE_PROBE}"
                  ZoomHeight="400" ZoomOffset="0" referenceChannel="Ext" apGainValue="{NP1_AP_GAIN}x"
                  lfpGainValue="{NP1_LF_GAIN}x" apFilterState="1">
          <CHANNELS {channels}/>
          <ELECTRODE_XPOS {xpos}/>
          <ELECTRODE_YPOS {ypos}/>
        </NP_PROBE>
      </EDITOR>
    </PROCESSOR>
    <PROCESSOR name="Record Node" insertionPoint="1" pluginName="Record Node" type="0" index="3"
               libraryName="" libraryVersion="" processorType="8" nodeId="{_OE_NODE_ID}">
      <GLOBAL_PARAMETERS/>
      <CUSTOM_PARAMETERS path="D:\\OE_DATA" engine="BINARY" recordEvents="1" recordSpikes="1"
                         fifoMonitorsVisible="1">
{record_streams}
      </CUSTOM_PARAMETERS>
      <EDITOR isCollapsed="0" isDrawerOpen="0" displayName="Record Node" activeStream="0"/>
    </PROCESSOR>
  </SIGNALCHAIN>
  <EDITORVIEWPORT scroll="0">
    <NEUROPIX-PXI ID="{_OE_SOURCE_ID}"/>
    <RECORD_NODE ID="{_OE_NODE_ID}"/>
  </EDITORVIEWPORT>
</SETTINGS>
"""


def _epoch_ms() -> int:
    return int(CREATED.replace(tzinfo=UTC).timestamp() * 1000)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


__all__: list[str] = [
    "RigProbe",
    "RigRecording",
    "np1_adc_delays",
    "np1_probe",
    "rig_ground_truth",
    "write_openephys_recording",
    "write_spikeglx_run",
]

"""NWB files in SpikeForest's DANDI layout (dandiset 000618), written with pynwb directly.

What sets them apart from a neuroconv conversion: float traces in ``acquisition/ElectricalSeries``
with no ``conversion`` (NWB's default 1.0, i.e. "volts", while the values are uV), an
electrodes table with ``label``, ``x``, ``y``, ``z`` (the contact positions in x/y, no
rel_x/rel_y), one electrode group, and the true units in ``units`` by id. The traces come
from a generated SpikeInterface ground truth, so a test knows every true spike.

Knobs for the cases the worker must handle: ``starting_time`` (a recording that does not
start at t = 0), ``timestamps`` (a per-sample clock instead of a rate), ``scale`` (values in
volts, ``1e-6``, instead of uV), ``conversion`` (the file says the scale), ``xy`` (leave the
positions out), ``extra_spike_s`` (a true spike outside the recording).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.worker.simulate import GroundTruthSpec, generate_recording


@dataclass(frozen=True, slots=True)
class SpikeForestFile:
    """The file, and the truth it holds as SpikeInterface objects (samples from its start)."""

    nwb: Path
    truth: Any  # NumpySorting: the true spike trains, as sample indices
    traces_uv: np.ndarray  # (frames, channels) float32, what the file holds times 1/scale
    positions: np.ndarray  # (channels, 2) um
    spec: GroundTruthSpec


def write_spikeforest_nwb(
    path: Path,
    spec: GroundTruthSpec,
    *,
    starting_time: float = 0.0,
    timestamps: bool = False,
    scale: float = 1.0,
    conversion: float | None = None,
    xy: bool = True,
    extra_spike_s: float | None = None,
) -> SpikeForestFile:
    """Write ``path`` as SpikeForest's files are (see the module docstring)."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject
    from spikeinterface.core import NumpySorting

    recording, sorting = generate_recording(spec)
    traces_uv = recording.get_traces(return_in_uV=True).astype("float32")
    positions = np.asarray(recording.get_channel_locations(), dtype=float)
    fs = recording.sampling_frequency

    nwbfile = NWBFile(
        session_description="SpikeForest-style ground truth (pynwb, float uV traces)",
        identifier=str(uuid.uuid4()),
        session_start_time=datetime(2023, 6, 1, tzinfo=UTC),
        # DANDI takes no file without a subject (and units.nwb must carry it: nwbinspector).
        subject=Subject(subject_id="sf01", species="Mus musculus", sex="U", age="P90D"),
    )
    device = nwbfile.create_device(name="probe", description="simulated probe")
    group = nwbfile.create_electrode_group(
        name="group0", description="the probe", location="unknown", device=device
    )
    nwbfile.add_electrode_column(name="label", description="channel label")
    for index, (x, y) in enumerate(positions):
        kwargs = {"x": float(x), "y": float(y), "z": 0.0} if xy else {}
        nwbfile.add_electrode(location="unknown", group=group, label=f"ch{index}", **kwargs)
    region = nwbfile.create_electrode_table_region(
        region=list(range(len(positions))), description="all electrodes"
    )
    clock: dict[str, Any] = {"starting_time": starting_time, "rate": fs}
    times_of = None
    if timestamps:
        # An irregular-ish clock: 1/fs steps with a tiny jitter, starting at starting_time.
        rng = np.random.default_rng(0)
        steps = np.full(traces_uv.shape[0], 1.0 / fs) * (
            1 + 1e-4 * rng.standard_normal(len(traces_uv))
        )
        times_of = starting_time + np.concatenate([[0.0], np.cumsum(steps[:-1])])
        clock = {"timestamps": times_of}
    series_kwargs: dict[str, Any] = {}
    if conversion is not None:
        series_kwargs["conversion"] = conversion
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries",
            data=traces_uv * np.float32(scale),
            electrodes=region,
            description="raw traces",
            **clock,
            **series_kwargs,
        )
    )
    for unit_id in sorting.unit_ids:
        frames = sorting.get_unit_spike_train(unit_id)
        times = times_of[frames] if times_of is not None else starting_time + frames / fs
        nwbfile.add_unit(spike_times=times, id=int(unit_id))
    if extra_spike_s is not None:
        nwbfile.add_unit(spike_times=[extra_spike_s], id=int(max(sorting.unit_ids, key=int)) + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(path, mode="w") as io:
        io.write(nwbfile)
    truth = NumpySorting.from_sorting(sorting)
    return SpikeForestFile(path, truth, traces_uv, positions, spec)

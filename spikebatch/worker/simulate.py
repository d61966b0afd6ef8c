"""Ground-truth recordings as NWB files shaped like DANDI's, and scoring a sorter against them.

Lives in the package (not only in tests) because ``make demo`` and the benchmark use it, and
the image can run the demo as a GPU smoke test.

``write_ground_truth_nwb`` generates a SpikeInterface ground-truth recording, stores it as
int16 with chunked gzip datasets (as DANDI files are), attaches the probe positions to the
electrodes table explicitly (neuroconv 0.10.2 + SpikeInterface 0.105 can drop them) and
saves the true sorting beside it (and, with ``units_table``, in the file's own units table,
each unit tied to its probe's electrode group), so the worker can score a sorter against it
(``GROUND_TRUTH``, :mod:`spikebatch.worker.scoring`). Everything is parametric: the CI uses 32 channels, the
benchmark a 384-channel variant. ``n_probes`` writes a session with several probes (each its
own device, electrode group, raw series and true sorting), ``num_shanks`` splits each probe's
channels into electrode groups, and ``inter_sample_shift`` records Neuropixels-like ADC
sample shifts (so the phase-shift step runs on it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

#: Microvolts per int16 step (Intan's resolution); keeps ~5 uV noise well resolved.
GAIN_UV = 0.195
#: How far past the outermost contacts units may sit (um), SpikeInterface's placement.
UNIT_MARGIN_UM = 10.0


@dataclass(frozen=True, slots=True)
class GroundTruthSpec:
    """What to generate; each probe gets ``num_units`` units (seeds ``seed``, ``seed + 1``, ...)."""

    duration_s: float = 40.0
    num_channels: int = 32
    num_units: int = 10
    sampling_frequency: float = 30_000.0
    seed: int = 42
    n_probes: int = 1
    num_shanks: int = 1
    inter_sample_shift: bool = False
    noise_uv: float = 5.0
    firing_rate_hz: float = 15.0
    num_columns: int = 2
    #: Closest two units may sit (um). SpikeInterface's default of 20 um on a 20 um-pitch probe
    #: makes pairs no sorter separates; 40 um keeps the test about the pipeline, not the sorter.
    min_unit_distance_um: float = 40.0
    #: Peak-to-peak probe motion (um, along the shank): a zigzag over the whole recording
    #: (SpikeInterface's ``generate_drifting_recording``). 0: a static probe.
    drift_um: float = 0.0


@dataclass(frozen=True, slots=True)
class GroundTruthFiles:
    """Where the pieces went."""

    nwb: Path
    sorting_dir: Path
    spec: GroundTruthSpec
    series_names: list[str] = field(default_factory=list)
    #: Series name -> that probe's true sorting folder.
    sorting_dirs: dict[str, Path] = field(default_factory=dict)

    def load_sorting(self, series: str | None = None):
        """The true sorting (SpikeInterface ``BaseSorting``) of ``series`` (default: the first)."""
        import spikeinterface as si

        return si.load(self.sorting_dirs[series] if series else self.sorting_dir)


def generate_recording(
    spec: GroundTruthSpec,
    *,
    probe=None,
    gain_uv: float = GAIN_UV,
    unit_margin_um: float = UNIT_MARGIN_UM,
    adc_delays: np.ndarray | None = None,
):
    """The in-memory ground truth: ``(recording_int16, sorting)``; the recording carries a probe.

    ``probe`` (a wired probeinterface ``Probe``): generate on that geometry instead of the
    ``num_columns`` x 20 um grid (``num_channels`` is then its contact count); ``gain_uv``: the
    microvolts per int16 step of the returned recording; ``unit_margin_um``: how far past the
    outermost contacts units may sit; ``adc_delays`` (samples, one per channel): each channel
    is written as sampled that much after the spike's time, as a multiplexed ADC samples it
    (:func:`delay_templates`), so that the phase shift undoes it as on a real probe.
    """
    from spikeinterface.core import generate_ground_truth_recording
    from spikeinterface.preprocessing import scale

    if spec.drift_um > 0:
        if adc_delays is not None or unit_margin_um != UNIT_MARGIN_UM:
            raise ValueError("ADC delays and unit margins are simulated on a static probe only")
        recording, sorting = _generate_drifting(spec, probe)
    else:
        recording, sorting = generate_ground_truth_recording(
            durations=[spec.duration_s],
            sampling_frequency=spec.sampling_frequency,
            num_channels=spec.num_channels,
            num_units=spec.num_units,
            probe=probe,
            generate_probe_kwargs=dict(
                num_columns=spec.num_columns,
                xpitch=20,
                ypitch=20,
                contact_shapes="circle",
                contact_shape_params={"radius": 6},
            ),
            generate_sorting_kwargs=dict(
                firing_rates=spec.firing_rate_hz, refractory_period_ms=4.0
            ),
            generate_unit_locations_kwargs=dict(
                margin_um=unit_margin_um,
                minimum_z=5.0,
                maximum_z=50.0,
                minimum_distance=spec.min_unit_distance_um,
            ),
            noise_kwargs=dict(noise_levels=spec.noise_uv, strategy="on_the_fly"),
            seed=spec.seed,
        )
        if adc_delays is not None:
            recording = _with_adc_delays(recording, sorting, adc_delays)
    as_int16 = scale(recording, gain=1.0 / gain_uv, offset=0.0, dtype="int16")
    as_int16.set_channel_gains(gain_uv)
    as_int16.set_channel_offsets(0.0)
    return as_int16, sorting


def _with_adc_delays(recording, sorting, adc_delays: np.ndarray):
    """The same spikes on the same noise, each channel's templates delayed by its ADC's delay.

    Delaying the templates, not the traces, keeps every chunk exact (the noise is white and
    independent per channel, so its delay is not observable)."""
    from spikeinterface.core.generate import InjectTemplatesRecording

    kwargs = recording._kwargs
    delayed = InjectTemplatesRecording(
        sorting,
        delay_templates(recording.templates, adc_delays),
        nbefore=kwargs["nbefore"],
        parent_recording=kwargs["parent_recording"],
    )
    delayed.annotate(is_filtered=True)
    delayed.set_probe(recording.get_probe())
    delayed.set_channel_gains(1.0)
    delayed.set_channel_offsets(0.0)
    return delayed


def delay_templates(templates: np.ndarray, adc_delays: np.ndarray) -> np.ndarray:
    """``templates`` (units, samples, channels) as channels sampled ``adc_delays`` samples late.

    A channel read ``d`` samples after the sample clock holds, at sample ``n``, the signal of
    time ``n + d``: its template moves ``d`` samples earlier (a sub-sample shift, done in the
    frequency domain on a zero-padded copy so nothing wraps around). SpikeInterface's
    ``phase_shift`` with ``inter_sample_shift = adc_delays`` moves it back."""
    n = templates.shape[1]
    padded = 2 * n
    spectrum = np.fft.rfft(templates, n=padded, axis=1)
    omega = 2 * np.pi * np.fft.rfftfreq(padded)
    rotation = np.exp(1j * omega[:, np.newaxis] * np.asarray(adc_delays, dtype=float))
    shifted = np.fft.irfft(spectrum * rotation[np.newaxis], n=padded, axis=1)[:, :n]
    return shifted.astype(templates.dtype)


def _generate_drifting(spec: GroundTruthSpec, probe=None):
    """A drifting probe: the same probe layout and noise as the static case, units moving
    ``drift_um`` peak to peak in a zigzag (period: the recording's length), from t = 0."""
    from probeinterface import generate_multi_columns_probe
    from spikeinterface.generation import generate_drifting_recording

    if probe is None:
        per_column = -(-spec.num_channels // spec.num_columns)
        probe = generate_multi_columns_probe(
            num_columns=spec.num_columns,
            num_contact_per_column=per_column,
            xpitch=20,
            ypitch=20,
            contact_shapes="circle",
            contact_shape_params={"radius": 6},
        )
        probe = probe.get_slice(np.arange(spec.num_channels))
        probe.set_device_channel_indices(np.arange(spec.num_channels))
    half = spec.drift_um / 2
    _, drifting, sorting = generate_drifting_recording(
        num_units=spec.num_units,
        duration=spec.duration_s,
        sampling_frequency=spec.sampling_frequency,
        probe=probe,
        generate_unit_locations_kwargs=dict(
            margin_um=10.0,
            minimum_z=5.0,
            maximum_z=50.0,
            minimum_distance=spec.min_unit_distance_um,
            max_iteration=100,
            distance_strict=False,
            distribution="uniform",
        ),
        generate_displacement_vector_kwargs=dict(
            displacement_sampling_frequency=5.0,
            drift_start_um=[0, half],
            drift_stop_um=[0, -half],
            drift_step_um=1,
            motion_list=[
                dict(
                    drift_mode="zigzag",
                    non_rigid_gradient=None,
                    t_start_drift=0.0,
                    t_end_drift=None,
                    period_s=spec.duration_s,
                )
            ],
        ),
        generate_sorting_kwargs=dict(firing_rates=spec.firing_rate_hz, refractory_period_ms=4.0),
        generate_noise_kwargs=dict(noise_levels=spec.noise_uv, spatial_decay=25.0),
        seed=spec.seed,
    )
    return drifting, sorting


def write_ground_truth_nwb(
    folder: Path,
    spec: GroundTruthSpec | None = None,
    *,
    units_table: bool = False,
    session: Mapping[str, Any] | None = None,
) -> GroundTruthFiles:
    """Write ``folder/ground_truth.nwb`` and ``folder/ground_truth_sorting/``; return their paths.

    ``units_table`` also writes the truth into the NWB's units table (``GROUND_TRUTH=units``):
    unit names ``<probe>-<id>``, each with its probe's (first) electrode group. ``session``:
    more NWBFile fields (``experimenter``, ``keywords``...), for a source that names them.
    """
    from neuroconv.tools.nwb_helpers import configure_backend, get_default_backend_configuration
    from neuroconv.tools.spikeinterface import add_recording_to_nwbfile
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject

    spec = spec or GroundTruthSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probes = [f"Probe{i}" for i in range(spec.n_probes)]
    nwbfile = NWBFile(
        session_description=(
            f"Simulated ground truth: {spec.n_probes} probe(s) x {spec.num_units} units, "
            f"{spec.num_channels} channels, {spec.duration_s:g} s (SpikeInterface "
            f"generate_ground_truth_recording, seed {spec.seed})"
        ),
        identifier=str(uuid.uuid4()),
        session_start_time=datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
        session_id=f"gt-seed{spec.seed}",
        lab="spikebatch CI",
        institution="spikebatch",
        subject=Subject(subject_id="sim01", species="Mus musculus", sex="U", age="P90D"),
        **(session or {}),
    )
    series_names, sorting_dirs, locations = [], {}, []
    for index, probe in enumerate(probes):
        recording, sorting = generate_recording(replace(spec, seed=spec.seed + index))
        name = "ElectricalSeries" if spec.n_probes == 1 else f"ElectricalSeries{probe}"
        groups = _shank_names(probe, spec)
        recording.set_channel_groups(groups)
        recording.set_property("group_name", groups)
        if spec.inter_sample_shift:
            recording.set_property(
                "inter_sample_shift", neuropixels_sample_shifts(spec.num_channels)
            )
        add_recording_to_nwbfile(
            recording,
            nwbfile,
            metadata={
                "Devices": {probe: {"name": probe, "description": f"simulated probe {index}"}},
                "Ecephys": {
                    "ElectrodeGroups": {
                        group: {
                            "name": group,
                            "description": f"{group} of {probe}",
                            "location": "simulated",
                            "device_metadata_key": probe,
                        }
                        for group in dict.fromkeys(groups)
                    },
                    "ElectricalSeries": {
                        name: {"name": name, "description": f"raw acquisition of {probe}"}
                    },
                },
            },
            metadata_key=name,
            parent_container="acquisition",
            iterator_options={"display_progress": False},
        )
        locations.append(np.asarray(recording.get_channel_locations(), dtype=float))
        series_names.append(name)
        sorting_dirs[name] = folder / (
            "ground_truth_sorting" if index == 0 else f"ground_truth_sorting_{probe}"
        )
        sorting.save(folder=sorting_dirs[name], overwrite=True)
        if units_table:
            _add_true_units(nwbfile, sorting, recording, probe, spec.n_probes > 1)
    _attach_probe_positions(nwbfile, np.concatenate(locations))
    config = get_default_backend_configuration(nwbfile, backend="hdf5")
    one_second = int(spec.sampling_frequency)
    configurations = config.dataset_configurations
    for location, dataset in configurations.items():
        dataset.compressors = ["gzip"]
        shape = dataset.full_shape
        if len(shape) == 2 and shape[0] > one_second:  # the traces: ~1 s chunks, as DANDI files
            # Chunk and buffer change together (each alone may not divide the other); the
            # buffer is whole seconds, at most 20 (the writer's memory).
            seconds = max(1, min(20, shape[0] // one_second))
            configurations[location] = dataset.model_copy(
                update={
                    "chunk_shape": (one_second, shape[1]),
                    "buffer_shape": (one_second * seconds, shape[1]),
                }
            )
    configure_backend(nwbfile=nwbfile, backend_configuration=config)

    nwb_path = folder / "ground_truth.nwb"
    nwb_path.unlink(missing_ok=True)
    with NWBHDF5IO(nwb_path, mode="w") as io:
        io.write(nwbfile)
    return GroundTruthFiles(
        nwb=nwb_path,
        sorting_dir=sorting_dirs[series_names[0]],
        spec=spec,
        series_names=series_names,
        sorting_dirs=sorting_dirs,
    )


def _add_true_units(nwbfile, sorting, recording, probe: str, prefixed: bool) -> None:
    """The probe's true units in the NWB's units table, on the series' clock (t = 0 first),
    each with the electrode group (shank) of its largest channel."""
    from spikeinterface.core import create_sorting_analyzer, get_template_extremum_channel

    analyzer = create_sorting_analyzer(sorting, recording, sparse=False, format="memory")
    analyzer.compute(["random_spikes", "templates"], verbose=False)
    peak = get_template_extremum_channel(analyzer, outputs="index")
    groups = recording.get_channel_groups()
    if nwbfile.units is None or "unit_name" not in nwbfile.units.colnames:
        nwbfile.add_unit_column(name="unit_name", description="true unit id")
    for unit_id in sorting.unit_ids:
        group = str(groups[peak[unit_id]])
        times = sorting.get_unit_spike_train(unit_id) / sorting.sampling_frequency
        nwbfile.add_unit(
            spike_times=times,
            unit_name=f"{probe}-{unit_id}" if prefixed else str(unit_id),
            electrode_group=nwbfile.electrode_groups[group],
        )


def _shank_names(probe: str, spec: GroundTruthSpec) -> list[str]:
    """Each channel's electrode group: the probe, or ``<probe>Shank<k>`` in contiguous blocks."""
    if spec.num_shanks == 1:
        return [probe] * spec.num_channels
    per_shank = -(-spec.num_channels // spec.num_shanks)
    return [f"{probe}Shank{i // per_shank}" for i in range(spec.num_channels)]


def neuropixels_sample_shifts(num_channels: int) -> np.ndarray:
    """Neuropixels 1.0-like ADC delays in samples: 12 channels per ADC read in 13 cycles."""
    return ((np.arange(num_channels) // 2) % 12) / 13.0


def _attach_probe_positions(nwbfile, locations: np.ndarray) -> None:
    """Make sure rel_x/rel_y hold the probe contact positions (neuroconv may leave them out)."""
    table = nwbfile.electrodes
    columns = set(table.colnames)
    for axis, name in enumerate(("rel_x", "rel_y")):
        if name in columns:
            table[name].data[:] = locations[:, axis].tolist()
        else:
            table.add_column(
                name=name,
                description=f"contact position along {name[-1]} on the probe (um)",
                data=locations[:, axis].tolist(),
            )


def read_probe_positions(nwb_path: Path) -> np.ndarray:
    """The (n_electrodes, 2) rel_x/rel_y positions stored in the file's electrodes table."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(nwb_path, mode="r") as io:
        electrodes = io.read().electrodes
        return np.column_stack([electrodes["rel_x"].data[:], electrodes["rel_y"].data[:]])

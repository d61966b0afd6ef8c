"""Write the generated ground-truth recordings the example studies sort, each an NWB file
whose truth is in its own units table (``ground_truth: units``)::

    python -m spikebatch.study.example_recordings examples/recordings                  # small
    python -m spikebatch.study.example_recordings examples/recordings --set preprocessing

``small`` (``examples/study-small.yaml``): ``rec1`` and ``rec2``, 30 s x 32 channels, 10 units,
two seeds. ``preprocessing`` (``examples/study-preprocessing.yaml``, the study that chose
Kilosort's default CPU preprocessing): recordings that differ in every way the choice could
depend on (channel count 32-384, unit count and density, noise, firing rate, drift, an ADC
sample shift, two probes in one file), so a default is not chosen on one generated file.
Needs the worker extra (SpikeInterface, neuroconv).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb

SMALL: dict[str, GroundTruthSpec] = {
    f"rec{i}": GroundTruthSpec(duration_s=30.0, num_channels=32, num_units=10, seed=seed)
    for i, seed in enumerate((11, 12), start=1)
}

#: The preprocessing study's recordings (name -> spec): 8-40 s, so that each Kilosort4 sort
#: takes minutes on a 2-core CPU, with >= 100 spikes per unit.
PREPROCESSING: dict[str, GroundTruthSpec] = {
    # The file the issue was found on: 32 channels, 10 units, 40 s.
    "c32-u10": GroundTruthSpec(duration_s=40.0, num_channels=32, num_units=10, seed=42),
    # The same probe with SpikeInterface's own unit spacing (20 um apart at closest, where
    # ours keep 40 um): pairs of units that share channels, as on real probes.
    "c32-u10-close": GroundTruthSpec(
        duration_s=40.0, num_channels=32, num_units=10, seed=43, min_unit_distance_um=20.0
    ),
    # Noisier (10 uV vs 5), close units, another seed.
    "c32-u10-noisy": GroundTruthSpec(
        duration_s=10.0,
        num_channels=32,
        num_units=10,
        seed=101,
        noise_uv=10.0,
        min_unit_distance_um=20.0,
    ),
    # Few, slow units: little for a whitening/CAR estimate to go on.
    "c32-u5-slow": GroundTruthSpec(
        duration_s=20.0, num_channels=32, num_units=5, seed=102, firing_rate_hz=5.0
    ),
    # Denser units on a 4-column probe.
    "c64-u25-4col": GroundTruthSpec(
        duration_s=10.0,
        num_channels=64,
        num_units=25,
        seed=103,
        num_columns=4,
        min_unit_distance_um=30.0,
    ),
    # A drifting probe: 40 um zigzag over the recording.
    "c64-u15-drift": GroundTruthSpec(
        duration_s=20.0, num_channels=64, num_units=15, seed=104, drift_um=40.0
    ),
    "c128-u30": GroundTruthSpec(
        duration_s=10.0,
        num_channels=128,
        num_units=30,
        seed=105,
        noise_uv=7.0,
        min_unit_distance_um=20.0,
    ),
    # Neuropixels-sized, with its ADC sample shift (the phase shift runs).
    "c384-u40-np": GroundTruthSpec(
        duration_s=8.0,
        num_channels=384,
        num_units=40,
        seed=106,
        firing_rate_hz=20.0,
        inter_sample_shift=True,
        min_unit_distance_um=25.0,
    ),
    # Two probes in one file: each sorted and scored against its own group's truth.
    "2x32-u8": GroundTruthSpec(duration_s=10.0, num_channels=32, num_units=8, seed=107, n_probes=2),
}

SETS = {"small": SMALL, "preprocessing": PREPROCESSING}


def write_example_recordings(
    folder: Path, *, which: str = "small", duration_s: float | None = None
) -> list[Path]:
    """Write set ``which`` under ``folder/<name>/ground_truth.nwb``; ``duration_s`` overrides."""
    written = []
    for name, spec in SETS[which].items():
        if duration_s is not None:
            spec = replace(spec, duration_s=duration_s)
        written.append(write_ground_truth_nwb(folder / name, spec, units_table=True).nwb)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the recordings go (examples/recordings)")
    parser.add_argument("--set", dest="which", choices=sorted(SETS), default="small")
    parser.add_argument("--duration-s", type=float, help="seconds per recording (set's own)")
    args = parser.parse_args()
    for path in write_example_recordings(args.folder, which=args.which, duration_s=args.duration_s):
        print(path)


if __name__ == "__main__":
    main()

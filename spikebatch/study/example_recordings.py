"""Write the recordings ``examples/study-small.yaml`` sorts: two generated ground-truth NWB
files whose truth is in their own units table (``ground_truth: units``)::

    python -m spikebatch.study.example_recordings examples/recordings

gives ``examples/recordings/rec1/ground_truth.nwb`` and ``rec2/ground_truth.nwb`` (30 s x 32
channels, 10 units; different seeds). Needs the worker extra (SpikeInterface, neuroconv).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb


def write_example_recordings(folder: Path, *, duration_s: float = 30.0) -> list[Path]:
    written = []
    for i, seed in enumerate((11, 12), start=1):
        spec = GroundTruthSpec(duration_s=duration_s, num_channels=32, num_units=10, seed=seed)
        written.append(write_ground_truth_nwb(folder / f"rec{i}", spec, units_table=True).nwb)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where rec1/ and rec2/ go (examples/recordings)")
    parser.add_argument("--duration-s", type=float, default=30.0, help="seconds per recording")
    args = parser.parse_args()
    for path in write_example_recordings(args.folder, duration_s=args.duration_s):
        print(path)


if __name__ == "__main__":
    main()

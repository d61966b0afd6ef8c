"""Ground-truth NWB files for tests and benchmarks (int16, chunked gzip, probe positions kept).

The implementation lives in :mod:`spikebatch.worker.simulate` because ``make demo`` (and the
image's smoke test) need it outside the test tree; this module is the tests' entry point::

    from tests.support.ground_truth import GroundTruthSpec, write_ground_truth_nwb, score
    files = write_ground_truth_nwb(tmp_path, GroundTruthSpec(duration_s=30, num_channels=32))
    files.nwb, files.load_sorting(), read_probe_positions(files.nwb)
    score(sorting, files.load_sorting(), recording).summary["accuracy"]  # the worker's scoring
    GroundTruthSpec(num_channels=384, num_columns=4)  # the benchmark's Neuropixels-like size
"""

from spikebatch.worker.scoring import score
from spikebatch.worker.simulate import (
    GAIN_UV,
    GroundTruthFiles,
    GroundTruthSpec,
    generate_recording,
    read_probe_positions,
    write_ground_truth_nwb,
)

__all__ = [
    "GAIN_UV",
    "GroundTruthFiles",
    "GroundTruthSpec",
    "generate_recording",
    "read_probe_positions",
    "score",
    "write_ground_truth_nwb",
]

"""What the compiled Kilosort3 must be given, checked the same way in process and in the image.

Both use the stand-in binary of ``containers/standins/fake_ks3_compiled.sh``: it writes
``ks3_call.json`` (argv, cwd, the folder's files) next to what SpikeInterface prepared, then
fails like the real binary without CUDA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io

from tests.support.ground_truth import GroundTruthFiles, read_probe_positions

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_KS3 = REPO_ROOT / "containers" / "standins" / "fake_ks3_compiled.sh"
CUDA_ERROR = "Error using gpuArray: CUDA driver version is insufficient"


def check_kilosort3_inputs(
    scratch: Path,
    truth: GroundTruthFiles,
    *,
    spk_th: float,
    host_path: Callable[[str], Path] = Path,
) -> Path:
    """Assert the binary got our recording; return the sorter folder (under ``scratch``).

    ``host_path`` maps a path as the worker saw it to this machine's (a container's
    /scratch/... to the mounted folder).
    """
    [call_file] = list(scratch.rglob("ks3_call.json"))
    sorter_output = call_file.parent
    call = json.loads(call_file.read_text())
    assert [host_path(a) for a in call["argv"]] == [sorter_output]
    assert {"ops.mat", "chanMap.mat"} <= set(call["files"])

    spec = truth.spec
    ops = scipy.io.loadmat(sorter_output / "ops.mat", squeeze_me=True, struct_as_record=False)[
        "ops"
    ]
    # The binary is the preprocess stage's one int16 copy in scratch, given to the compiled
    # Kilosort as it is (no second recording.dat copy).
    binary = host_path(ops.fbinary)
    assert binary.is_relative_to(scratch)
    n_samples = int(spec.duration_s * spec.sampling_frequency)
    assert binary.stat().st_size == n_samples * spec.num_channels * 2  # int16, every sample
    assert not (sorter_output / "recording.dat").exists()
    assert ops.NchanTOT == spec.num_channels and ops.fs == spec.sampling_frequency
    assert ops.spkTh == spk_th  # our SORTER_PARAMS reached the binary
    assert host_path(ops.chanMap) == sorter_output / "chanMap.mat"
    chan_map = scipy.io.loadmat(sorter_output / "chanMap.mat")
    assert chan_map["Nchannels"].item() == spec.num_channels
    assert chan_map["fs"].item() == spec.sampling_frequency
    positions = np.column_stack([chan_map["xcoords"].ravel(), chan_map["ycoords"].ravel()])
    np.testing.assert_allclose(positions, read_probe_positions(truth.nwb))
    return sorter_output

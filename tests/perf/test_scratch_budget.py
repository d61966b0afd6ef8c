"""The scratch budget model (``spikebatch.scratch``) and who uses it before a job runs.

It bounds what the worker holds stage by stage (the worker's own measurement is checked in
``tests/worker/test_worker_scratch.py``); ``spikebatch estimate`` / ``submit --dry-run`` say
which instance types hold a recording; a request no type can hold is refused, never queued.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from spikebatch import scratch
from spikebatch.cli import app
from spikebatch.control.request import RequestError, ResourceLimits, parse_request
from spikebatch.control.submission import plan_submission
from spikebatch.instances import INSTANCE_TYPES
from tests.support.deployment import fake_deployment

HOUR_OF_NEUROPIXELS = scratch.Part(n_frames=3600 * 30_000, n_channels=384)  # 83 GB int16
GZIP_NWB = int(0.6 * HOUR_OF_NEUROPIXELS.raw_bytes)


def test_kilosort3_peaks_at_its_whitened_copy_within_2_1_x_the_traces() -> None:
    plan = scratch.plan(GZIP_NWB, [HOUR_OF_NEUROPIXELS], "kilosort3")
    raw = HOUR_OF_NEUROPIXELS.raw_bytes

    assert plan.peak_stage == "sort"
    assert plan.peak_bytes <= 2.1 * raw
    assert plan.stages["convert"] == GZIP_NWB + raw  # the NWB only until the traces are out
    assert plan.without_freeing > plan.peak_bytes + GZIP_NWB  # NWB and copy kept: no longer


def test_kilosort4_needs_1_3_x_the_traces_plus_the_input_while_converting() -> None:
    plan = scratch.plan(GZIP_NWB, [HOUR_OF_NEUROPIXELS], "kilosort4")
    raw = HOUR_OF_NEUROPIXELS.raw_bytes

    # traces + analyzer + sorter results, and what the results keep until the upload
    # (sorting/, phy/ without its PC features: those are sized once the spikes are known;
    # units.nwb), all at the plan's high side (1.5 units per channel at 20 Hz)
    after_convert = max(v for k, v in plan.stages.items() if k != "convert")
    assert plan.stages["export"] == after_convert <= 1.3 * raw
    assert plan.peak_bytes <= 1.3 * raw + GZIP_NWB
    # Asking Kilosort4 for its preprocessed copy costs one more copy of the traces.
    copied = scratch.plan(
        GZIP_NWB, [HOUR_OF_NEUROPIXELS], "kilosort4", {"save_preprocessed_copy": True}
    )
    assert copied.stages["sort"] - plan.stages["sort"] == raw


def test_several_probes_add_their_traces_and_the_largest_bounds_the_sorter() -> None:
    one = scratch.plan(GZIP_NWB, [HOUR_OF_NEUROPIXELS], "kilosort3")
    two = scratch.plan(2 * GZIP_NWB, [HOUR_OF_NEUROPIXELS] * 2, "kilosort3")
    raw = HOUR_OF_NEUROPIXELS.raw_bytes
    assert two.stages["convert"] == 2 * GZIP_NWB + 2 * raw
    # one more set of traces, one copy, and the first probe's results (kept until the upload)
    published = scratch.published_bytes(HOUR_OF_NEUROPIXELS)
    assert two.stages["sort"] - one.stages["sort"] == raw + published


def test_the_max_duration_that_fits_is_the_longest_that_fits() -> None:
    capacity = 150e9
    seconds = scratch.max_duration_that_fits(GZIP_NWB, [HOUR_OF_NEUROPIXELS], "kilosort3", capacity)
    assert seconds is not None and 600 < seconds < 3600

    def peak(s: float) -> int:
        return scratch.plan(GZIP_NWB, [HOUR_OF_NEUROPIXELS.first(s)], "kilosort3").peak_bytes

    assert peak(seconds) <= capacity < peak(seconds + 2)
    # A download that alone is larger than the volume has no way out by duration.
    assert (
        scratch.max_duration_that_fits(
            int(capacity) + 1, [HOUR_OF_NEUROPIXELS], "kilosort3", capacity
        )
        is None
    )


def test_which_instance_types_hold_an_hour_of_neuropixels() -> None:
    kilosort3 = scratch.plan(GZIP_NWB, [HOUR_OF_NEUROPIXELS], "kilosort3")
    holding = scratch.instance_types_holding(kilosort3)
    assert "g4dn.xlarge" not in holding  # 125 GB of NVMe
    assert {"g4dn.2xlarge", "g5.xlarge", "g6.xlarge"} <= set(holding)
    assert all(INSTANCE_TYPES[name].gpus for name in holding)
    # Types without NVMe hold /scratch on the root volume, less the OS and images.
    no_nvme = INSTANCE_TYPES["c6i.2xlarge"]
    assert scratch.instance_scratch_bytes(no_nvme, 150) < kilosort3.peak_bytes
    assert scratch.instance_scratch_bytes(no_nvme, 250) > kilosort3.peak_bytes


DEPLOYMENT = fake_deployment(
    "data",
    limits=ResourceLimits(max_vcpus=16, max_memory_gib=64, max_gpus=1),  # cdk.json's
)


def test_a_request_no_instance_type_can_hold_is_refused_before_submission() -> None:
    request = parse_request(
        {"dandiset_id": "000409", "assets": ["sub-1/big.nwb", "sub-2/small.nwb"]}
    )
    sizes = {"sub-1/big.nwb": 400 * 10**9, "sub-2/small.nwb": 20 * 10**9}

    with pytest.raises(RequestError) as refused:
        plan_submission(request, DEPLOYMENT, input_sizes=sizes)

    [error] = refused.value.errors
    assert error.field == "assets"
    assert error.message.startswith("sub-1/big.nwb: needs 840.0 GB of scratch at its peak (sort)")
    assert "more than any instance type of this stack holds (582.0 GB)" in error.message
    # Sorting less fits; so does the small one alone; unknown sizes are left to the worker.
    shorter = parse_request({**request.model_dump(exclude_unset=True), "max_duration_s": 3600})
    assert plan_submission(shorter, DEPLOYMENT, input_sizes=sizes).runs
    assert plan_submission(request, DEPLOYMENT, input_sizes={}).runs


def _estimate(*args: str) -> Any:
    return CliRunner().invoke(app, ["estimate", *args], env={"COLUMNS": "160"})


def test_estimate_says_which_instance_types_hold_a_recording() -> None:
    two_hours = _estimate(
        "--input-uri", "s3://lab/rec.nwb", "--duration-s", "7200", "--sorter", "kilosort4"
    )
    assert two_hours.exit_code == 0, two_hours.output
    [row] = [
        ln
        for ln in two_hours.output.splitlines()
        if ln.startswith("│ s3://lab/rec.nwb") and "GB" in ln
    ]
    assert "convert" in row and "g5.2xlarge" in row and "g4dn.2xlarge" not in row

    six_hours = _estimate("--input-uri", "s3://lab/rec.nwb", "--duration-s", "21600")
    assert six_hours.exit_code == 0, six_hours.output
    assert "no type holds it" in six_hours.output
    assert "none: sort less (max_duration_s)" in six_hours.output


def test_phy_pc_features_are_sized_from_the_spikes_and_kept_beside_what_the_job_needs() -> None:
    from spikebatch.worker.budget import pc_features_shortfall

    # an hour of Neuropixels at 4,000 spikes/s, 40 channels per unit: ~11.5 GB of PCs
    need = scratch.phy_pc_features_bytes(4_000 * 3600, 40)
    assert need == 4_000 * 3600 * 5 * 40 * 4
    plan = scratch.plan(GZIP_NWB, [HOUR_OF_NEUROPIXELS] * 2, "kilosort4")
    part = HOUR_OF_NEUROPIXELS
    used = int(90e9)
    room = used + scratch.published_bytes(part) + need  # the last part: just enough
    kwargs = dict(part=part, stages=plan.stages, used=used, pcs_written=0)
    assert pc_features_shortfall(need, available=room, last_part=True, **kwargs) is None
    why = pc_features_shortfall(need, available=room - 1, last_part=True, **kwargs)
    assert why is not None and why.startswith("left out: 11.5 GB of PC features")
    # with a part still to sort, the plan's bound for it (and the PCs written) must fit too
    later = max(plan.stages[s] for s in ("sort", "postprocess", "export"))
    assert pc_features_shortfall(need, available=room, last_part=False, **kwargs) is not None
    assert pc_features_shortfall(need, available=later + need, last_part=False, **kwargs) is None

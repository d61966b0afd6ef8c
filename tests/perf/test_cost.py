"""The cost model: it reproduces its cited anchor, and each stage responds to what drives it."""

from __future__ import annotations

import pytest

from spikebatch import cost
from spikebatch.instances import INSTANCE_TYPES
from spikebatch.sorters import FILTERED_PREPROCESSING

HOUR = 3600.0
NP = cost.NEUROPIXELS_CHANNELS


def test_the_anchor_setup_costs_what_the_anchor_cost() -> None:
    """78 min on an on-demand g4dn.2xlarge, one download stream: $1.44 (~$1.11/rec-h)."""
    anchor = cost.estimate(
        cost.ANCHOR["recording_minutes"] * 60,
        NP,
        instance_type="g4dn.2xlarge",
        spot=False,
        fetch_streams=1,
        preprocessing=FILTERED_PREPROCESSING,  # the anchor's CPU bandpass + CMR
    )
    # ... converted at the anchor's rate (SpikeInterface's filters), not the worker's.
    raw = cost.raw_bytes(cost.ANCHOR["recording_minutes"] * 60, NP)
    slower_s = raw / (cost.ANCHOR_CONVERT_BPS_PER_VCPU * 8) - anchor.stage_seconds["convert"]
    usd = anchor.usd + slower_s * cost.ANCHOR_ON_DEMAND_USD_PER_HOUR / HOUR
    assert usd == pytest.approx(cost.ANCHOR["usd"], abs=0.01)
    assert usd / (cost.ANCHOR["recording_minutes"] / 60) == pytest.approx(1.11, abs=0.01)


def test_parallel_fetch_is_bounded_by_network_and_hashing() -> None:
    one = cost.fetch_bytes_per_s("g4dn.2xlarge", streams=1)
    many = cost.fetch_bytes_per_s("g4dn.2xlarge")
    assert one == cost.S3_STREAM_BPS
    assert many == 10e9 / 8  # the g4dn.2xlarge's 10 Gbit/s baseline is the limit
    assert cost.fetch_bytes_per_s("g5.xlarge") == 2.5e9 / 8


def test_stages_scale_with_their_drivers() -> None:
    half = cost.estimate(HOUR / 2, NP, instance_type="g4dn.2xlarge")
    full = cost.estimate(HOUR, NP, instance_type="g4dn.2xlarge")
    for stage in ("fetch", "convert", "sort"):
        assert full.stage_seconds[stage] == pytest.approx(2 * half.stage_seconds[stage], rel=1e-3)
    assert full.stage_seconds["startup"] == half.stage_seconds["startup"]
    # After the sort: a part per unit (fixed in duration) and a part per recording second.
    quarter = cost.estimate(HOUR / 4, NP, instance_type="g4dn.2xlarge")
    post = [r.stage_seconds["postprocess"] for r in (quarter, half, full)]
    assert post[2] - post[1] == pytest.approx(2 * (post[1] - post[0]), abs=0.2)
    assert post[0] > 0 and post[2] < 2 * post[1]

    compressed = cost.estimate(HOUR, NP, instance_type="g4dn.2xlarge", input_bytes=10**9)
    assert compressed.stage_seconds["fetch"] < full.stage_seconds["fetch"]
    assert compressed.stage_seconds["sort"] == full.stage_seconds["sort"]

    more_cpus = cost.estimate(HOUR, NP, instance_type="g4dn.4xlarge")
    assert more_cpus.stage_seconds["convert"] == pytest.approx(
        full.stage_seconds["convert"] / 2, rel=1e-3
    )
    assert more_cpus.stage_seconds["postprocess"] < full.stage_seconds["postprocess"]
    # Kilosort's default CPU preprocessing is the phase shift; null and bandpass+CMR differ.
    lean = cost.estimate(HOUR, NP, instance_type="g4dn.2xlarge", preprocessing=None)
    filtered = cost.estimate(
        HOUR, NP, instance_type="g4dn.2xlarge", preprocessing=FILTERED_PREPROCESSING
    )
    for other, rate in (
        (lean, cost.CONVERT_RAW_BPS_PER_VCPU),
        (filtered, cost.CONVERT_FILTERED_BPS_PER_VCPU),
    ):
        assert other.stage_seconds["convert"] == pytest.approx(
            full.stage_seconds["convert"] * cost.CONVERT_PHASE_SHIFT_BPS_PER_VCPU / rate, rel=1e-3
        )
    assert lean.usd < full.usd < filtered.usd


def test_faster_gpu_sorts_faster_and_spot_is_cheaper() -> None:
    t4 = cost.estimate(HOUR, NP, instance_type="g4dn.2xlarge")
    a10g = cost.estimate(HOUR, NP, instance_type="g5.2xlarge")
    assert a10g.stage_seconds["sort"] < t4.stage_seconds["sort"]
    on_demand = cost.estimate(HOUR, NP, instance_type="g4dn.2xlarge", spot=False)
    assert on_demand.total_seconds == t4.total_seconds
    assert t4.usd < on_demand.usd


def test_compare_instances_is_cheapest_first_gpu_only_and_holds_the_recording() -> None:
    everything = cost.compare_instances(holding_only=False)
    assert {r.instance_type for r in everything} == {
        name for name, spec in INSTANCE_TYPES.items() if spec.gpus > 0
    }
    rows = cost.compare_instances()
    assert [r.usd for r in rows] == sorted(r.usd for r in rows)
    # An hour of one Neuropixels probe with Kilosort3 peaks at 2.1 x 83 GB of traces: the
    # g4dn.xlarge's 125 GB NVMe cannot hold it, however cheap it is.
    assert "g4dn.xlarge" not in {r.instance_type for r in rows}
    assert cost.estimate(HOUR, NP).instance_type == rows[0].instance_type
    short = cost.estimate(HOUR / 3, NP)  # 20 minutes fit anywhere: the cheapest type wins
    assert short.instance_type == "g4dn.xlarge"


def test_the_default_job_is_placed_where_it_fits_and_holds() -> None:
    """The default Kilosort3 job (8 vCPUs, 30 GiB) on the cheapest type that has room."""
    job = cost.default_job()
    spec = INSTANCE_TYPES[job.instance_type]
    assert spec.vcpus >= 8 and spec.memory_gib >= 30
    assert job.instance_type == "g4dn.2xlarge"
    assert (
        job.usd_per_recording_hour
        < cost.estimate(
            HOUR, NP, instance_type=job.instance_type, preprocessing=FILTERED_PREPROCESSING
        ).usd_per_recording_hour
    )  # phase shift only: cheaper than filtering on the CPU


def test_readme_table_lists_every_gpu_type() -> None:
    table = cost.readme_table()
    gpu_types = [name for name, spec in INSTANCE_TYPES.items() if spec.gpus > 0]
    assert all(f"| {name} |" in table for name in gpu_types)
    assert table.count("\n| g") == len(gpu_types)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        cost.estimate(-1, NP, instance_type="g4dn.xlarge")
    with pytest.raises(KeyError, match="known types"):
        cost.estimate(HOUR, NP, instance_type="p9.huge")
    assert cost.instance_price_per_hour("p9.huge", True) is None

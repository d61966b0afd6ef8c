"""GPU instance types spikebatch knows: shape, local NVMe, and list prices.

One home for these facts: the CDK config validates instance types against it, the
submit path derives resource limits from it, and the cost model prices runs with it.

Prices: us-east-1, Linux, USD per hour. On-demand figures are AWS list prices
(aws.amazon.com/ec2/pricing/on-demand, as listed 2025-06). Spot figures are typical
us-east-1 prices (spot varies by AZ and hour; check `aws ec2 describe-spot-price-history`
before relying on one) - treat them as an estimate, not a quote.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2025-06"
PRICE_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    name: str
    family: str
    vcpus: int
    memory_gib: int
    gpus: int
    gpu_model: str
    gpu_memory_gib: int
    #: Local instance-store NVMe in GB as AWS lists it (0 = none); mounted as /scratch.
    nvme_gb: int
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float


class UnknownInstanceTypeError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def _spec(name: str, vcpus: int, mem: int, gpus: int, gpu: str, gmem: int, nvme: int,
          od: float, spot: float) -> InstanceSpec:  # fmt: skip
    return InstanceSpec(name, name.split(".")[0], vcpus, mem, gpus, gpu, gmem, nvme, od, spot)


INSTANCE_TYPES: dict[str, InstanceSpec] = {
    s.name: s
    for s in (
        # g4dn: NVIDIA T4 16 GB, NVMe on every size
        _spec("g4dn.xlarge", 4, 16, 1, "T4", 16, 125, 0.526, 0.2104),
        _spec("g4dn.2xlarge", 8, 32, 1, "T4", 16, 225, 0.752, 0.2878),
        _spec("g4dn.4xlarge", 16, 64, 1, "T4", 16, 225, 1.204, 0.4536),
        _spec("g4dn.8xlarge", 32, 128, 1, "T4", 16, 900, 2.176, 0.8235),
        # g5: NVIDIA A10G 24 GB, NVMe on every size
        _spec("g5.xlarge", 4, 16, 1, "A10G", 24, 250, 1.006, 0.4028),
        _spec("g5.2xlarge", 8, 32, 1, "A10G", 24, 450, 1.212, 0.4850),
        _spec("g5.4xlarge", 16, 64, 1, "A10G", 24, 600, 1.624, 0.6496),
        _spec("g5.8xlarge", 32, 128, 1, "A10G", 24, 900, 2.448, 0.9792),
        # g6: NVIDIA L4 24 GB, NVMe on every size
        _spec("g6.xlarge", 4, 16, 1, "L4", 24, 250, 0.8048, 0.3219),
        _spec("g6.2xlarge", 8, 32, 1, "L4", 24, 450, 0.9776, 0.3910),
        _spec("g6.4xlarge", 16, 64, 1, "L4", 24, 600, 1.3232, 0.5293),
        _spec("g6.8xlarge", 32, 128, 1, "L4", 24, 900, 2.0144, 0.8058),
        # CPU-only, for the CPU job definition (small runs / Kilosort4 on CPU)
        _spec("c6i.2xlarge", 8, 16, 0, "", 0, 0, 0.34, 0.1360),
        _spec("c6i.4xlarge", 16, 32, 0, "", 0, 0, 0.68, 0.2720),
        _spec("m6i.2xlarge", 8, 32, 0, "", 0, 0, 0.384, 0.1536),
        _spec("m6i.4xlarge", 16, 64, 0, "", 0, 0, 0.768, 0.3072),
    )
}


def get_instance(name: str) -> InstanceSpec:
    """Look up an instance type; the error lists the ones we know."""
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(INSTANCE_TYPES))
        raise UnknownInstanceTypeError(
            f"unknown instance type {name!r}; known types: {known}"
        ) from None

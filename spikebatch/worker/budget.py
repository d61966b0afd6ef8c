"""The scratch budget, checked by the worker: before the download, and exactly once it is here.

Before any byte of the recording is fetched, the input's size (DANDI's asset size, or a
HEAD) and the shape of its raw series (read from the file's HDF5 metadata over HTTP
ranges) give the peak of every stage (:mod:`spikebatch.scratch`); it is compared with the
free space of the scratch volume. Where the metadata cannot be read remotely, the file is
taken as one uncompressed int16 series of its size, and the check is repeated with the
exact shape as soon as the file is here, still before anything is converted. Either way a
job that cannot fit fails at ``fetch``, with both numbers and the ways out, never mid-sort.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spikebatch import scratch, transfer
from spikebatch.contract import Env
from spikebatch.instances import INSTANCE_TYPES
from spikebatch.scratch import ScratchPlan, size_text
from spikebatch.sorters import sorter_or_undeclared
from spikebatch.transfer.uris import local_path
from spikebatch.worker.errors import InputError
from spikebatch.worker.layout import SeriesInfo, choose, local_series, remote_series
from spikebatch.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

#: Channels assumed when the metadata cannot be read (the analyzer bound needs a count).
FALLBACK_CHANNELS = 384


class ScratchTooSmallError(InputError):
    """The job's peak scratch exceeds the free space of the scratch volume."""


@dataclass(frozen=True)
class Checked:
    """A plan and what it was checked against."""

    plan: ScratchPlan
    available_bytes: int
    basis: str  # "header" (remote metadata), "file" (the downloaded file), "size" (size only)

    def as_dict(self) -> dict[str, object]:
        return {**self.plan.as_dict(), "available_bytes": self.available_bytes, "basis": self.basis}


def parts_of(series: Sequence[SeriesInfo], max_duration_s: float | None) -> list[scratch.Part]:
    return [s.part().first(max_duration_s) for s in series]


def plan_for(
    input_bytes: int, series: Sequence[SeriesInfo], settings: WorkerSettings
) -> ScratchPlan:
    return scratch.plan(
        input_bytes,
        parts_of(series, settings.max_duration_s),
        settings.sorter,
        settings.sorter_params,
    )


def before_download(
    url: str, input_bytes: int | None, filename: str, settings: WorkerSettings
) -> tuple[ScratchPlan, str] | None:
    """The plan from the remote metadata (or the size alone); None if even the size is unknown."""
    if input_bytes is None:
        input_bytes = transfer.remote_size(url)
    if input_bytes is None:
        log.warning("scratch: the input's size is unknown; checking once it is downloaded")
        return None
    try:
        if url.startswith("file://"):
            found = local_series(local_path(url))
        else:
            found = remote_series(transfer.signed_url(url), input_bytes)
    except InputError:
        raise
    except Exception as exc:  # a server without ranges, an unreadable header: size only
        log.warning("scratch: could not read the file's metadata remotely (%s); sizing it", exc)
        parts = scratch.size_only_parts(
            input_bytes, n_channels=FALLBACK_CHANNELS, max_duration_s=settings.max_duration_s
        )
        return scratch.plan(input_bytes, parts, settings.sorter, settings.sorter_params), "size"
    series = choose(found, settings.electrical_series_path, filename)
    return plan_for(input_bytes, series, settings), "header"


def check(
    plan: ScratchPlan, available_bytes: int, basis: str, settings: WorkerSettings, where: Path
) -> Checked:
    """Compare the plan with the free space; :func:`require` raises if it does not fit."""
    log.info(
        "scratch: peak %s (%s), %s free in %s (%s)",
        size_text(plan.peak_bytes),
        plan.peak_stage,
        size_text(available_bytes),
        where,
        basis,
    )
    return Checked(plan, available_bytes, basis)


def require(checked: Checked, settings: WorkerSettings, where: Path) -> None:
    """Raise :class:`ScratchTooSmallError` (with the ways out) when the plan does not fit."""
    if not checked.plan.fits(checked.available_bytes):
        raise ScratchTooSmallError(shortfall_message(checked, settings, where))


def shortfall_message(checked: Checked, settings: WorkerSettings, where: Path) -> str:
    plan = checked.plan
    ways = []
    seconds = scratch.max_duration_that_fits(
        plan.input_bytes, plan.parts, plan.sorter, checked.available_bytes, settings.sorter_params
    )
    if seconds is not None:
        ways.append(f"{Env.MAX_DURATION_S}={seconds:g} or less")
    holding = sorted(
        (INSTANCE_TYPES[n] for n in scratch.instance_types_holding(plan)),
        key=lambda s: s.spot_usd_per_hour,
    )
    if holding:
        names = ", ".join(f"{s.name} ({s.nvme_gb} GB NVMe)" for s in holding[:3])
        ways.append(f"an instance type with more NVMe ({names})")
    else:
        ways.append("no GPU instance type we know holds it whole: sort one probe at a time")
    root_gib = int((plan.peak_bytes + scratch.ROOT_VOLUME_RESERVED_GB * scratch.GB) // scratch.GiB)
    ways.append(f"root_volume_gib >= {root_gib + 1} on instance types without NVMe")
    return (
        f"scratch too small: this job needs {size_text(plan.peak_bytes)} at its peak "
        f"({describe_stage(plan)}) but {where} has {size_text(checked.available_bytes)} free; "
        f"ways out: {'; '.join(ways)}"
    )


def describe_stage(plan: ScratchPlan) -> str:
    """What the peak stage holds, in words."""
    stage = plan.peak_stage
    traces = f"{size_text(plan.raw_bytes)} of traces"
    if stage == "fetch":
        return f"fetch: the {size_text(plan.input_bytes)} download"
    if stage == "convert":
        return f"convert: the {size_text(plan.input_bytes)} file + {traces}"
    extra = plan.stages[stage] - plan.raw_bytes
    if stage == "sort":
        spec = sorter_or_undeclared(plan.sorter)
        what = "its whitened copy and results" if spec.scratch_copy_factor else "its results"
        return f"sort: {traces} + {size_text(extra)} of {plan.sorter} scratch ({what})"
    return f"{stage}: {traces} + {size_text(extra)} of analyzer and sorter results"


def pc_features_shortfall(
    need: int,
    *,
    part: scratch.Part,
    stages: dict[str, int],
    used: int,
    available: int,
    pcs_written: int,
    last_part: bool,
) -> str | None:
    """Why phy's PC features (``need`` bytes, sized from the sorted spikes) cannot be
    written, or None when they fit.

    They stay in ``results/`` until the upload, beside what the job still needs: this
    part's other results and, when parts remain, the plan's bound for sorting them (which
    knows nothing of the PC features already written). ``used``/``available``: what this
    run holds now and can hold at most (its usage plus the free space).
    """
    future = used + scratch.published_bytes(part)
    if not last_part:
        later = max(stages.get(s, 0) for s in ("sort", "postprocess", "export"))
        future = max(future, later + pcs_written)
    if future + need <= available:
        return None
    return (
        f"left out: {size_text(need)} of PC features would not fit beside the "
        f"{size_text(future)} this job still needs in {size_text(available)} of scratch"
    )

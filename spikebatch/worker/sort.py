"""Sort stage: any installed SpikeInterface sorter through ``run_sorter``, one code path.

In the image ``kilosort3`` is SpikeInterface's compiled-KS3 path (``ks3_compiled`` on PATH,
no MATLAB licence); ``kilosort4`` and the CPU sorters run the same way. The sorter's own
output is streamed to our stdout (``verbose=True``), i.e. to CloudWatch on Batch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from spikebatch.sorters import sorter_or_undeclared
from spikebatch.worker.errors import SorterError, one_line

log = logging.getLogger(__name__)


def sorter_class(sorter: str) -> Any:
    from spikeinterface.sorters import sorter_dict

    return sorter_dict[sorter]


def ensure_installed(sorter: str) -> str:
    """The sorter's version; a clean error listing what is installed when it is missing."""
    from spikeinterface.sorters import installed_sorters

    cls = sorter_class(sorter)
    if not cls.is_installed():
        hint = " (needs ks3_compiled on PATH: use the GPU image)" if sorter == "kilosort3" else ""
        raise SorterError(
            f"SORTER: {sorter} is not installed here{hint}; installed: "
            f"{', '.join(installed_sorters())}"
        )
    return str(cls.get_sorter_version())


def sorter_params_with_jobs(
    sorter: str, params: dict[str, Any], job_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Fill the sorter's own n_jobs/chunk_duration from our job kwargs unless the user set them."""
    from spikeinterface.sorters import get_default_sorter_params

    defaults = get_default_sorter_params(sorter)
    filled = {k: v for k, v in job_kwargs.items() if k in defaults and k not in params}
    return {**filled, **params}


def run_sort(
    recording: Any, sorter: str, params: dict[str, Any], folder: Path, job_kwargs: dict[str, Any]
) -> Any:
    """Run the sorter into ``folder``; return the sorting with empty units removed."""
    from spikeinterface.sorters import run_sorter
    from spikeinterface.sorters.utils import SpikeSortingError

    full_params = sorter_params_with_jobs(sorter, params, job_kwargs)
    log.info("sort: %s with %s", sorter, json.dumps(full_params, default=str))
    try:
        sorting = run_sorter(
            sorter,
            recording,
            folder=folder,
            remove_existing_folder=True,
            verbose=True,
            raise_error=True,
            **full_params,
        )
    except SpikeSortingError as exc:
        raise SorterError(f"{sorter} failed: {_last_line(str(exc), folder, sorter)}") from exc
    except Exception as exc:  # a wrapper raising before the sorter starts (bad geometry...)
        raise SorterError(f"{sorter} failed: {one_line(exc)}") from exc
    sorting = sorting.remove_empty_units()
    log.info("sort: %d units", sorting.get_num_units())
    return sorting


def load_sorting(folder: Path) -> Any:
    """A sorting saved by ``post_sort.save_sorting`` (an earlier run's, ``kept_sort``), into
    memory: its folder is scratch, and the sorting saved from it overwrites nothing of it."""
    from spikeinterface.core import NumpySorting, load

    sorting = NumpySorting.from_sorting(load(folder), with_metadata=True)
    log.info("sort: %d units, from %s", sorting.get_num_units(), folder)
    return sorting


def free_leftovers(sorter: str, folder: Path) -> int:
    """Delete what the sorter left in ``folder`` that later stages never read; bytes freed.

    Kilosort3's whitened ``temp_wh.dat`` is as large as the traces; it is declared in
    ``spikebatch.sorters`` so the scratch budget and this cleanup agree.
    """
    freed = 0
    for name in sorter_or_undeclared(sorter).scratch_leftovers:
        path = folder / name
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
            log.info("sort: deleted %s (%.1f MB), not read after sorting", path, freed / 1e6)
    return freed


def _last_line(message: str, folder: Path, sorter: str) -> str:
    """One useful line: SpikeInterface's last error line, plus the sorter's own last output line."""
    log_file = folder / "spikeinterface_log.json"
    trace: str | list[str] = ""
    if log_file.is_file():
        try:
            trace = json.loads(log_file.read_text()).get("error_trace") or ""
        except (OSError, json.JSONDecodeError):
            trace = ""
    text = "".join(trace) if isinstance(trace, list) else trace
    lines = [ln.strip() for ln in (text or message).splitlines() if ln.strip()]
    summary = lines[-1] if lines else "unknown error"
    own_log = folder / "sorter_output" / f"{sorter}.log"  # external sorters' stdout/stderr
    if own_log.is_file():
        output = [
            ln.strip() for ln in own_log.read_text(errors="replace").splitlines() if ln.strip()
        ]
        if output:
            summary += f" (last output: {output[-1]})"
    return summary

"""``phy/``: the sorting as phy's template-gui opens it, with no edits and no raw traces.

SpikeInterface's exporter writes the spikes, templates, amplitudes, channel map and
positions, the principal components of the feature view (unless left out: they grow with
the spike count) and a subset of spike waveforms, so phy shows waveforms without the raw
data. What we add: ``params.py`` with a relative ``dat_path`` and no path of the instance
in it, and the quality labels as phy's cluster groups (``cluster_group.tsv``).

The raw binary is not copied: it is the size of the recording. phy then opens with every
view but the trace view; to get that one too, put the sorted traces (int16, the layout
``params.py`` states) at ``phy/recording.dat``, or set ``dat_path`` to your own copy.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikebatch.quality import TEMPLATE_METRIC_COLUMNS
from spikebatch.scratch import PHY_WAVEFORMS_PER_UNIT, phy_pc_features_bytes
from spikebatch.worker.labels import LABEL_COLUMN, REASON_COLUMN, UnitLabels

log = logging.getLogger(__name__)

#: The raw-data file phy looks for, relative to params.py (absent unless the user adds it).
DAT_PATH = "recording.dat"
#: Labels to phy cluster groups (phy's own words: good, mua, noise; unsorted otherwise).
PHY_GROUPS = {"good": "good", "mua": "mua", "noise": "noise"}
#: Spike waveforms kept per unit for phy's waveform view (phy draws 100 by default).
WAVEFORMS_PER_UNIT = PHY_WAVEFORMS_PER_UNIT

_README = """\
phy/: open with   phy template-gui params.py   (phy 2: pip install phy)

Shown: the units (clusters) with their quality label as phy's group (good / mua /
noise, from spikebatch's thresholds; the label_reason column says why), templates,
{n_waveforms} spike waveforms per unit at most, amplitudes, correlograms, the probe
layout{features}.
Not shown: the trace view. The raw traces are not copied here (they are the size of
the recording). To see them, write the sorted traces as a flat int16 binary of
{n_channels} channels at {rate:g} Hz to phy/{dat_path} (or set dat_path in params.py
to your own copy, with n_channels_dat and dtype to match).{filtered}

cluster_id -> SpikeInterface unit id: cluster_si_unit_ids.tsv. phy writes your curation
into spike_clusters.npy and cluster_group.tsv here: keep a copy of the folder if you
want the automatic labels too.
"""


@dataclass(frozen=True, slots=True)
class PhyExport:
    """What was written: the folder, its size and content (for run.json)."""

    folder: Path
    n_units: int
    n_spikes: int
    pc_features: bool
    waveforms_per_unit: int
    bytes: int

    def record(self, root: Path | None = None) -> dict[str, Any]:
        """run.json's entry; ``folder`` relative to ``root`` (the run's results), if given."""
        return {
            "folder": self.folder.relative_to(root).as_posix() if root else self.folder.name,
            "units": self.n_units,
            "spikes": self.n_spikes,
            "pc_features": self.pc_features,
            "waveforms_per_unit": self.waveforms_per_unit,
            "bytes": self.bytes,
            "open_with": "phy template-gui params.py",
        }


def export_phy(
    analyzer: Any,
    folder: Path,
    *,
    labels: UnitLabels | None = None,
    pc_features: bool = True,
    waveforms_per_unit: int = WAVEFORMS_PER_UNIT,
    job_kwargs: dict[str, Any] | None = None,
) -> PhyExport:
    """Write ``folder`` (replaced if present) from a SortingAnalyzer with ``templates``,
    ``random_spikes`` and ``waveforms``.

    ``labels`` (:func:`.labels.label_units`) become phy's cluster groups, with a
    ``label_reason`` column; units without one stay ``unsorted``. ``pc_features=False``
    leaves out ``pc_features.npy`` (phy's feature view: 5 PCs x a unit's channels per
    spike, the largest file for long recordings).
    """
    from spikeinterface.exporters import export_to_phy

    from spikebatch.worker.phy_pcs import compute_pc_models

    folder = Path(folder)
    analyzer = _without_empty_units(analyzer)
    if analyzer.get_num_units() == 0:
        raise ValueError("no units with spikes: nothing to open in phy")
    if folder.exists():
        shutil.rmtree(folder)
    if pc_features:  # the exporter projects every spike on these models
        compute_pc_models(analyzer, int((job_kwargs or {}).get("n_jobs") or 1))
    export_to_phy(
        analyzer,
        folder,
        compute_pc_features=pc_features,
        compute_amplitudes=True,
        add_waveforms=False,  # written below, bounded: _write_spike_subset
        copy_binary=False,
        remove_if_exists=True,
        verbose=False,
        **(job_kwargs or {}),
    )
    _write_params(folder, analyzer)
    _write_cluster_groups(folder, labels)
    _keep_metric_columns(folder, labels)
    waveforms = _write_spike_subset(folder, analyzer, waveforms_per_unit)
    (folder / "README.txt").write_text(
        _README.format(
            n_waveforms=waveforms,
            features=", and the PC features of every spike (feature view)" if pc_features else "",
            n_channels=analyzer.get_num_channels(),
            rate=analyzer.sampling_frequency,
            dat_path=DAT_PATH,
            filtered=(
                "\nThe sorter saw filtered traces (hp_filtered = True): use the same "
                "preprocessing (run.json: preprocessing.applied)."
                if analyzer.is_filtered()
                else ""
            ),
        )
    )
    _check_no_absolute_paths(folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    export = PhyExport(
        folder=folder,
        n_units=analyzer.get_num_units(),
        n_spikes=int(analyzer.sorting.count_total_num_spikes()),
        pc_features=pc_features,
        waveforms_per_unit=waveforms,
        bytes=size,
    )
    log.info(
        "phy: %d units, %d spikes, %.1f MB (PC features: %s)",
        export.n_units,
        export.n_spikes,
        size / 1e6,
        "yes" if pc_features else "left out",
    )
    return export


def pc_features_bytes(analyzer: Any) -> int:
    """What ``pc_features.npy`` will take: every spike's 5 PCs on the most channels any unit
    has (float32), known exactly once the sorter has run (``spikebatch.scratch``)."""
    if analyzer.sparsity is not None:
        channels = int(analyzer.sparsity.mask.sum(axis=1).max(initial=0))
    else:
        channels = analyzer.get_num_channels()
    return phy_pc_features_bytes(int(analyzer.sorting.count_total_num_spikes()), channels)


def _without_empty_units(analyzer: Any) -> Any:
    """SpikeInterface's exporter drops empty units from the cluster tables but not from
    the spike-to-template indices, which then point at the wrong templates: drop them first."""
    counts = analyzer.sorting.count_num_spikes_per_unit()
    kept = [u for u in analyzer.unit_ids if counts[u] > 0]
    if len(kept) == len(analyzer.unit_ids):
        return analyzer
    log.info("phy: leaving out %d empty units", len(analyzer.unit_ids) - len(kept))
    return analyzer.select_units(kept, format="memory")


def _write_spike_subset(folder: Path, analyzer: Any, per_unit: int) -> int:
    """The ``_phy_spikes_subset`` files (phy's waveform view without the raw traces), with
    at most ``per_unit`` spikes of each unit, evenly through the recording.

    SpikeInterface's exporter (``add_waveforms``) would write all the analyzer's random
    spikes (500 per unit, five times what phy's waveform view draws) and copy them in
    memory twice on the way; on an hour of 384 channels that is gigabytes of scratch and
    memory for nothing. Same files and layout as the exporter's: spikes sorted by their
    index in ``spike_times.npy``, channels padded with -1.
    """
    import numpy as np

    if not (analyzer.has_extension("waveforms") and analyzer.has_extension("random_spikes")):
        return 0
    random_spikes = analyzer.get_extension("random_spikes")
    waveforms_ext = analyzer.get_extension("waveforms")
    indices = np.asarray(random_spikes.get_data())
    units = random_spikes.get_random_spikes()["unit_index"]
    waveforms = waveforms_ext.get_data()
    sparse = analyzer.sparsity.unit_id_to_channel_indices if analyzer.sparsity else None
    keep: list[Any] = []
    for unit_index in np.unique(units):
        (rows,) = np.nonzero(units == unit_index)
        rows = rows[np.argsort(indices[rows], kind="stable")]
        if len(rows) > per_unit:
            rows = rows[np.linspace(0, len(rows) - 1, per_unit).round().astype(int)]
        keep.append(rows)
    if not keep:
        return 0
    rows = np.concatenate(keep)
    rows = rows[np.argsort(indices[rows], kind="stable")]
    n_channels = analyzer.get_num_channels()
    channels_of = {
        analyzer.sorting.id_to_index(u): (sparse[u] if sparse else np.arange(n_channels))
        for u in analyzer.unit_ids
    }
    width = max(len(c) for c in channels_of.values())
    spike_channels = -np.ones((len(rows), width), dtype="int32")
    spike_waveforms = np.zeros((len(rows), waveforms.shape[1], width), dtype=waveforms.dtype)
    stored_sparse = waveforms_ext.sparsity is not None
    for i, row in enumerate(rows):
        chans = channels_of[int(units[row])]
        spike_channels[i, : len(chans)] = chans
        # A sparse extension stores the unit's channels first, in its sparsity's order.
        data = waveforms[row][:, : len(chans)] if stored_sparse else waveforms[row][:, chans]
        spike_waveforms[i, :, : len(chans)] = data
    np.save(folder / "_phy_spikes_subset.spikes.npy", indices[rows].astype("int64"))
    np.save(folder / "_phy_spikes_subset.channels.npy", spike_channels)
    np.save(folder / "_phy_spikes_subset.waveforms.npy", spike_waveforms)
    counts = np.bincount(units[rows])
    return int(counts.max())


def _write_params(folder: Path, analyzer: Any) -> None:
    """params.py with a relative dat_path: the folder opens wherever it is downloaded."""
    recording_dtype = analyzer.get_dtype()
    lines = [
        f"dat_path = {DAT_PATH!r}",
        f"n_channels_dat = {analyzer.get_num_channels()}",
        f"dtype = {str(recording_dtype)!r}",
        "offset = 0",
        f"sample_rate = {float(analyzer.sampling_frequency)!r}",
        f"hp_filtered = {bool(analyzer.is_filtered())}",
    ]
    (folder / "params.py").write_text("\n".join(lines) + "\n")


def _write_cluster_groups(folder: Path, labels: UnitLabels | None) -> None:
    """cluster_group.tsv (and cluster_label_reason.tsv) from the labels, through the
    exporter's cluster id -> unit id map."""
    import pandas as pd

    ids = pd.read_csv(folder / "cluster_si_unit_ids.tsv", sep="\t", dtype={"si_unit_id": str})
    table = labels.table if labels is not None else None
    by_unit = (
        {}
        if table is None
        else dict(zip(table.index.astype(str), table[LABEL_COLUMN], strict=True))
    )
    groups = [PHY_GROUPS.get(by_unit.get(u, ""), "unsorted") for u in ids["si_unit_id"]]
    pd.DataFrame({"cluster_id": ids["cluster_id"], "group": groups}).to_csv(
        folder / "cluster_group.tsv", sep="\t", index=False
    )
    if table is not None:
        reasons = dict(zip(table.index.astype(str), table[REASON_COLUMN], strict=True))
        pd.DataFrame(
            {
                "cluster_id": ids["cluster_id"],
                REASON_COLUMN: [reasons.get(u, "") for u in ids["si_unit_id"]],
            }
        ).to_csv(folder / f"cluster_{REASON_COLUMN}.tsv", sep="\t", index=False)


def _keep_metric_columns(folder: Path, labels: UnitLabels | None) -> None:
    """phy shows every cluster_*.tsv as a column: of the ~20 template metrics keep the
    ones the labels read (all quality metrics stay)."""
    used = set(labels.thresholds.metrics_used()) if labels is not None else set()
    for column in TEMPLATE_METRIC_COLUMNS:
        if column not in used:
            (folder / f"cluster_{column}.tsv").unlink(missing_ok=True)


def _check_no_absolute_paths(folder: Path) -> None:
    """No path of this machine (scratch, the analyzer) may be left in the text files."""
    roots = {str(Path(p).resolve()) for p in (folder, folder.parent, os.getcwd(), "/tmp")}
    for path in folder.iterdir():
        if path.suffix in (".py", ".tsv", ".txt", ".json"):
            text = path.read_text(errors="replace")
            leaked = [r for r in roots if r != "/" and r in text]
            if leaked:
                raise RuntimeError(f"phy/{path.name} holds a local path ({leaked[0]})")

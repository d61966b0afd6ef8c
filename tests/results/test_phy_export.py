"""phy/: what phy's own loader (phylib) reads from it agrees with sorting/ and the labels."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spikebatch.worker import labels, phy_export
from tests.results.conftest import SPEC


def load(folder: Path):
    from phylib.io.model import load_model

    return load_model(folder / "params.py")


def si_ids(folder: Path) -> dict[int, str]:
    table = pd.read_csv(folder / "cluster_si_unit_ids.tsv", sep="\t", dtype={"si_unit_id": str})
    return dict(zip(table["cluster_id"], table["si_unit_id"], strict=True))


def test_phy_loads_the_export_and_agrees_with_the_sorting(finished_run, tmp_path):
    import spikeinterface as si

    # Where the user downloads it: another folder, another machine.
    folder = shutil.copytree(finished_run.folder / "phy", tmp_path / "downloaded" / "phy")
    sorting = si.load(finished_run.folder / "sorting")
    model = load(folder)
    try:
        assert model.n_spikes == sorting.count_total_num_spikes()
        ids = si_ids(folder)
        assert sorted(ids.values()) == sorted(str(u) for u in sorting.unit_ids)
        counts = np.bincount(model.spike_clusters)
        expected = sorting.count_num_spikes_per_unit()
        assert {ids[c]: int(counts[c]) for c in model.cluster_ids} == {
            str(u): int(n) for u, n in expected.items()
        }
        for cluster in model.cluster_ids:  # same spike times, unit by unit
            unit = next(u for u in sorting.unit_ids if str(u) == ids[cluster])
            np.testing.assert_array_equal(
                model.spike_samples[model.spike_clusters == cluster],
                sorting.get_unit_spike_train(unit),
            )
        groups = model.metadata["group"]
        assert {ids[c]: g for c, g in groups.items()} == {
            str(u): lab for u, lab in finished_run.labels.labels.items()
        }
        assert model.traces is None  # no raw data shipped: phy opens without the trace view
        assert model.spike_waveforms is not None
        assert model.spike_waveforms.waveforms.shape[0] <= 100 * len(model.cluster_ids)
        features = model.features  # spikes x a unit's channels x 5 PCs (phy's feature view)
        assert features is not None and features.shape[0] == model.n_spikes
        assert features.shape[2] == 5
        assert model.channel_positions.shape == (SPEC.num_channels, 2)
        assert len(model.sparse_templates.data) == len(ids)
    finally:
        model.close()


def test_params_py_is_relative_and_names_no_path_of_the_instance(finished_run):
    folder = finished_run.folder / "phy"
    params = dict(
        (node.targets[0].id, ast.literal_eval(node.value))
        for node in ast.parse((folder / "params.py").read_text()).body
        if isinstance(node, ast.Assign)
    )
    assert params["dat_path"] == "recording.dat"
    assert params["n_channels_dat"] == 16 and params["dtype"] == "int16"
    assert params["sample_rate"] == 30000.0 and params["hp_filtered"] is True
    for path in folder.iterdir():
        if path.suffix in (".py", ".tsv", ".txt"):
            text = path.read_text()
            assert "/tmp" not in text and str(finished_run.folder) not in text, path.name
    readme = (folder / "README.txt").read_text()
    assert "phy template-gui params.py" in readme and "recording.dat" in readme


def test_the_trace_view_works_once_the_user_adds_the_traces(finished_run, analyzer, tmp_path):
    """What README.txt tells a user to do: put the sorted traces at phy/recording.dat."""
    from spikeinterface.core import write_binary_recording

    folder = shutil.copytree(finished_run.folder / "phy", tmp_path / "phy")
    write_binary_recording(analyzer.recording, file_paths=[folder / "recording.dat"], n_jobs=1)
    model = load(folder)
    try:
        assert model.traces is not None
        assert model.traces.shape == (analyzer.get_num_samples(), 16)
    finally:
        model.close()


def test_the_labels_and_reasons_show_as_phy_columns(finished_run):
    folder = finished_run.folder / "phy"
    ids = si_ids(folder)
    groups = pd.read_csv(folder / "cluster_group.tsv", sep="\t")
    reasons = pd.read_csv(folder / "cluster_label_reason.tsv", sep="\t", keep_default_na=False)
    table = finished_run.labels.table
    for cluster, group in zip(groups["cluster_id"], groups["group"], strict=True):
        assert group == table.loc[_unit(table, ids[cluster]), labels.LABEL_COLUMN]
    for cluster, reason in zip(reasons["cluster_id"], reasons["label_reason"], strict=True):
        assert reason == table.loc[_unit(table, ids[cluster]), labels.REASON_COLUMN]
    # the template metrics the labels read are columns; the other ~14 are left out
    used = set(finished_run.labels.thresholds.metrics_used())
    assert (folder / "cluster_exp_decay.tsv").exists() == ("exp_decay" in used)
    assert not (folder / "cluster_velocity_above.tsv").exists()


def _unit(table: pd.DataFrame, si_id: str):
    return next(u for u in table.index if str(u) == si_id)


def test_pc_features_can_be_left_out(analyzer, tmp_path):
    export = phy_export.export_phy(analyzer, tmp_path / "phy", pc_features=False)
    assert not (tmp_path / "phy" / "pc_features.npy").exists()
    assert export.record()["pc_features"] is False
    model = load(tmp_path / "phy")
    try:
        assert model.features is None and model.n_spikes == export.n_spikes
        assert set(model.metadata["group"].values()) == {"unsorted"}  # no labels given
    finally:
        model.close()


def test_empty_units_are_left_out_and_the_rest_still_line_up(analyzer, tmp_path):
    """SpikeInterface's exporter misindexes templates when a unit has no spikes."""
    from spikeinterface.core import NumpySorting, create_sorting_analyzer

    sorting = analyzer.sorting
    spikes = {str(u): sorting.get_unit_spike_train(u) for u in sorting.unit_ids}
    first = next(iter(spikes))
    spikes[first] = np.array([], dtype=np.int64)
    with_empty = NumpySorting.from_unit_dict(
        [spikes], sampling_frequency=analyzer.sampling_frequency
    )
    small = create_sorting_analyzer(with_empty, analyzer.recording, sparse=True, format="memory")
    small.compute(["random_spikes", "waveforms", "templates", "noise_levels"])
    export = phy_export.export_phy(small, tmp_path / "phy", pc_features=False)
    assert export.n_units == len(spikes) - 1
    model = load(tmp_path / "phy")
    try:
        ids = si_ids(tmp_path / "phy")
        assert first not in ids.values()
        counts = np.bincount(model.spike_clusters)
        assert {ids[c]: int(counts[c]) for c in model.cluster_ids} == {
            u: len(t) for u, t in spikes.items() if len(t)
        }
    finally:
        model.close()


def test_a_sorting_without_spikes_is_a_clear_error(analyzer, tmp_path):
    from spikeinterface.core import NumpySorting, create_sorting_analyzer

    empty = NumpySorting.from_unit_dict(
        [{"0": np.array([], dtype=np.int64)}], sampling_frequency=analyzer.sampling_frequency
    )
    small = create_sorting_analyzer(empty, analyzer.recording, sparse=False, format="memory")
    with pytest.raises(ValueError, match="no units with spikes"):
        phy_export.export_phy(small, tmp_path / "phy")


def test_the_pc_features_are_sized_before_they_are_written(analyzer, tmp_path):
    """The worker decides whether pc_features.npy fits from this size: it must be exact.

    Sized and written from the same analyzer: its sparsity (the channels per unit) comes
    from random spikes, so a rebuilt analyzer may keep a channel more or less than the run's.
    """
    phy_export.export_phy(analyzer, tmp_path / "phy", job_kwargs={"n_jobs": 1})
    data = np.load(tmp_path / "phy" / "pc_features.npy", mmap_mode="r")
    assert phy_export.pc_features_bytes(analyzer) == data.nbytes > 0


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_pc_models_are_the_ones_spikeinterface_fits(analyzer, n_jobs):
    """phy's PCA models are fitted channel by channel (phy_pcs, to scale to 400 units): the
    same models, and so the same PC features in phy, as SpikeInterface's own unit-by-unit fit."""
    from spikebatch.worker.phy_pcs import PC_PARAMS, compute_pc_models

    ours, theirs = analyzer.save_as(format="memory"), analyzer.save_as(format="memory")
    compute_pc_models(ours, n_jobs)
    theirs.compute("principal_components", **PC_PARAMS, n_jobs=1, progress_bar=False)
    ours_ext = ours.get_extension("principal_components")
    theirs_ext = theirs.get_extension("principal_components")
    fitted = 0
    for channel in analyzer.channel_ids:
        key = f"pca_model_by_channel_local_{channel}"
        mine, reference = ours_ext.data[key], theirs_ext.data[key]
        assert hasattr(mine, "components_") == hasattr(reference, "components_")
        if hasattr(reference, "components_"):
            fitted += 1
            np.testing.assert_array_equal(mine.components_, reference.components_)
            np.testing.assert_array_equal(mine.mean_, reference.mean_)
            np.testing.assert_array_equal(mine.explained_variance_, reference.explained_variance_)
    assert fitted > 0
    np.testing.assert_array_equal(ours_ext.get_data(), theirs_ext.get_data())

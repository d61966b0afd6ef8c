"""phy's principal components: SpikeInterface's per-channel PCA models, fitted in parallel.

``export_to_phy`` fits one incremental PCA per channel, feeding it each unit's waveforms on
that channel, unit after unit. With ``n_jobs > 1`` SpikeInterface starts a new process pool
for every unit, and each small SVD runs on every BLAS thread: at 400 units that was 100 s
on 2 vCPUs whatever the recording's length (``bench.postsort``), about 8,000 tiny fits.

Each channel's model depends only on its own sequence of fits, so the channels can be
split between workers: each worker walks the units in the same order and fits its own
channels, on one BLAS thread. The models, and so every PC feature phy shows, are the ones
SpikeInterface would fit (``tests/results/test_phy_export.py`` compares them).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from spikeinterface.postprocessing.principal_component import ComputePrincipalComponents

#: phy's feature view (``export_to_phy``'s own choice): 5 components, one PCA per channel.
PC_PARAMS = {"n_components": 5, "mode": "by_channel_local"}
#: Channel blocks per worker: small enough to even out units that crowd one end of a probe.
_BLOCKS_PER_WORKER = 4

#: What a forked worker reads (set before the pool starts; fork shares it, nothing is pickled).
_FORKED: dict[str, Any] = {}


class _ChannelParallelPCs(ComputePrincipalComponents):
    """SpikeInterface's extension with its ``by_channel_local`` fit split by channel."""

    def _fit_by_channel_local(self, n_jobs, progress_bar, max_threads_per_worker, mp_context):
        channels = np.arange(len(self.sorting_analyzer.channel_ids))
        if n_jobs <= 1:
            return list(_fit_channels(self, channels))
        blocks = np.array_split(channels, min(len(channels), n_jobs * _BLOCKS_PER_WORKER))
        _FORKED["extension"] = self
        try:
            with ProcessPoolExecutor(
                max_workers=n_jobs, mp_context=multiprocessing.get_context("fork")
            ) as pool:
                fitted = list(pool.map(_fit_block, blocks))
        finally:
            _FORKED.clear()
        return [model for block in fitted for model in block]


def compute_pc_models(analyzer: Any, n_jobs: int) -> None:
    """Compute the analyzer's ``principal_components`` extension (models and the random
    spikes' projections) as ``export_to_phy`` would, with the channels' fits in parallel."""
    extension = _ChannelParallelPCs(analyzer)
    save = not analyzer.is_read_only()
    extension.set_params(save=save, **PC_PARAMS)
    extension.run(save=save, n_jobs=n_jobs, progress_bar=False)
    analyzer.extensions[extension.extension_name] = extension


def _fit_block(channels: np.ndarray) -> list[Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_channels(_FORKED["extension"], channels)


def _fit_channels(extension: Any, channels: np.ndarray) -> list[Any]:
    """The models of ``channels``: every unit's waveforms on each, in SpikeInterface's order
    (units in order; a unit with fewer spikes than components is skipped)."""
    from sklearn.decomposition import IncrementalPCA

    params = extension.params
    models = {
        int(c): IncrementalPCA(n_components=params["n_components"], whiten=params["whiten"])
        for c in channels
    }
    sparsity = extension.sorting_analyzer.sparsity
    for unit_id in extension.sorting_analyzer.unit_ids:
        # A unit with none of these channels is skipped before its waveforms are sliced.
        if sparsity is not None and not models.keys() & set(
            sparsity.unit_id_to_channel_indices[unit_id].tolist()
        ):
            continue
        waveforms, channel_inds, _ = extension._get_sparse_waveforms(unit_id)
        if len(waveforms) < params["n_components"]:
            continue
        for position, channel in enumerate(channel_inds):
            if int(channel) in models:
                models[int(channel)].partial_fit(waveforms[:, :, position])
    return [models[int(c)] for c in channels]

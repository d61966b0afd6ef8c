"""Report figures: what a person looks at first to judge a sorting.

* ``units_summary.png``: where the units sit on the probe, and each unit's waveform.
* ``amplitudes.png``: spike amplitudes over time (drift, units fading in or out).
* ``quality_metrics.png``: QC metric distributions with the label thresholds in force
  (:mod:`spikebatch.quality`, the same rules that label the units).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from spikebatch.quality import SECTIONS, QualityThresholds, Threshold

log = logging.getLogger(__name__)

#: Units with a waveform panel (units_summary.png): the top ones by SNR. The figure's pixel
#: size is bounded by it, however many units the sorter found (a Neuropixels hour: 300-600).
MAX_UNITS_SHOWN = 30
#: Units in the amplitude scatter: the top ones by SNR, one tab20 colour each.
MAX_UNITS_AMPLITUDES = 20
#: Spikes drawn per unit in the amplitude scatter, chosen at random (fixed seed): a unit of
#: an hour at 10 Hz has 36,000, which would draw a solid smear (and slowly). The rate panel
#: below it counts every spike.
MAX_SPIKES_DRAWN_PER_UNIT = 2_000
#: Bins of the rate panel: at most this many over the recording, at least 2 s each (2 s
#: bins over an hour are 1,800 noisy points per line).
MAX_RATE_BINS = 200
#: Colours of the saved PNGs (a palette: see :func:`_save_png`).
PNG_COLOURS = 256
#: (column, axis label) of each panel; its threshold lines are the label rules in force.
_QC_PANELS = [
    ("snr", "SNR"),
    ("firing_rate", "firing rate (Hz)"),
    ("presence_ratio", "presence ratio"),
    ("isi_violations_ratio", "ISI violations ratio"),
    ("amplitude_cutoff", "amplitude cutoff"),
    ("num_spikes", "spike count"),
]

#: The figures, in the order the run page shows them.
FIGURES = ("units_summary.png", "amplitudes.png", "quality_metrics.png")

_FIXED_RANGES = {"presence_ratio": (0.0, 1.05), "amplitude_cutoff": (0.0, 0.5)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    return [cmap(i % 20) for i in range(n)]


def write_report(
    analyzer: Any,
    metrics: Any,
    folder: Path,
    *,
    title: str,
    thresholds: QualityThresholds | None = None,
) -> list[Path]:
    """Write the three figures into ``folder``; returns their paths. ``thresholds``: the
    label rules in force (default: the documented defaults), drawn on the QC panels."""
    written = [
        write_figure(name, analyzer, metrics, folder, title=title, thresholds=thresholds)
        for name in FIGURES
    ]
    log.info("report: %s", ", ".join(p.name for p in written))
    return written


def write_figure(
    name: str,
    analyzer: Any,
    metrics: Any,
    folder: Path,
    *,
    title: str,
    thresholds: QualityThresholds | None = None,
) -> Path:
    """Draw one of :data:`FIGURES` into ``folder/name`` (alone: the benchmark times each)."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    fig = _DRAW[name](analyzer, metrics, title, thresholds or QualityThresholds())
    path = folder / name
    try:
        _save_png(fig, path)
    finally:
        plt.close(fig)
    return path


def _save_png(fig: Any, path: Path) -> None:
    """Save with a 256-colour palette: the run page embeds every figure, and a dense scatter
    in full colour is three times the bytes (at most one byte a pixel, and no visible loss)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(
            PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    palette.save(path, format="PNG", optimize=True)


def _units_by_snr(analyzer: Any, metrics: Any) -> list[Any]:
    unit_ids = list(analyzer.unit_ids)
    if "snr" in metrics:
        unit_ids.sort(key=lambda u: -float(np.nan_to_num(metrics.loc[u, "snr"])))
    return unit_ids


def _units_summary(analyzer: Any, metrics: Any, title: str, thresholds: QualityThresholds):
    plt = _pyplot()
    unit_ids = _units_by_snr(analyzer, metrics)[:MAX_UNITS_SHOWN]
    n_units = len(unit_ids)
    templates = analyzer.get_extension("templates")
    average = templates.get_data(operator="average")
    std = templates.get_data(operator="std")
    index_of = {u: i for i, u in enumerate(analyzer.unit_ids)}
    peak = analyzer.get_main_channels(outputs="index", with_dict=True)
    fs = analyzer.sampling_frequency
    positions = analyzer.get_channel_locations()
    locations = analyzer.get_extension("unit_locations").get_data()
    colors = dict(zip(unit_ids, _colors(max(n_units, 1)), strict=False))
    t_ms = (np.arange(average.shape[1]) - templates.nbefore) / fs * 1e3

    ncols = 6
    nrows = max(1, math.ceil(n_units / ncols))
    fig = plt.figure(figsize=(3.0 + 2.0 * ncols, max(4.5, 1.9 * nrows)), layout="constrained")
    grid = fig.add_gridspec(nrows, ncols + 2)
    probe_ax = fig.add_subplot(grid[:, :2])
    probe_ax.scatter(positions[:, 0], positions[:, 1], marker="s", s=28, color="0.85", zorder=1)
    if len(analyzer.unit_ids) > n_units:  # the units without a panel: where, not which
        probe_ax.scatter(locations[:, 0], locations[:, 1], s=8, color="0.45", linewidth=0, zorder=2)
    for u in unit_ids:
        x, y = locations[index_of[u], :2]
        probe_ax.scatter(x, y, s=60, color=colors[u], edgecolor="k", linewidth=0.4, zorder=3)
        probe_ax.annotate(str(u), (x, y), xytext=(4, 2), textcoords="offset points", fontsize=7)
    probe_ax.set(xlabel="x (um)", ylabel="depth (um)", title="unit locations on the probe")
    probe_ax.set_aspect("equal", adjustable="datalim")

    for k, u in enumerate(unit_ids):
        ax = fig.add_subplot(grid[k // ncols, 2 + k % ncols])
        i, ch = index_of[u], peak[u]
        ax.fill_between(
            t_ms,
            average[i, :, ch] - std[i, :, ch],
            average[i, :, ch] + std[i, :, ch],
            color=colors[u],
            alpha=0.25,
            linewidth=0,
        )
        ax.plot(t_ms, average[i, :, ch], color=colors[u], linewidth=1.4)
        snr = metrics.loc[u, "snr"] if "snr" in metrics else float("nan")
        rate = metrics.loc[u, "firing_rate"] if "firing_rate" in metrics else float("nan")
        ax.set_title(f"unit {u} · ch {ch}\nSNR {snr:.1f} · {rate:.1f} Hz", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.axhline(0, color="0.7", linewidth=0.5)
        if k % ncols == 0:
            ax.set_ylabel("uV", fontsize=7)
        if k // ncols == nrows - 1:
            ax.set_xlabel("ms", fontsize=7)
    if not unit_ids:
        probe_ax.text(0.5, 0.5, "no units found", transform=probe_ax.transAxes, ha="center")
    shown = _shown(n_units, len(analyzer.unit_ids))
    fig.suptitle(f"{title}: {shown} (mean ± sd on the peak channel)", fontsize=11)
    return fig


def _amplitudes(analyzer: Any, metrics: Any, title: str, thresholds: QualityThresholds):
    plt = _pyplot()
    fig, (ax, rate_ax) = plt.subplots(
        2, 1, figsize=(12, 6.5), sharex=True, height_ratios=[3, 1], layout="constrained"
    )
    unit_ids = _units_by_snr(analyzer, metrics)[:MAX_UNITS_AMPLITUDES]
    colors = dict(zip(unit_ids, _colors(max(len(unit_ids), 1)), strict=False))
    spikes = analyzer.sorting.to_spike_vector()
    amplitudes = analyzer.get_extension("spike_amplitudes").get_data()
    fs = analyzer.sampling_frequency
    duration = analyzer.get_total_duration()
    bins = np.linspace(0, duration, max(2, min(MAX_RATE_BINS, int(duration // 2)) + 1))
    rng = np.random.default_rng(0)
    thinned = False
    for u in unit_ids:
        (index,) = np.nonzero(spikes["unit_index"] == analyzer.sorting.id_to_index(u))
        times = spikes["sample_index"][index] / fs
        drawn = _at_most(index.size, MAX_SPIKES_DRAWN_PER_UNIT, rng)
        thinned |= drawn.size < index.size
        ax.scatter(
            times[drawn],
            amplitudes[index[drawn]],
            s=2,
            color=colors[u],
            alpha=0.6,
            rasterized=True,
            label=str(u),
        )
        counts, _ = np.histogram(times, bins=bins)
        rate_ax.plot(
            0.5 * (bins[1:] + bins[:-1]), counts / np.diff(bins), color=colors[u], linewidth=0.9
        )
    shown = _shown(len(unit_ids), len(analyzer.unit_ids))
    sample = f", at most {MAX_SPIKES_DRAWN_PER_UNIT:,} spikes each" if thinned else ""
    ax.set(ylabel="spike amplitude (uV)", title=f"{title}: amplitudes over time ({shown}{sample})")
    if unit_ids:
        ax.legend(
            title="unit",
            fontsize=7,
            ncols=1 + len(unit_ids) // 16,
            markerscale=4,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
        )
    rate_ax.set(xlabel="time (s)", ylabel="rate (Hz)")
    return fig


def _at_most(n: int, limit: int, rng: Any) -> Any:
    """Indices of ``n`` items, or of ``limit`` of them drawn at random, in order."""
    if n <= limit:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def _shown(n_shown: int, n_units: int) -> str:
    return f"top {n_shown} of {n_units} units by SNR" if n_units > n_shown else f"{n_units} units"


def _rule(thresholds: QualityThresholds, column: str) -> tuple[str, Threshold] | None:
    """The label rule on ``column``, if one is in force (a mua rule before a noise one)."""
    resolved = thresholds.resolved()
    for section in reversed(SECTIONS):
        if column in resolved[section]:
            return section, resolved[section][column]
    return None


def _quality_metrics(analyzer: Any, metrics: Any, title: str, thresholds: QualityThresholds):
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), layout="constrained")
    n = len(metrics)
    for ax, (column, label) in zip(axes.flat, _QC_PANELS, strict=True):
        values = metrics[column].to_numpy(dtype=float) if column in metrics else np.array([])
        finite = values[np.isfinite(values)]
        if finite.size:
            ax.hist(finite, bins=min(30, max(5, finite.size)), color="#4C72B0", alpha=0.85)
        ax.set(xlabel=label, ylabel="units")
        if column in _FIXED_RANGES:  # ratios: show the whole scale, not a sliver around one value
            ax.set_xlim(*_FIXED_RANGES[column])
        subtitle = label
        rule = _rule(thresholds, column)
        if rule is not None and finite.size:
            section, threshold = rule
            for bound in (threshold.greater, threshold.less):
                if bound is not None:
                    ax.axvline(bound, color="#C44E52", linestyle="--", linewidth=1.2)
            passing = sum(threshold.passes(float(v)) for v in finite)
            subtitle = f"{label}: {passing}/{n} pass {threshold.describe()} (else {section})"
        if not finite.size:
            ax.text(
                0.5,
                0.5,
                "not defined for any unit",
                transform=ax.transAxes,
                ha="center",
                color="0.4",
            )
        missing = n - finite.size
        if missing:
            subtitle += f" ({missing} n/a)"
        ax.set_title(subtitle, fontsize=9)
    fig.suptitle(f"{title}: quality metrics of {n} units", fontsize=11)
    return fig


#: Each figure's drawing function: (analyzer, metrics, title, thresholds) -> Figure.
_DRAW = {
    "units_summary.png": _units_summary,
    "amplitudes.png": _amplitudes,
    "quality_metrics.png": _quality_metrics,
}

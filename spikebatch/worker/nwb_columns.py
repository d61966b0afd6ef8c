"""What each column of ``units.nwb`` means: the descriptions of its Units and electrodes columns.

neuroconv writes every sorting property, metric and channel property as a column, described
by what it is given and by a placeholder ("No description.") otherwise. A published file is
read by people who never saw the run, so every column the worker can write has a description
here, with its unit where it has one; a column spikebatch does not know (a sorter's own
property) gets a generic one that says so, never a placeholder.
"""

from __future__ import annotations

from collections.abc import Iterable

from spikebatch.worker.labels import NWB_PROPERTY_DESCRIPTIONS

#: Kilosort's per-cluster tables (``cluster_KSLabel.tsv``, ``cluster_ContamPct.tsv``,
#: ``cluster_Amplitude.tsv``), as SpikeInterface's Kilosort reader turns them into properties.
KILOSORT_COLUMNS = {
    "KSLabel": (
        "Kilosort's own label (cluster_KSLabel.tsv): 'good' when the unit's auto-correlogram "
        "shows a refractory period (Kilosort's contamination test), else 'mua'."
    ),
    "KSLabel_repeat": (
        "Kilosort's label read a second time: Kilosort copies cluster_KSLabel.tsv to "
        "cluster_group.tsv and SpikeInterface's reader keeps both; identical to KSLabel."
    ),
    "ContamPct": (
        "Kilosort's estimate of the unit's contamination by other neurons' spikes, from "
        "refractory-period violations in its auto-correlogram (cluster_ContamPct.tsv), in percent."
    ),
    "Amplitude": (
        "Kilosort's template amplitude (cluster_Amplitude.tsv): the norm of the unit's template "
        "in Kilosort's whitened space, in arbitrary units (not microvolts; compare units only)."
    ),
}

#: Properties SpikeInterface's readers and spikebatch set on a sorting.
SORTING_COLUMNS = {
    "original_cluster_id": (
        "The unit's cluster id in the sorter's own output (e.g. Kilosort's cluster_id, the id "
        "phy shows for the sorter's folder)."
    ),
    "main_channel_id": (
        "Channel id (channel_name in the electrodes table) of the recording channel where the "
        "sorter's template of the unit has its largest peak-to-peak amplitude."
    ),
    "quality": (
        "Cluster group from the sorter's cluster_group.tsv (phy's good, mua, noise or "
        "unsorted), as SpikeInterface's reader names it."
    ),
    "group": "Channel group (shank) the sorter assigned the unit to.",
    "unit_name": (
        "The unit's id in the sorting (sorting/ of the run); '<part>/<unit id>' when the run "
        "sorted several probes or shanks (part: the folder under probes/)."
    ),
    "electrode_group": "The electrode group (probe or shank) of the unit's peak channel.",
}

_ISI_MS = 1.5  # SpikeInterface's isi_violation default, which the worker uses

#: spikebatch.worker.postprocess.QUALITY_METRICS, as SpikeInterface names their columns.
QUALITY_METRIC_COLUMNS = {
    "num_spikes": "Number of spikes of the unit in the sorted recording (count).",
    "firing_rate": "The unit's mean firing rate over the sorted recording, in spikes per second.",
    "presence_ratio": (
        "Fraction (0 to 1) of equal time bins of the recording (a tenth of it, from 1 to 60 s "
        "long) in which the unit fired at least once."
    ),
    "snr": (
        "Signal-to-noise ratio (unitless): the template's extremum amplitude on the unit's peak "
        "channel divided by that channel's noise level (MAD-based standard deviation)."
    ),
    "isi_violations_ratio": (
        f"Rate of inter-spike intervals shorter than {_ISI_MS:g} ms relative to the rate expected "
        "from the unit's firing rate (Hill et al. 2011; unitless, 0 for a clean unit)."
    ),
    "isi_violations_count": (
        f"Number of inter-spike intervals shorter than {_ISI_MS:g} ms (refractory violations)."
    ),
    "amplitude_cutoff": (
        "Estimated fraction (0 to 0.5) of the unit's spikes missed because their amplitude fell "
        "below the detection threshold, from the spike-amplitude histogram (Hill et al. 2011)."
    ),
}

#: spikebatch.quality.TEMPLATE_METRIC_COLUMNS: SpikeInterface's template metrics, measured on
#: the unit's average waveform (template, microvolts) on its peak channel unless said otherwise.
TEMPLATE_METRIC_COLUMNS = {
    "peak_to_trough_duration": (
        "Time from the template's trough (minimum) to the following peak (maximum), in seconds."
    ),
    "trough_half_width": "Width of the template's trough at half its depth, in seconds.",
    "peak_half_width": "Width of the template's peak at half its height, in seconds.",
    "repolarization_slope": (
        "Slope of the template from its trough back towards baseline, in microvolts per second."
    ),
    "recovery_slope": (
        "Slope of the template in the 0.7 ms after its peak (return to baseline), in microvolts "
        "per second."
    ),
    "num_positive_peaks": "Number of positive peaks of the template (count).",
    "num_negative_peaks": "Number of negative peaks (troughs) of the template (count).",
    "main_to_next_extremum_duration": (
        "Time from the template's largest extremum (trough or peak) to the next extremum, in "
        "seconds."
    ),
    "peak_before_to_trough_ratio": (
        "Amplitude of the template's peak before the trough over the trough's (unitless)."
    ),
    "peak_after_to_trough_ratio": (
        "Amplitude of the template's peak after the trough over the trough's (unitless)."
    ),
    "peak_before_to_peak_after_ratio": (
        "Amplitude of the template's peak before the trough over the peak after it (unitless)."
    ),
    "main_peak_to_trough_ratio": (
        "Amplitude of the template's larger peak over its trough's (unitless)."
    ),
    "trough_width": "Width of the template's main trough, in seconds.",
    "peak_before_width": "Width of the template's peak before the trough, in seconds.",
    "peak_after_width": "Width of the template's peak after the trough, in seconds.",
    "waveform_baseline_flatness": (
        "Largest deviation of the template's first 0.5 ms (baseline) from its mean, over the "
        "template's largest deviation from it (unitless; lower is a flatter baseline)."
    ),
    "velocity_above": (
        "Propagation speed of the spike along the probe above the peak channel (fit of peak "
        "time against distance), in micrometres per millisecond."
    ),
    "velocity_below": (
        "Propagation speed of the spike along the probe below the peak channel (fit of peak "
        "time against distance), in micrometres per millisecond."
    ),
    "exp_decay": (
        "Decay constant of the template's peak-to-peak amplitude with distance from the peak "
        "channel (exponential fit), in 1 per micrometre."
    ),
    "spread": (
        "Extent along the probe of the channels where the template's amplitude exceeds 20% of "
        "its largest, in micrometres."
    ),
}

#: Every Units column the worker can write, by name (neuroconv's own columns, spike_times,
#: waveform_mean/sd and electrodes, come described).
UNIT_COLUMNS: dict[str, str] = {
    **KILOSORT_COLUMNS,
    **SORTING_COLUMNS,
    **QUALITY_METRIC_COLUMNS,
    **TEMPLATE_METRIC_COLUMNS,
    **NWB_PROPERTY_DESCRIPTIONS,
}

#: Channel properties of the sorted recording that neuroconv writes as electrodes columns.
ELECTRODE_COLUMNS = {
    **{
        f"noise_level_{method}_{scale}": (
            f"Noise level of the channel in the sorted (preprocessed) traces, "
            f"{measure}, estimated by SpikeInterface on random chunks, {unit}."
        )
        for method, measure in (
            ("mad", "the median absolute deviation scaled to a standard deviation (MAD/0.6745)"),
            ("std", "their standard deviation"),
            ("rms", "their root mean square"),
        )
        for scale, unit in (("scaled", "in microvolts"), ("raw", "in the stored sample units"))
    },
    "inter_sample_shift": (
        "Delay of the channel's sample relative to the sample clock, as a fraction of a sample "
        "period (multiplexed ADCs, e.g. Neuropixels); the phase-shift step corrects it."
    ),
}


def unit_descriptions(names: Iterable[str]) -> dict[str, str]:
    """Each Units column's description (neuroconv's ``property_descriptions``)."""
    return {name: UNIT_COLUMNS.get(name) or _unknown("unit", name) for name in names}


def electrode_descriptions(names: Iterable[str]) -> list[dict[str, str]]:
    """Each channel property's description, in neuroconv's ``metadata["Ecephys"]["Electrodes"]``
    shape (it refuses one for ``group``, which it writes itself)."""
    return [
        {"name": name, "description": ELECTRODE_COLUMNS.get(name) or _unknown("channel", name)}
        for name in names
        if name != "group"
    ]


def _unknown(kind: str, name: str) -> str:
    return (
        f"The {kind} property '{name}' as the sorter or SpikeInterface set it; spikebatch has "
        "no description of it (see the sorter's documentation)."
    )

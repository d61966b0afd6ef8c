"""Preprocess stage: a declared chain of SpikeInterface preprocessing steps.

``PREPROCESSING`` is a JSON object of ``step -> kwargs`` applied in order, e.g.
``{"bandpass": {"freq_min": 300}, "common_reference": {}}``. Unset or ``{}`` means the
sorter's declared default (``spikebatch.sorters``: phase shift only for Kilosort, which
filters and re-references on the GPU; phase shift + bandpass + median reference for the
others); ``null`` means none. Steps and their kwargs are checked against SpikeInterface's
own signatures at config time, so a typo fails before any download.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Step name -> ``module:function``: SpikeInterface's preprocessing, with SpikeInterface's
#: signatures; the phase shift, the bandpass and the global common reference are its
#: algorithms in faster implementations (``phase_shift.py``, ``spectral.py``: one FFT for a
#: phase shift and the bandpass after it; ``reference.py``), which hand what they do not
#: cover back to SpikeInterface's own functions.
STEPS: dict[str, str] = {
    "phase_shift": "spikebatch.worker.phase_shift:phase_shift",
    "highpass": "spikeinterface.preprocessing:highpass_filter",
    "bandpass": "spikebatch.worker.spectral:bandpass_filter",
    "notch": "spikeinterface.preprocessing:notch_filter",
    "common_reference": "spikebatch.worker.reference:common_reference",
}
#: Extra kwargs the filter steps forward to ``spikeinterface.preprocessing.filter``.
_FILTER_KWARGS = {"filter_order", "ftype", "filter_mode", "coeff", "add_reflect_padding"}


def _step_function(step: str) -> Callable[..., Any]:
    import importlib

    module, name = STEPS[step].split(":")
    return getattr(importlib.import_module(module), name)


def validate_preprocessing(steps: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check step names and kwargs; raise ``ValueError('PREPROCESSING: ...')`` on the first problem."""
    checked: dict[str, dict[str, Any]] = {}
    for step, kwargs in steps.items():
        if step not in STEPS:
            raise ValueError(
                f"PREPROCESSING: unknown step {step!r}; valid steps: {', '.join(STEPS)}"
            )
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"PREPROCESSING: {step} takes a JSON object of kwargs, got {kwargs!r}")
        params = inspect.signature(_step_function(step)).parameters
        valid = {p for p in params if p != "recording" and not p.startswith("_")}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            valid = (valid - {"filter_kwargs"}) | _FILTER_KWARGS
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ValueError(
                f"PREPROCESSING: unknown key {unknown[0]!r} for {step}; "
                f"valid keys: {', '.join(sorted(valid))}"
            )
        checked[step] = dict(kwargs)
    return checked


def preprocess(
    recording: Any,
    steps: Mapping[str, Mapping[str, Any]] | None,
    *,
    max_duration_s: float | None = None,
) -> tuple[Any, list[str]]:
    """Slice to ``max_duration_s``, then apply ``steps``; returns the recording and what was applied.

    ``phase_shift`` undoes the per-channel ADC delays the file records (``inter_sample_shift``,
    Neuropixels). A file that records none sampled its channels together: there is nothing to
    undo, so the step is skipped (logged, and absent from what was applied), whether it came
    from the sorter's default or was named, so that one spec serves every kind of file (a
    study's entry, a campaign over mixed probes). A file known to have lost its shifts gets
    them from the step's own ``inter_sample_shift`` kwarg.
    """
    applied: list[str] = []
    if max_duration_s is not None:
        n_frames = min(
            recording.get_num_frames(), round(max_duration_s * recording.sampling_frequency)
        )
        recording = recording.frame_slice(start_frame=0, end_frame=n_frames)
        applied.append(f"first {n_frames / recording.sampling_frequency:g} s")
    for step, kwargs in (steps or {}).items():
        if (
            step == "phase_shift"
            and kwargs.get("inter_sample_shift") is None
            and recording.get_property("inter_sample_shift") is None
        ):
            log.info("preprocess: the file records no inter_sample_shift; phase_shift skipped")
            continue
        recording = _step_function(step)(recording, **kwargs)
        applied.append(f"{step}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    log.info("preprocess: %s", "; ".join(applied) or "none")
    return recording, applied


def fft_friendly_chunks(recording: Any, job_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Job kwargs whose chunk length makes the chain's FFTs fast.

    The phase shift (and the bandpass, ``spectral.py``) transform each chunk plus a margin on
    both sides; at 5 s and 30 kHz with the phase shift's 40 ms that is 152,400 samples (a
    factor of 127), which scipy's FFT runs 5x slower than a 5-smooth length. The chunk grows
    to the next fast length (151,200 + margins: 0.8%).
    """
    from scipy.fft import next_fast_len
    from spikeinterface.core.job_tools import ensure_chunk_size
    from spikeinterface.preprocessing.phase_shift import PhaseShiftRecording as SIPhaseShift

    node, margin = recording, None
    while node is not None and margin is None:
        margin = getattr(node, "fft_margin", None)  # ours: phase_shift.py, spectral.py
        if isinstance(node, SIPhaseShift):
            margin = int(node._kwargs["margin_ms"] * node.sampling_frequency / 1000.0)
        node = node.get_parent()
    if margin is None:
        return dict(job_kwargs)
    wanted = ensure_chunk_size(recording, **{k: v for k, v in job_kwargs.items() if "chunk" in k})
    fast = next_fast_len(wanted + 2 * margin, real=True)
    kwargs = {k: v for k, v in job_kwargs.items() if k not in ("chunk_duration", "chunk_memory")}
    return {**kwargs, "chunk_size": fast - 2 * margin}


def materialize(recording: Any, folder: Path, job_kwargs: Mapping[str, Any]) -> Any:
    """Run the preprocessing chain once, into a flat binary in scratch; return that recording.

    Left lazy, every pass over the traces repeats the HDF5 decompression and the filters:
    the sorter's input copy is one pass and the analyzer's amplitudes another. Saved once
    (int16 stays int16), Kilosort 3/4 take the file as it is (SpikeInterface's
    ``binary_compatible_with``: no second copy) and the analyzer reads plain samples.
    """
    kwargs = fft_friendly_chunks(recording, job_kwargs)
    saved = recording.save(folder=folder, format="binary", overwrite=True, **kwargs)
    log.info(
        "preprocess: %d channels x %.1f s written to %s",
        saved.get_num_channels(),
        saved.get_total_duration(),
        folder,
    )
    return saved

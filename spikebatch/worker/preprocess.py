"""Preprocess stage: a declared chain of SpikeInterface preprocessing steps.

``PREPROCESSING`` is a JSON object of ``step -> kwargs`` applied in order, e.g.
``{"bandpass": {"freq_min": 300}, "common_reference": {}}``. Unset or ``{}`` means the
Neuropixels defaults below; ``null`` means none. Steps and their kwargs are checked
against SpikeInterface's own signatures at config time, so a typo fails before any download.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Step name -> SpikeInterface function name in ``spikeinterface.preprocessing``.
STEPS: dict[str, str] = {
    "phase_shift": "phase_shift",
    "highpass": "highpass_filter",
    "bandpass": "bandpass_filter",
    "notch": "notch_filter",
    "common_reference": "common_reference",
}
#: Extra kwargs the filter steps forward to ``spikeinterface.preprocessing.filter``.
_FILTER_KWARGS = {"filter_order", "ftype", "filter_mode", "coeff", "add_reflect_padding"}

#: Neuropixels defaults: undo the ADC multiplexing delay (only where the file records it),
#: 300-6000 Hz band, global median reference.
DEFAULT_PREPROCESSING: dict[str, dict[str, Any]] = {
    "phase_shift": {},
    "bandpass": {"freq_min": 300.0, "freq_max": 6000.0},
    "common_reference": {"reference": "global", "operator": "median"},
}
_OPTIONAL_WHEN_DEFAULT = {"phase_shift"}


def _step_function(step: str) -> Callable[..., Any]:
    import spikeinterface.preprocessing as spre

    return getattr(spre, STEPS[step])


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
    """Slice to ``max_duration_s``, then apply ``steps``; returns the recording and what was applied."""
    applied: list[str] = []
    if max_duration_s is not None:
        n_frames = min(
            recording.get_num_frames(), round(max_duration_s * recording.sampling_frequency)
        )
        recording = recording.frame_slice(start_frame=0, end_frame=n_frames)
        applied.append(f"first {n_frames / recording.sampling_frequency:g} s")
    is_default = steps == DEFAULT_PREPROCESSING
    for step, kwargs in (steps or {}).items():
        if step == "phase_shift" and recording.get_property("inter_sample_shift") is None:
            if is_default and step in _OPTIONAL_WHEN_DEFAULT:
                log.info("preprocess: no inter_sample_shift in the file; skipping phase_shift")
                continue
            raise ValueError(
                "PREPROCESSING: phase_shift needs the per-channel inter_sample_shift "
                "(Neuropixels); this recording has none"
            )
        recording = _step_function(step)(recording, **kwargs)
        applied.append(f"{step}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    log.info("preprocess: %s", "; ".join(applied) or "none")
    return recording, applied


def materialize(recording: Any, folder: Path, job_kwargs: Mapping[str, Any]) -> Any:
    """Run the preprocessing chain once, into a flat binary in scratch; return that recording.

    Left lazy, every pass over the traces repeats the HDF5 decompression and the filters:
    the sorter's input copy is one pass and the analyzer's amplitudes another. Saved once
    (int16 stays int16), Kilosort 3/4 take the file as it is (SpikeInterface's
    ``binary_compatible_with``: no second copy) and the analyzer reads plain samples.
    """
    saved = recording.save(folder=folder, format="binary", overwrite=True, **job_kwargs)
    log.info(
        "preprocess: %d channels x %.1f s written to %s",
        saved.get_num_channels(),
        saved.get_total_duration(),
        folder,
    )
    return saved

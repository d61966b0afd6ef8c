"""Quality labels (good / mua / noise): the thresholds, their defaults and where they come from.

One home for the label rules that the request (``quality_thresholds``), the worker
(``QUALITY_THRESHOLDS``), the run page and the README share. Pure pydantic, so the submit
Lambda validates a request's thresholds exactly as the worker will.

The rule is bombcell's (Fabre et al. 2023), as SpikeInterface implements it
(``spikeinterface.curation.bombcell_label_units``):

1. **noise**: a unit that fails any ``noise`` threshold (waveform shape; a metric that could
   not be computed fails);
2. **mua**: a unit that is not noise but fails any ``mua`` threshold (contamination,
   completeness, amplitude; a metric that could not be computed does not fail);
3. **good**: everything else.

A threshold is ``{"greater": x}`` (pass if value >= x), ``{"less": y}`` (pass if value <= y)
or both, optionally on the absolute value (``"abs": true``): SpikeInterface's format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spikebatch.contract import json_object

#: The labels, best first (phy's cluster groups use the same words).
LABELS = ("good", "mua", "noise")
Section = Literal["noise", "mua"]
SECTIONS: tuple[Section, ...] = ("noise", "mua")

#: Columns of quality_metrics.csv (SpikeInterface names; see worker/postprocess.QUALITY_METRICS).
QUALITY_METRIC_COLUMNS = (
    "num_spikes",
    "firing_rate",
    "presence_ratio",
    "snr",
    "isi_violations_ratio",
    "isi_violations_count",
    "amplitude_cutoff",
)
#: Columns of SpikeInterface's ``template_metrics`` (single- and multi-channel), computed
#: from the templates when a threshold needs one (cheap: no pass over the traces).
TEMPLATE_METRIC_COLUMNS = (
    "peak_to_trough_duration",
    "trough_half_width",
    "peak_half_width",
    "repolarization_slope",
    "recovery_slope",
    "num_positive_peaks",
    "num_negative_peaks",
    "main_to_next_extremum_duration",
    "peak_before_to_trough_ratio",
    "peak_after_to_trough_ratio",
    "peak_before_to_peak_after_ratio",
    "main_peak_to_trough_ratio",
    "trough_width",
    "peak_before_width",
    "peak_after_width",
    "waveform_baseline_flatness",
    "velocity_above",
    "velocity_below",
    "exp_decay",
    "spread",
)
LABEL_METRICS = QUALITY_METRIC_COLUMNS + TEMPLATE_METRIC_COLUMNS

_BOMBCELL = (
    "bombcell (Fabre et al. 2023) noise defaults, as SpikeInterface 0.105's "
    "bombcell_get_default_thresholds()"
)
_ALLEN = (
    "Allen Institute: AllenSDK unit filter default and AIND's aind-ephys-curation "
    "default QC recipe (SpikeInterface-based)"
)
_AIND = "AIND aind-ephys-curation default QC recipe (AllenSDK's hour-long sessions use 0.95)"
_BOMBCELL_MUA = "bombcell (Fabre et al. 2023) single-unit default, as SpikeInterface 0.105 ships it"


class Threshold(BaseModel):
    """One metric's pass range: ``greater`` <= value <= ``less`` (either may be left out)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    greater: float | None = Field(None, description="pass if the value is >= this")
    less: float | None = Field(None, description="pass if the value is <= this")
    abs: bool = Field(False, description="compare the absolute value")

    @model_validator(mode="after")
    def _a_bound(self) -> Self:
        if self.greater is None and self.less is None:
            raise ValueError("give 'greater', 'less' or both (or null to drop the check)")
        if self.greater is not None and self.less is not None and self.greater > self.less:
            raise ValueError(f"'greater' ({self.greater:g}) is above 'less' ({self.less:g})")
        return self

    def as_spikeinterface(self) -> dict[str, Any]:
        """SpikeInterface's threshold dict (``threshold_metrics_label_units``)."""
        out: dict[str, Any] = {"greater": self.greater, "less": self.less}
        if self.abs:
            out["abs"] = True
        return out

    def passes(self, value: float) -> bool:
        """The same inclusive comparison SpikeInterface makes (NaN handling is the caller's)."""
        v = abs(value) if self.abs else value
        return (self.greater is None or v >= self.greater) and (self.less is None or v <= self.less)

    def describe(self, name: str = "") -> str:
        """The rule in one phrase: ``snr >= 5``, ``0.0001 <= x <= 0.00115``; without a
        ``name``, only the bound: ``>= 5``, ``in [0.0001, 0.00115]``."""
        x = f"|{name or 'x'}|" if self.abs else name
        if self.greater is not None and self.less is not None:
            if not x:
                return f"in [{self.greater:g}, {self.less:g}]"
            return f"{self.greater:g} <= {x} <= {self.less:g}"
        bound = f">= {self.greater:g}" if self.greater is not None else f"<= {self.less:g}"
        return f"{x} {bound}".strip()


#: The defaults: (threshold, where it comes from), by section and metric.
DEFAULT_THRESHOLDS: dict[Section, dict[str, tuple[Threshold, str]]] = {
    "noise": {
        "num_positive_peaks": (Threshold(less=2), _BOMBCELL),
        "num_negative_peaks": (Threshold(less=1), _BOMBCELL),
        "peak_to_trough_duration": (Threshold(greater=0.0001, less=0.00115), _BOMBCELL),
        "waveform_baseline_flatness": (Threshold(less=0.5), _BOMBCELL),
        "peak_after_to_trough_ratio": (Threshold(less=0.8), _BOMBCELL),
        "exp_decay": (Threshold(greater=0.01, less=0.1), _BOMBCELL),
    },
    "mua": {
        "isi_violations_ratio": (Threshold(less=0.5), _ALLEN),
        "amplitude_cutoff": (Threshold(less=0.1), _ALLEN),
        "presence_ratio": (Threshold(greater=0.8), _AIND),
        "snr": (Threshold(greater=5.0), _BOMBCELL_MUA),
    },
}

#: How each section treats a metric that could not be computed (NaN), as bombcell does.
NAN_POLICY: dict[Section, Literal["fail", "ignore"]] = {"noise": "fail", "mua": "ignore"}


class QualityThresholds(BaseModel):
    """Overrides of the label thresholds (request ``quality_thresholds``, env ``QUALITY_THRESHOLDS``).

    Each section maps a metric to a :class:`Threshold` (replacing the default for that
    metric or adding a check) or to ``null`` (dropping the default check). With
    ``use_defaults: false`` only the thresholds given here apply.
    Example: ``{"mua": {"snr": {"greater": 3}, "presence_ratio": null}}``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    use_defaults: bool = Field(True, description="start from the documented defaults")
    noise: dict[str, Threshold | None] = Field(default_factory=dict)
    mua: dict[str, Threshold | None] = Field(default_factory=dict)

    @field_validator("noise", "mua", mode="before")
    @classmethod
    def _known_metrics(cls, value: Any) -> Any:
        """Name an unknown metric before checking its threshold (the likelier mistake)."""
        if not isinstance(value, Mapping):
            return value  # the type check reports it
        unknown = sorted(set(value) - set(LABEL_METRICS))
        if unknown:
            raise ValueError(
                f"unknown metric {unknown[0]!r}; known metrics: {', '.join(LABEL_METRICS)}"
            )
        return value

    def resolved(self) -> dict[Section, dict[str, Threshold]]:
        """The thresholds in force: defaults (unless switched off) overlaid with these."""
        out: dict[Section, dict[str, Threshold]] = {}
        for section in SECTIONS:
            base = (
                {m: t for m, (t, _) in DEFAULT_THRESHOLDS[section].items()}
                if self.use_defaults
                else {}
            )
            for metric, threshold in getattr(self, section).items():
                if threshold is None:
                    base.pop(metric, None)
                else:
                    base[metric] = threshold
            out[section] = base
        return out

    def as_spikeinterface(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The thresholds in force, in ``bombcell_label_units``' format (no non-somatic split)."""
        resolved = self.resolved()
        return {
            "noise": {m: t.as_spikeinterface() for m, t in resolved["noise"].items()},
            "mua": {m: t.as_spikeinterface() for m, t in resolved["mua"].items()},
            "non-somatic": {},
        }

    def metrics_used(self) -> list[str]:
        """Every metric a threshold in force reads, in LABEL_METRICS order."""
        used = {m for section in self.resolved().values() for m in section}
        return [m for m in LABEL_METRICS if m in used]

    def table(self) -> list[dict[str, str]]:
        """One row per threshold in force: section, metric, rule, source (for pages and docs)."""
        rows = []
        for section, thresholds in self.resolved().items():
            for metric, threshold in thresholds.items():
                default = DEFAULT_THRESHOLDS[section].get(metric)
                source = default[1] if default and default[0] == threshold else "this run's request"
                rows.append(
                    {
                        "section": section,
                        "metric": metric,
                        "rule": threshold.describe(metric),
                        "source": source,
                    }
                )
        return rows


def parse_quality_thresholds(raw: str | Mapping[str, Any] | None) -> QualityThresholds:
    """A JSON object (env var) or mapping (request) as :class:`QualityThresholds`.

    Raises ``ValueError`` with one line that names the offending field.
    """
    if raw == "":
        return QualityThresholds()
    raw = json_object(raw)
    if raw is None:
        return QualityThresholds()
    try:
        return QualityThresholds.model_validate(dict(raw))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (use noise, mua, use_defaults)"
        raise ValueError(f"{where}: {message}" if where else message) from None

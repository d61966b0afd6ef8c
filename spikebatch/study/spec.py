"""The study spec: a matrix of recordings x sorter entries, validated before anything runs.

A YAML (or JSON) file; strict like the job-request model (unknown keys, a string where a
number belongs, a typo'd sorter are errors), and every field that a job request also has
is checked by that model (:func:`spikebatch.control.request.parse_request`): each case of
the matrix *is* a job request, so a spec that loads is one whose every case can be sent.
Errors are one line: ``study.yaml: sorters[ks4-hp].params: unknown key 'Thx' ...``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spikebatch.control.request import AssetPath, RequestError, Resources, parse_request
from spikebatch.sorters import get_sorter

#: ``ground_truth`` values that are not URIs.
OWN_UNITS = "units"
NO_TRUTH = "none"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_TRUTH_SCHEMES = ("s3://", "https://", "file:///")


class StudySpecError(ValueError):
    """A spec that cannot run; ``str()`` is one line naming the file and the field."""


def _plain_name(value: str, what: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r}: use letters, digits, '.', '_' or '-' (max 80); it names folders"
        )
    return value


class RecordingEntry(BaseModel):
    """One recording (or, with ``asset_glob``, one per matching asset) and its truth."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str | None = Field(None, description="unique; with asset_glob: each match's file stem")
    study: str = Field("default", min_length=1, description="grouping label (SpikeForest's)")
    dandiset_id: str | None = None
    version: str = "draft"
    asset: AssetPath | None = Field(None, description="one asset path in the dandiset")
    asset_glob: str | None = Field(None, min_length=1, description="one recording per match")
    input_uri: str | None = Field(None, description="s3://, https:// or file:// (file:rel/path)")
    ground_truth: str = Field(
        OWN_UNITS, description="'units' (the file's own), a URI, or 'none' (not scored)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _plain_name(value, "recording name")

    @field_validator("ground_truth")
    @classmethod
    def _truth(cls, value: str) -> str:
        if value in (OWN_UNITS, NO_TRUTH) or value.startswith(_TRUTH_SCHEMES):
            return value
        raise ValueError(
            f"{value!r}: use 'units' (the file's own units table), 'none', or an s3://, "
            "https:// or file:/// URI"
        )

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        given = [k for k in ("asset", "asset_glob", "input_uri") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of asset, asset_glob, input_uri (got: {', '.join(given) or 'none'})"
            )
        if self.name is None and given[0] != "asset_glob":
            raise ValueError("name: required (only asset_glob names its recordings itself)")
        _request_errors(self.request_fields(), "")  # the request model's own checks
        return self

    def request_fields(self) -> dict[str, Any]:
        """This recording's input as job-request fields (a glob not yet resolved)."""
        if self.input_uri is not None:
            return {"input_uri": self.input_uri}
        inputs: dict[str, Any] = {"dandiset_id": self.dandiset_id, "version": self.version}
        if self.asset is not None:
            return inputs | {"assets": [self.asset]}
        return inputs | {"asset_glob": self.asset_glob}

    @property
    def scored(self) -> bool:
        return self.ground_truth != NO_TRUTH


class SorterEntry(BaseModel):
    """One column of the matrix: a declared sorter with its settings, under a unique label."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(description="a declared sorter (spikebatch.sorters)")
    label: str | None = Field(None, description="unique; defaults to the name")
    params: dict[str, Any] = Field(default_factory=dict, description="as SORTER_PARAMS")
    preprocessing: dict[str, Any] = Field(
        default_factory=dict, description="as PREPROCESSING; {} (default): the sorter's default"
    )
    timeout_minutes: float | None = Field(None, gt=0, description="a longer case is timed_out")
    resources: Resources = Field(default_factory=Resources)

    @field_validator("name")
    @classmethod
    def _declared(cls, value: str) -> str:
        get_sorter(value)  # the error lists the declared sorters
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return None if value is None else _plain_name(value, "label")

    @model_validator(mode="after")
    def _as_request(self) -> Self:
        # The request model checks resources against the sorter (GPU or not).
        placeholder = {"input_uri": "s3://placeholder-bucket/recording.nwb"}
        _request_errors(placeholder | self.request_fields(), "")
        return self

    @property
    def key(self) -> str:
        return self.label or self.name

    def request_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "sorter": self.name,
            "sorter_params": dict(self.params),
            "resources": self.resources.model_dump(exclude_unset=True),
        }
        if self.preprocessing:  # {} is the sorter's default, as in a job request
            fields["preprocessing"] = self.preprocessing
        return fields


class StudySpec(BaseModel):
    """The whole study: its name, the recordings, the sorter entries, the scoring knobs."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    recordings: list[RecordingEntry] = Field(min_length=1)
    sorters: list[SorterEntry] = Field(min_length=1)
    snr_threshold: float = Field(5.0, ge=0, description="true units counted in the means")
    match_score: float | None = Field(None, gt=0, le=1, description="SpikeInterface's if unset")
    well_detected_score: float | None = Field(None, gt=0, le=1)

    @field_validator("snr_threshold", "match_score", "well_detected_score", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _plain_name(value, "study name")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [r.name for r in self.recordings if r.name is not None]
        if doubles := sorted(n for n, c in Counter(names).items() if c > 1):
            raise ValueError(f"recordings: duplicate name {doubles[0]!r}")
        labels = [s.key for s in self.sorters]
        if doubles := sorted(n for n, c in Counter(labels).items() if c > 1):
            raise ValueError(
                f"sorters: duplicate label {doubles[0]!r} (give each entry its own label)"
            )
        seen: dict[str, str] = {}
        for entry in self.sorters:
            same = json.dumps(entry.request_fields(), sort_keys=True, default=str)
            if same in seen:
                raise ValueError(
                    f"sorters: {entry.key!r} and {seen[same]!r} are the same run (same sorter, "
                    "params, preprocessing and resources)"
                )
            seen[same] = entry.key
        return self

    def sorter(self, label: str) -> SorterEntry:
        for entry in self.sorters:
            if entry.key == label:
                return entry
        known = ", ".join(s.key for s in self.sorters)
        raise StudySpecError(f"--only {label!r}: no such sorter label; labels: {known}")

    def ground_truth_env(self) -> dict[str, str]:
        """The scoring knobs as worker variables (for scored cases)."""
        from spikebatch.contract import Env

        env = {Env.GROUND_TRUTH_SNR_THRESHOLD.value: repr(self.snr_threshold)}
        if self.match_score is not None:
            env[Env.GROUND_TRUTH_MATCH_SCORE.value] = repr(self.match_score)
        if self.well_detected_score is not None:
            env[Env.GROUND_TRUTH_WELL_DETECTED_SCORE.value] = repr(self.well_detected_score)
        return env


def _request_errors(fields: Mapping[str, Any], where: str) -> None:
    try:
        parse_request(fields)
    except RequestError as exc:
        first = exc.errors[0]
        field = {"assets": "asset", "sorter": "name", "sorter_params": "params"}.get(
            first.field.split(".")[0], first.field
        )
        raise ValueError(f"{where}{field}: {first.message}") from None


def _where(loc: tuple[Any, ...], document: Mapping[str, Any]) -> str:
    """``sorters[ks4-hp].params`` from pydantic's ``('sorters', 1, 'params')``."""
    parts: list[str] = []
    node: Any = document
    for item in loc:
        if isinstance(item, int) and parts:
            entry = node[item] if isinstance(node, list) and item < len(node) else None
            label = None
            if isinstance(entry, Mapping):
                label = entry.get("label") or entry.get("name")
            parts[-1] += f"[{label if isinstance(label, str) else item}]"
        else:
            parts.append(str(item))
        if isinstance(node, Mapping | list):
            try:
                node = node[item]
            except (KeyError, IndexError, TypeError):
                node = None
    return ".".join(parts)


def _decode(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StudySpecError(f"{path}: not valid JSON ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudySpecError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None


def _relative_files(document: Any, base: Path) -> Any:
    """``file:rel/path`` (no ``//``) is relative to the spec's folder; made ``file:///abs``."""
    if not isinstance(document, dict):
        return document
    for entry in document.get("recordings") or []:
        if not isinstance(entry, dict):
            continue
        for key in ("input_uri", "ground_truth"):
            value = entry.get(key)
            if isinstance(value, str) and value.startswith("file:") and "://" not in value:
                entry[key] = (base / value.removeprefix("file:")).resolve().as_uri()
    return document


def parse_spec(document: Any, *, source: str = "study") -> StudySpec:
    """Validate a decoded spec; :class:`StudySpecError` names the first problem in one line."""
    if not isinstance(document, Mapping):
        raise StudySpecError(f"{source}: a study spec is a mapping (name, recordings, sorters)")
    try:
        return StudySpec.model_validate(dict(document))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        where = _where(tuple(first["loc"]), document)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise StudySpecError(
            f"{source}: {where + ': ' if where else ''}{message}{more}".replace("\n", " ")
        ) from None


def load_spec(path: Path) -> StudySpec:
    """Read and validate a YAML or JSON spec file."""
    if not path.is_file():
        raise StudySpecError(f"{path}: no such spec file")
    return parse_spec(_relative_files(_decode(path), path.parent.resolve()), source=str(path))

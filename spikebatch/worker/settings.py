"""The worker's configuration: the env-var contract (DESIGN.md) as one validated model.

Every variable is checked before any work starts; the first bad one becomes a
:class:`ConfigError` whose message names it in one line, e.g.
``SORTER_PARAMS: unknown key 'Thx' for kilosort4; valid keys: ...``.
The environment is always passed in explicitly (``WorkerSettings.from_env(env)``), so the
CLI, the Lambda and tests validate exactly what a job will see.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spikebatch.contract import (
    DEFAULT_DANDI_API_URL,
    DEFAULT_DANDISET_VERSION,
    DEFAULT_SCRATCH_DIR,
    IMAGE_VAR,
    LOG_LEVEL_VAR,
    Env,
    dandi_source,
    derive_run_id,
    is_valid_run_id,
    json_object,
)
from spikebatch.input_format import DataType, ReadRecordingKwargs, parse_read_recording_kwargs
from spikebatch.quality import QualityThresholds, parse_quality_thresholds
from spikebatch.sorters import DEFAULT_SORTER, default_preprocessing
from spikebatch.worker.preprocess import validate_preprocessing
from spikebatch.worker.stop import DEFAULT_GRACE_S, MAX_GRACE_S

if TYPE_CHECKING:
    from spikebatch.worker.geometry import ProbeSetting
    from spikebatch.worker.scoring import ScoreParams

_DANDISET_ID = re.compile(r"^\d{6}$")
_VERSION = re.compile(r"^(draft|\d+\.\d{6}\.\d{4})$")
_SECRET_ARN = re.compile(r"^arn:aws[\w-]*:secretsmanager:[\w-]+:\d{12}:secret:.+$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_INPUT_SCHEMES = ("s3://", "https://", "http://", "file://")
_OUTPUT_SCHEMES = ("s3://", "file://")


class ConfigError(ValueError):
    """A bad environment; ``str()`` is the one-line message naming the variable."""


@cache
def _sorter_defaults(sorter: str) -> dict[str, Any]:
    from spikeinterface.sorters import get_default_sorter_params

    return dict(get_default_sorter_params(sorter))


@cache
def _available_sorters() -> tuple[str, ...]:
    from spikeinterface.sorters import available_sorters

    return tuple(available_sorters())


def _json_object(raw: Any, *, allow_null: bool = False) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = json_object(raw)
    if value is None and not allow_null:
        raise ValueError("must be a JSON object, got NoneType")
    return None if value is None else dict(value)


def _default_scratch() -> Path:
    scratch = Path(DEFAULT_SCRATCH_DIR)
    if scratch.is_dir() and os.access(scratch, os.W_OK):
        return scratch
    return Path(tempfile.gettempdir()) / "spikebatch-scratch"


@dataclass(frozen=True, slots=True)
class OuterVariable:
    """A variable the worker reads outside :class:`WorkerSettings`; documented beside it."""

    name: str
    unset: str
    description: str


OUTER_VARIABLES: tuple[OuterVariable, ...] = (
    OuterVariable(
        Env.ARRAY_MANIFEST_URI,
        "—",
        "array jobs: JSON list of per-child overrides; child `AWS_BATCH_JOB_ARRAY_INDEX` applies "
        "its entry before validation",
    ),
    OuterVariable(
        IMAGE_VAR,
        "`local (not a container)`",
        "image label recorded in run.json (set by the Dockerfile)",
    ),
    OuterVariable(LOG_LEVEL_VAR, "`INFO`", "log level of the job log"),
)
"""Read before validation (the array manifest) or by the job's logging and run.json."""


class WorkerSettings(BaseSettings):
    """One job's configuration, validated as a whole. Field aliases are the env-var names."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, validate_default=False
    )

    dandiset_id: str | None = Field(
        None, alias=Env.DANDISET_ID, description="six digits, e.g. `000409`"
    )
    dandiset_version: str = Field(
        DEFAULT_DANDISET_VERSION,
        alias=Env.DANDISET_VERSION,
        description="`draft` or a published version (`0.230111.1914`)",
    )
    dandi_asset_path: str | None = Field(
        None, alias=Env.DANDI_ASSET_PATH, description="path of the NWB asset inside the dandiset"
    )
    input_uri: str | None = Field(
        None,
        alias=Env.INPUT_URI,
        description="instead of DANDI: an NWB file (`s3://`, `https://`, `http://` or `file://`), "
        "or an `s3://` prefix / `file://` folder holding a SpikeGLX run or an Open Ephys "
        "recording, or one SpikeGLX `.ap.meta`/`.ap.bin` (see "
        "[Inputs](worker.md#inputs-nwb-spikeglx-open-ephys))",
    )
    dandi_api_url: str = Field(
        DEFAULT_DANDI_API_URL, alias=Env.DANDI_API_URL, description="DANDI API base URL"
    )
    dandi_api_key: SecretStr | None = Field(
        None,
        alias=Env.DANDI_API_KEY,
        description="API key for embargoed dandisets (never written to run.json)",
    )
    dandi_api_key_secret_arn: str | None = Field(
        None,
        alias=Env.DANDI_API_KEY_SECRET_ARN,
        description="Secrets Manager secret holding the key (plain, or JSON with one value)",
    )
    electrical_series_path: str | None = Field(
        None,
        alias=Env.ELECTRICAL_SERIES_PATH,
        description="the ElectricalSeries to sort, e.g. `acquisition/ElectricalSeriesAp`",
        json_schema_extra={
            "unset": "every raw spike-band acquisition series (one per probe; series below "
            "10 kHz are LFP and skipped), sorted one after another: see "
            "[Several probes](worker.md#several-probes-and-shanks)"
        },
    )
    sorter: str = Field(
        DEFAULT_SORTER,
        alias=Env.SORTER,
        description="any SpikeInterface sorter installed in the image (`kilosort3`, "
        "`kilosort4`, ...)",
    )
    sorter_params: dict[str, Any] = Field(
        default_factory=dict,
        alias=Env.SORTER_PARAMS,
        description="JSON object, overlaid on SpikeInterface's defaults (all recorded in run.json)",
    )
    # Unset: the sorter's declared default (spikebatch.sorters), which needs the sorter.
    preprocessing: dict[str, dict[str, Any]] | None = Field(
        default_factory=lambda data: default_preprocessing(data.get("sorter", DEFAULT_SORTER)),
        alias=Env.PREPROCESSING,
        description="JSON object of steps applied in order: `phase_shift`, `highpass`, "
        "`bandpass`, `notch`, `common_reference`, each with SpikeInterface kwargs. Unset or "
        "`{}`: the sorter's declared default (`spikebatch/sorters.py`): **Kilosort 3/4: phase "
        "shift only** (where the file has `inter_sample_shift`; Kilosort high-passes, "
        "re-references and whitens on the GPU itself), other sorters: phase shift, bandpass "
        "300–6000 Hz, global median reference. `null`: none. `phase_shift` is skipped (logged; "  # noqa: RUF001
        "absent from run.json's `preprocessing.applied`) on a file that records no "
        "`inter_sample_shift`, named or not: its channels were sampled together, so there is "
        "nothing to undo, and one spec serves every probe; a file that lost its shifts gets "
        "them from the step's own `inter_sample_shift` kwarg",
        json_schema_extra={"unset": "per sorter"},
    )
    max_duration_s: float | None = Field(
        None,
        alias=Env.MAX_DURATION_S,
        description="sort only the first N seconds",
        json_schema_extra={"unset": "whole recording"},
    )
    output_uri: str = Field(
        ..., alias=Env.OUTPUT_URI, description="`s3://bucket/prefix` or `file:///abs/path`"
    )
    run_id: str | None = Field(
        None,
        alias=Env.RUN_ID,
        description="results go to `OUTPUT_URI/RUN_ID/`",
        json_schema_extra={
            "unset": "derived: input slug + sorter + hash of params "
            "(`spikebatch.contract.derive_run_id`)"
        },
    )
    instance_type: str | None = Field(
        None,
        alias=Env.INSTANCE_TYPE,
        description="EC2 type for the cost in run.json",
        json_schema_extra={
            "unset": "read from `/etc/spikebatch/instance.json` (written by the launch template "
            "on Batch, mounted read-only), else instance metadata (IMDSv2, when run by hand on EC2)"
        },
    )
    scratch_dir: Path = Field(
        default_factory=_default_scratch,
        alias=Env.SCRATCH_DIR,
        description="downloads and sorter scratch (instance NVMe on Batch); see "
        "[Scratch](worker.md#scratch-budgeted-freed-never-shared)",
        json_schema_extra={"unset": "`/scratch` if writable, else the temp dir"},
    )
    sort_by_group: bool = Field(
        False,
        alias=Env.SORT_BY_GROUP,
        description="`true`: sort each channel group of a series (its electrode groups: the "
        "shanks of a multi-shank probe) on its own",
    )
    publish_dandiset_id: str | None = Field(
        None,
        alias=Env.PUBLISH_DANDISET_ID,
        description="after a successful sort, upload the units NWB to this dandiset, which the "
        "key's user owns (it may be the source dandiset; same `DANDI_API_URL` and key; see "
        "[Publish to DANDI](results.md#publish-to-dandi))",
        json_schema_extra={"unset": "no publishing"},
    )
    quality_thresholds: QualityThresholds = Field(
        default_factory=QualityThresholds,
        alias=Env.QUALITY_THRESHOLDS,
        description="JSON overrides of the [label thresholds](results.md#quality-labels), e.g. "
        '`{"mua": {"snr": {"greater": 3}, "presence_ratio": null}}`',
        json_schema_extra={"unset": "the documented defaults"},
    )
    phy_pc_features: bool = Field(
        True,
        alias=Env.PHY_PC_FEATURES,
        description="`false` leaves phy's PC features (`pc_features.npy`, 5 PCs × a unit's "  # noqa: RUF001
        "channels per spike: the largest phy file) out; with `true` they are also left out, "
        "with the reason in run.json, when the scratch volume cannot hold them (see "
        "[Scratch](worker.md#scratch-budgeted-freed-never-shared))",
    )
    stop_grace_s: float = Field(
        DEFAULT_GRACE_S,
        alias=Env.STOP_GRACE_S,
        gt=0,
        le=MAX_GRACE_S,
        description="seconds a stop may take before the watchdog ends the run itself, with exit "
        "130 and a failed run.json (see [Stops](worker.md#stops-honoured-in-every-phase))",
    )
    ground_truth: str | None = Field(
        None,
        alias=Env.GROUND_TRUTH,
        description="score the sort against known spike trains: `units` (the input NWB's own "
        "units table) or a URI (`file://`, `s3://`, `https://`) of an NWB file whose units "
        "table holds the truth, or of a SpikeInterface sorting folder (`sorting.save`; one per "
        "part in sub-folders named like `probes/<part>/`); writes `ground_truth_score.json`. "
        "Read and checked in `open`, before the sort: see "
        "[Ground truth](worker.md#ground-truth-and-spikeforests-files)",
        json_schema_extra={"unset": "not scored"},
    )
    ground_truth_snr_threshold: float | None = Field(
        None,
        alias=Env.GROUND_TRUTH_SNR_THRESHOLD,
        description="the true units that count in the mean accuracy, precision and recall: "
        "SNR ≥ this (needs `GROUND_TRUTH`)",
        json_schema_extra={"unset": "`5`"},
    )
    ground_truth_match_score: float | None = Field(
        None,
        alias=Env.GROUND_TRUTH_MATCH_SCORE,
        description="SpikeInterface's agreement score for a match, in (0, 1]",
        json_schema_extra={"unset": "`0.5` (SpikeInterface's)"},
    )
    ground_truth_well_detected_score: float | None = Field(
        None,
        alias=Env.GROUND_TRUTH_WELL_DETECTED_SCORE,
        description="SpikeInterface's agreement score for a well-detected unit, in (0, 1]",
        json_schema_extra={"unset": "`0.8` (SpikeInterface's)"},
    )
    probe: str | None = Field(
        None,
        alias=Env.PROBE,
        description="the probe, for files whose electrodes table has no `rel_x`/`rel_y`: a "
        "probeinterface JSON (inline, or an `s3://`/`https://`/`file://` URI) or a Neuropixels "
        "part number from probeinterface's table (`NP1000`, alias `neuropixels-1.0`: bank 0, "
        "the first contacts in channel order). Used over the electrodes table's `x`/`y`, never "
        "over `rel_x`/`rel_y`; enters the run id",
    )
    data_type: DataType | None = Field(
        None,
        alias=Env.DATA_TYPE,
        description="`nwb`, `spikeglx` or `openephys`",
        json_schema_extra={"unset": "told from the file names"},
    )
    read_recording_kwargs: ReadRecordingKwargs | None = Field(
        None,
        alias=Env.READ_RECORDING_KWARGS,
        description="JSON object of the reader's options: `stream_name` (e.g. `imec0.ap`), "
        "`stream_id`, `block_index` (Open Ephys); other keys are refused",
        json_schema_extra={"unset": "every probe's AP stream"},
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what ``from_env`` passes in: never read ``os.environ`` behind the caller's back."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Validate ``env`` (default: ``os.environ``); raise :class:`ConfigError` on the first problem."""
        env = os.environ if env is None else env
        names = {e.value for e in Env}
        # An empty variable counts as unset (Batch and shells often pass VAR="").
        values = {k: v for k, v in env.items() if k in names and v != ""}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from None

    # ---- per-variable checks -----------------------------------------------------------
    @field_validator("dandiset_id", "publish_dandiset_id")
    @classmethod
    def _dandiset_id(cls, v: str | None) -> str | None:
        if v is not None and not _DANDISET_ID.match(v):
            raise ValueError(f"expected six digits like '000409', got {v!r}")
        return v

    @field_validator("read_recording_kwargs", mode="before")
    @classmethod
    def _read_recording_kwargs(cls, v: Any) -> ReadRecordingKwargs | None:
        return parse_read_recording_kwargs(v)

    @field_validator("quality_thresholds", mode="before")
    @classmethod
    def _quality_thresholds(cls, v: Any) -> QualityThresholds:
        return v if isinstance(v, QualityThresholds) else parse_quality_thresholds(v)

    @field_validator("dandiset_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError(
                f"expected 'draft' or a published version like '0.230111.1914', got {v!r}"
            )
        return v

    @field_validator("dandi_asset_path")
    @classmethod
    def _asset_path(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or ".." in v.split("/")):
            raise ValueError(f"must be a relative path inside the dandiset, got {v!r}")
        return v

    @field_validator("input_uri")
    @classmethod
    def _input_uri(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith(_INPUT_SCHEMES) or len(v.split("://", 1)[1]) < 2):
            raise ValueError(f"expected s3://, https://, http:// or file:// URI, got {v!r}")
        return v

    @field_validator("dandi_api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("dandi_api_key_secret_arn")
    @classmethod
    def _secret_arn(cls, v: str | None) -> str | None:
        if v is not None and not _SECRET_ARN.match(v):
            raise ValueError(f"expected a Secrets Manager secret ARN, got {v!r}")
        return v

    @field_validator("sorter")
    @classmethod
    def _sorter(cls, v: str) -> str:
        if v not in _available_sorters():
            raise ValueError(
                f"unknown sorter {v!r}; SpikeInterface sorters: {', '.join(_available_sorters())}"
            )
        return v

    @field_validator("sorter_params", mode="before")
    @classmethod
    def _sorter_params(cls, v: Any) -> dict[str, Any]:
        return _json_object(v) or {}

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _preprocessing(cls, v: Any, info: ValidationInfo) -> dict[str, dict[str, Any]] | None:
        steps = _json_object(v, allow_null=True)
        if steps is None:
            return None  # PREPROCESSING=null: sort the raw traces
        if not steps:  # {}: the sorter's default
            return default_preprocessing(info.data.get("sorter", DEFAULT_SORTER))
        return validate_preprocessing(steps)

    @field_validator("max_duration_s")
    @classmethod
    def _max_duration(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError(f"must be a positive number of seconds, got {v:g}")
        return v

    @field_validator("output_uri")
    @classmethod
    def _output_uri(cls, v: str) -> str:
        if not v.startswith(_OUTPUT_SCHEMES):
            raise ValueError(f"expected s3://bucket/prefix or file:///path, got {v!r}")
        if v.startswith("s3://") and not v.removeprefix("s3://").split("/")[0]:
            raise ValueError(f"no bucket in {v!r}")
        if v.startswith("file://") and not v.removeprefix("file://").startswith("/"):
            raise ValueError(f"file:// URIs need an absolute path (file:///...), got {v!r}")
        return v.rstrip("/")

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str | None) -> str | None:
        if v is not None and not is_valid_run_id(v):
            raise ValueError(f"use letters, digits, '.', '_' or '-' (max 128), got {v!r}")
        return v

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, v: str | None) -> str | None:
        if v is not None and not _INSTANCE_TYPE.match(v):
            raise ValueError(f"expected an EC2 instance type like 'g4dn.2xlarge', got {v!r}")
        return v

    @field_validator("ground_truth")
    @classmethod
    def _ground_truth(cls, v: str | None) -> str | None:
        from spikebatch.worker.ground_truth import parse_ground_truth

        return None if v is None else parse_ground_truth(v)

    @field_validator("ground_truth_snr_threshold")
    @classmethod
    def _snr_threshold(cls, v: float | None) -> float | None:
        if v is not None and not (v >= 0 and v != float("inf")):
            raise ValueError(f"must be a finite SNR >= 0, got {v:g}")
        return v

    @field_validator("ground_truth_match_score", "ground_truth_well_detected_score")
    @classmethod
    def _agreement_score(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 1:
            raise ValueError(f"must be an agreement score in (0, 1], got {v:g}")
        return v

    @field_validator("probe")
    @classmethod
    def _probe(cls, v: str | None) -> str | None:
        from spikebatch.worker.geometry import parse_probe

        if v is not None:
            parse_probe(v)
        return v

    # ---- cross-variable checks -----------------------------------------------------------
    @model_validator(mode="after")
    def _one_source(self) -> WorkerSettings:
        dandi = self.dandiset_id is not None or self.dandi_asset_path is not None
        if dandi and self.input_uri is not None:
            raise ValueError(
                f"{Env.INPUT_URI}: give either {Env.INPUT_URI} or "
                f"{Env.DANDISET_ID} + {Env.DANDI_ASSET_PATH}, not both"
            )
        if not dandi and self.input_uri is None:
            raise ValueError(
                f"{Env.INPUT_URI}: no input; set {Env.INPUT_URI} or "
                f"{Env.DANDISET_ID} + {Env.DANDI_ASSET_PATH}"
            )
        if dandi and self.dandiset_id is None:
            raise ValueError(f"{Env.DANDISET_ID}: required with {Env.DANDI_ASSET_PATH}")
        if dandi and self.dandi_asset_path is None:
            raise ValueError(f"{Env.DANDI_ASSET_PATH}: required with {Env.DANDISET_ID}")
        if dandi and self.data_type not in (None, "nwb"):
            raise ValueError(
                f"{Env.DATA_TYPE}: {self.data_type} needs {Env.INPUT_URI} (DANDI assets are NWB)"
            )
        if self.read_recording_kwargs is not None and self.data_type == "nwb":
            raise ValueError(
                f"{Env.READ_RECORDING_KWARGS}: for SpikeGLX and Open Ephys inputs; an NWB "
                f"file's series is chosen with {Env.ELECTRICAL_SERIES_PATH}"
            )
        knobs = {
            Env.GROUND_TRUTH_SNR_THRESHOLD: self.ground_truth_snr_threshold,
            Env.GROUND_TRUTH_MATCH_SCORE: self.ground_truth_match_score,
            Env.GROUND_TRUTH_WELL_DETECTED_SCORE: self.ground_truth_well_detected_score,
        }
        if self.ground_truth is None and (given := [k for k, v in knobs.items() if v is not None]):
            raise ValueError(
                f"{given[0]}: only means something with {Env.GROUND_TRUTH}; set it too"
            )
        defaults = _sorter_defaults(self.sorter)
        unknown = sorted(set(self.sorter_params) - set(defaults))
        if unknown:
            raise ValueError(
                f"{Env.SORTER_PARAMS}: unknown key {unknown[0]!r} for {self.sorter}; "
                f"valid keys: {', '.join(sorted(defaults))}"
            )
        return self

    # ---- derived values ------------------------------------------------------------------
    @property
    def source(self) -> str:
        """``dandi:<id>/<version>/<path>`` or the input URI (used in run ids and run.json)."""
        if self.input_uri is not None:
            return self.input_uri
        assert self.dandiset_id is not None and self.dandi_asset_path is not None
        return dandi_source(self.dandiset_id, self.dandiset_version, self.dandi_asset_path)

    @property
    def effective_run_id(self) -> str:
        """RUN_ID, or the id derived from the input and every setting that changes the result."""
        return self.run_id or derive_run_id(
            source=self.source,
            sorter=self.sorter,
            sorter_params=self.sorter_params,
            preprocessing=self.preprocessing,
            max_duration_s=self.max_duration_s,
            electrical_series_path=self.electrical_series_path,
            sort_by_group=self.sort_by_group,
            probe=self.probe,
            data_type=self.data_type,
            read_recording_kwargs=(
                self.read_recording_kwargs.reader_kwargs() if self.read_recording_kwargs else None
            ),
        )

    @property
    def probe_setting(self) -> ProbeSetting | None:
        """``PROBE`` parsed (validated already)."""
        from spikebatch.worker.geometry import parse_probe

        return None if self.probe is None else parse_probe(self.probe)

    @property
    def score_params(self) -> ScoreParams:
        """The ground-truth scoring knobs, SpikeInterface's defaults where unset."""
        from spikebatch.worker.scoring import ScoreParams

        given = {
            "snr_threshold": self.ground_truth_snr_threshold,
            "match_score": self.ground_truth_match_score,
            "well_detected_score": self.ground_truth_well_detected_score,
        }
        return ScoreParams(**{k: v for k, v in given.items() if v is not None})

    @property
    def full_sorter_params(self) -> dict[str, Any]:
        """SpikeInterface's defaults overlaid with SORTER_PARAMS: what run.json records."""
        return {**_sorter_defaults(self.sorter), **self.sorter_params}

    def public_dict(self) -> dict[str, Any]:
        """The settings as run.json shows them (the API key never appears)."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.dandi_api_key is not None:
            data[Env.DANDI_API_KEY] = "***"
        return data


def _one_line(exc: ValidationError) -> str:
    """The first error as ``VAR: message``; cross-field messages already start with a name."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = [str(p) for p in error.get("loc", ()) if isinstance(p, str)]
    if not loc or message.split(":", 1)[0] in {e.value for e in Env}:
        return message
    if error["type"] == "missing":
        return f"{loc[0]}: required, not set"
    if error["type"] in ("float_parsing", "float_type"):
        return f"{loc[0]}: expected a number, got {error.get('input')!r}"
    return f"{loc[0]}: {message}"

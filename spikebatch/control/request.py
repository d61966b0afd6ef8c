"""The job-request model: one validated description of "sort these recordings".

Both entry points build it: the CLI from flags or ``--request file.json``, the S3 trigger
from ``requests/*.json`` (DESIGN.md, "Job-request file"). Pure pydantic so the Lambda can
import it. Validation is strict (a JSON string is not a number) and unknown keys are
rejected, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spikebatch.input_format import DataType, ReadRecordingKwargs
from spikebatch.quality import QualityThresholds
from spikebatch.sorters import DEFAULT_SORTER, get_sorter

MAX_REQUEST_BYTES = 1024 * 1024
"""A request file larger than this is rejected unread (a request is a few hundred bytes)."""

MAX_ARRAY_SIZE = 10_000
"""AWS Batch's limit on array job size."""

MAX_CAMPAIGN_INPUTS = 100_000
"""The most recordings one request (a campaign: several arrays) may resolve to."""

DEFAULT_MAX_ATTEMPTS = 3
"""How often a campaign submits one input before a failure is final (``max_attempts_per_input``)."""

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._=+-]*"
_PREFIX_RE = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
_DANDISET_RE = re.compile(r"^\d{6}$")
_VERSION_RE = re.compile(r"^(draft|\d+\.\d{6}\.\d{4})$")
_INPUT_URI_RE = re.compile(
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S.*|https://[^/\s]+/\S*|file:///\S.*)$"
)

AssetPath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
GLOB_CHARS = "*?["
"""What makes an s3:// ``input_uri`` a glob that a campaign expands (``control.s3_inputs``)."""
_CONTROL_RE = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """The largest job the stack's instance types can place (submit Lambda's RESOURCE_LIMITS)."""

    max_vcpus: int
    max_memory_gib: float
    max_gpus: int

    @classmethod
    def from_json(cls, text: str) -> ResourceLimits:
        data = json.loads(text)
        return cls(
            max_vcpus=int(data["max_vcpus"]),
            max_memory_gib=float(data["max_memory_gib"]),
            max_gpus=int(data["max_gpus"]),
        )


_JOB_DEFINITION_SIZE = "the job definition's (`gpu_job_*`/`cpu_job_*` config)"


class Resources(BaseModel):
    """What one Batch job asks for; unset values come from the job definition (stack config)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    gpus: int | None = Field(
        None,
        ge=0,
        le=16,
        description="GPUs per job: GPU sorters need `gpus ≥ 1`, CPU sorters `0`; at most what "
        "the stack's largest instance type offers (`ResourceLimits`)",
        json_schema_extra={"unset": _JOB_DEFINITION_SIZE},
    )
    vcpus: int | None = Field(
        None,
        ge=1,
        le=448,
        description="vCPUs per job; at most what the stack's largest instance type offers "
        "(`ResourceLimits`)",
        json_schema_extra={"unset": _JOB_DEFINITION_SIZE},
    )
    memory_gib: float | None = Field(
        None,
        gt=0,
        le=24_576,
        description="memory per job (GiB); at most what the stack's largest instance type "
        "offers (`ResourceLimits`)",
        json_schema_extra={"unset": _JOB_DEFINITION_SIZE},
    )
    timeout_hours: float = Field(12, gt=0, le=14 * 24, description="per-attempt limit")
    spot: bool = Field(
        True,
        description="`true`: the default queue (spot first); `false`: the on-demand priority queue",
    )

    @field_validator("vcpus", "memory_gib", "gpus")
    @classmethod
    def _within_stack_limits(cls, value: float | None, info: ValidationInfo) -> float | None:
        limits = (info.context or {}).get("limits")
        if value is None or not isinstance(limits, ResourceLimits):
            return value
        ceiling = {
            "vcpus": limits.max_vcpus,
            "memory_gib": limits.max_memory_gib,
            "gpus": limits.max_gpus,
        }[info.field_name]
        if value > ceiling:
            raise ValueError(
                f"{value:g} is more than the stack's largest instance type offers ({ceiling:g})"
            )
        return value


class DandisetSelection(BaseModel):
    """One dandiset's part of a request: explicit asset paths, or one or several globs."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dandiset_id: str = Field(description="six digits, e.g. 000409")
    version: str = Field("draft", description="draft or a published version")
    assets: list[AssetPath] | None = Field(
        None, min_length=1, max_length=MAX_CAMPAIGN_INPUTS, description="asset paths"
    )
    asset_glob: str | None = Field(None, min_length=1, max_length=1024)
    asset_globs: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] | None = (
        Field(None, min_length=1, max_length=100, description="several globs; their union")
    )

    @field_validator("dandiset_id")
    @classmethod
    def _six_digits(cls, value: str) -> str:
        return _dandiset_id(value)

    @field_validator("version")
    @classmethod
    def _dandi_version(cls, value: str) -> str:
        return _version(value)

    @field_validator("assets")
    @classmethod
    def _plain_assets(cls, value: list[str] | None) -> list[str] | None:
        return _asset_paths(value)

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        given = [k for k in ("assets", "asset_glob", "asset_globs") if getattr(self, k) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of assets, asset_glob, asset_globs (got: {got})")
        return self

    @property
    def globs(self) -> list[str]:
        return [self.asset_glob] if self.asset_glob is not None else list(self.asset_globs or [])


def first_glob(text: str) -> int:
    """Where the first glob character is in ``text`` (-1: none)."""
    return min((i for i in map(text.find, GLOB_CHARS) if i >= 0), default=-1)


def _dandiset_id(value: str) -> str:
    if not _DANDISET_RE.match(value):
        raise ValueError(f"{value!r} is not a dandiset id (six digits, e.g. '000409')")
    return value


def _version(value: str) -> str:
    if not _VERSION_RE.match(value):
        raise ValueError(f"{value!r}: use 'draft' or a published version like 0.230111.1914")
    return value


def _asset_paths(value: list[str] | None) -> list[str] | None:
    if value is not None:
        bad = [a for a in value if a.startswith("/") or _CONTROL_RE.search(a)]
        if bad:
            raise ValueError(
                f"asset paths are relative to the dandiset, without control characters: {bad[:3]!r}"
            )
        doubles = sorted(a for a, n in Counter(value).items() if n > 1)
        if doubles:
            raise ValueError(f"listed more than once: {doubles[:5]}")
        bad = [a for a in value if ".." in a.split("/")]
        if bad:
            raise ValueError(f"'..' is not allowed in asset paths: {bad[:5]}")
    return value


_INPUTS = ("assets", "asset_glob", "asset_globs", "dandisets", "input_uri")


class JobRequest(BaseModel):
    """A job-request file. Exactly one input: ``assets``, ``asset_glob``, ``asset_globs``,
    ``dandisets`` or ``input_uri``; the campaign fields say how much of it to submit."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    dandiset_id: str | None = Field(None, description="six digits")
    version: str = Field("draft", description="`draft` or a published version")
    assets: list[AssetPath] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CAMPAIGN_INPUTS,
        description="**exactly one** of `assets` / `asset_glob` / `input_uri` (or "
        "`asset_globs`, `dandisets`): asset paths in the dandiset",
    )
    asset_glob: str | None = Field(
        None, min_length=1, max_length=1024, description="a glob the DANDI API resolves"
    )
    asset_globs: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] | None = (
        Field(
            None,
            min_length=1,
            max_length=100,
            description="instead of `asset_glob`: several globs in `dandiset_id`, their union "
            "(an asset two globs match is sorted once)",
        )
    )
    dandisets: list[DandisetSelection] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="instead of `dandiset_id` + `assets`/`asset_glob(s)`: several dandisets, "
        'each `{"dandiset_id", "version", and one of "assets", "asset_glob", "asset_globs"}`',
    )
    input_uri: str | None = Field(
        None,
        description="`s3://bucket/key` / `https://...`, where an `s3://` URI may also be a "
        "folder ending in `/` (one SpikeGLX run or Open Ephys recording; the run id's slug is "
        "the folder's name) or a glob ([S3 globs](submit.md#s3-globs-in-input_uri)); "
        "`file:///...` for run-local only",
    )
    data_type: DataType | None = Field(
        None,
        description="`nwb`, `spikeglx` or `openephys` (`DATA_TYPE`), for `input_uri` only",
        json_schema_extra={"unset": "told from the files"},
    )
    read_recording_kwargs: ReadRecordingKwargs | None = Field(
        None,
        description='the reader\'s options `{"stream_name", "stream_id", "block_index"}` '
        "(`READ_RECORDING_KWARGS`), for `input_uri` only",
        json_schema_extra={"unset": "every probe's AP stream"},
    )
    sorter: str = Field(
        DEFAULT_SORTER,
        description="a declared sorter (`spikebatch/sorters.py`): `kilosort3`, `kilosort4` "
        "(GPU), `spykingcircus2`, `tridesclous2`, `mountainsort5` (CPU job definition)",
        json_schema_extra={"unset": "the stack's `default_sorter`"},
    )
    sorter_params: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of SpikeInterface's defaults; the worker rejects unknown keys "
        "before any download",
    )
    preprocessing: dict[str, Any] | None = Field(
        None,
        description="passed to the worker as `PREPROCESSING`",
        json_schema_extra={"unset": "worker defaults"},
    )
    electrical_series_path: str | None = Field(
        None,
        min_length=1,
        description="passed to the worker as `ELECTRICAL_SERIES_PATH`",
        json_schema_extra={"unset": "worker defaults"},
    )
    sort_by_group: bool = Field(
        False,
        description="`true`: sort each channel group (shank) of each probe on its own "
        "(`SORT_BY_GROUP`; see [Several probes](worker.md#several-probes-and-shanks))",
    )
    output_prefix: str | None = Field(
        None,
        max_length=512,
        description="results go to `s3://<bucket>/results/<output_prefix>/<run-id>/` (a leading "
        "`results/` is accepted and not doubled)",
        json_schema_extra={"unset": "`s3://<bucket>/results/<run-id>/`"},
    )
    max_duration_s: float | None = Field(
        None,
        gt=0,
        description="passed to the worker as `MAX_DURATION_S`",
        json_schema_extra={"unset": "worker defaults"},
    )
    resources: Resources = Field(default_factory=Resources, description="per job")
    quality_thresholds: QualityThresholds | None = Field(
        None,
        description="overrides of the [label thresholds](results.md#quality-labels) "
        "(`QUALITY_THRESHOLDS`)",
        json_schema_extra={"unset": "the defaults"},
    )
    phy_pc_features: bool = Field(
        True, description="`false`: phy/ without PC features (`PHY_PC_FEATURES`)"
    )
    publish_dandiset_id: str | None = Field(
        None,
        description="[publish](results.md#publish-to-dandi) the units NWB to this dandiset, one "
        "you own, with the stack's DANDI key (`PUBLISH_DANDISET_ID`; the job also gets the "
        "stack's `DANDI_API_URL` for `s3://` inputs)",
    )
    # -- campaign: how much of the request to submit (not part of its identity) ---------
    max_cost_usd: float | None = Field(
        None,
        gt=0,
        description="submit **nothing** if the estimate of what would run (after skipping) is "
        "higher ([Campaigns](submit.md#campaigns))",
        json_schema_extra={"unset": "no cap"},
    )
    max_concurrent_jobs: int | None = Field(
        None,
        ge=1,
        le=MAX_ARRAY_SIZE,
        description="at most this many jobs of the campaign at once: arrays of this size, each "
        "waiting for the one before",
        json_schema_extra={"unset": "10,000 (one array)"},
    )
    retry_failed: bool = Field(
        False,
        description="submit inputs whose last run failed again, while they have been submitted "
        "fewer than `max_attempts_per_input` times",
    )
    max_attempts_per_input: int = Field(
        DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=100,
        description="how often one input may be submitted before a failure is final (with "
        "`retry_failed`)",
    )
    rerun: bool = Field(
        False, description="sort again what succeeded or failed (never what is in flight)"
    )

    @field_validator("dandiset_id", "publish_dandiset_id")
    @classmethod
    def _six_digits(cls, value: str | None) -> str | None:
        return None if value is None else _dandiset_id(value)

    @field_validator("version")
    @classmethod
    def _dandi_version(cls, value: str) -> str:
        return _version(value)

    @field_validator("input_uri")
    @classmethod
    def _fetchable_uri(cls, value: str | None) -> str | None:
        if value is not None and not _INPUT_URI_RE.match(value):
            raise ValueError(
                f"{value[:200]!r}: use s3://bucket/key, https://host/path (or file:///path locally)"
            )
        if value is not None and value.startswith("file:") and first_glob(value) >= 0:
            raise ValueError(f"{value[:200]!r}: globs (*, ?, [) are expanded in s3:// URIs only")
        return value

    @field_validator("sorter")
    @classmethod
    def _known_sorter(cls, value: str) -> str:
        get_sorter(value)  # raises with the list of known sorters
        return value

    @field_validator("assets")
    @classmethod
    def _plain_assets(cls, value: list[str] | None) -> list[str] | None:
        return _asset_paths(value)

    @field_validator("output_prefix")
    @classmethod
    def _plain_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        cleaned = value.strip("/")
        # DESIGN.md's example writes "results/my-run"; results/ is implied, so accept both.
        if cleaned == "results" or cleaned.startswith("results/"):
            cleaned = cleaned.removeprefix("results").strip("/")
        if cleaned and (not _PREFIX_RE.match(cleaned) or ".." in cleaned.split("/")):
            raise ValueError(
                "use path segments of letters, digits and ._=+- separated by '/', e.g. lab/may"
            )
        return cleaned or None

    @field_validator("resources")
    @classmethod
    def _fits_sorter(cls, value: Resources, info: ValidationInfo) -> Resources:
        sorter = info.data.get("sorter")
        if sorter is None:  # the sorter itself was invalid; that error is reported already
            return value
        spec = get_sorter(sorter)
        if spec.needs_gpu and value.gpus == 0:
            raise ValueError(f"{sorter} needs a GPU: gpus must be at least 1")
        if not spec.needs_gpu and value.gpus:
            raise ValueError(f"{sorter} runs on CPU: gpus must be 0 or left out")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        given = [k for k in _INPUTS if getattr(self, k) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of {', '.join(_INPUTS)} (got: {got})")
        if given[0] in ("assets", "asset_glob", "asset_globs") and self.dandiset_id is None:
            raise ValueError(f"{given[0]} needs dandiset_id")
        if given[0] in ("input_uri", "dandisets") and self.dandiset_id is not None:
            raise ValueError(
                f"dandiset_id goes with assets, asset_glob or asset_globs, not {given[0]}"
            )
        if given[0] != "input_uri" and self.data_type not in (None, "nwb"):
            raise ValueError(f"data_type {self.data_type!r} needs input_uri (DANDI assets are NWB)")
        if self.read_recording_kwargs is not None and self.data_type == "nwb":
            raise ValueError(
                "read_recording_kwargs is for SpikeGLX and Open Ephys inputs; an NWB file's "
                "series is chosen with electrical_series_path"
            )
        return self

    def selections(self) -> list[DandisetSelection]:
        """Every dandiset part of the request, the single-dandiset fields as one of them."""
        if self.dandisets is not None:
            return list(self.dandisets)
        if self.dandiset_id is None:
            return []
        return [
            DandisetSelection(
                dandiset_id=self.dandiset_id,
                version=self.version,
                assets=self.assets,
                asset_glob=self.asset_glob,
                asset_globs=self.asset_globs,
            )
        ]

    # -- resolved values ---------------------------------------------------------------

    @property
    def needs_gpu(self) -> bool:
        return get_sorter(self.sorter).needs_gpu

    @property
    def gpus(self) -> int:
        if not self.needs_gpu:
            return 0
        return self.resources.gpus if self.resources.gpus is not None else 1


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field-by-field complaint, as written to ``errors/<request-name>.json``."""

    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class RequestError(ValueError):
    """A request that cannot be submitted; carries the field-by-field errors."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        out.append(FieldError(loc, message))
    return out


def parse_request(
    data: bytes | str | Mapping[str, Any],
    *,
    limits: ResourceLimits | None = None,
    default_sorter: str | None = None,
) -> JobRequest:
    """Validate a request document (file bytes or an already-decoded mapping).

    ``default_sorter`` (the stack's) applies when the request names none. Raises
    :class:`RequestError` listing every problem; never anything else for bad input.
    """
    if isinstance(data, bytes | str):
        data = _decode(data)
    if not isinstance(data, Mapping):
        raise RequestError(
            [FieldError("request", f"must be a JSON object, got {type(data).__name__}")]
        )
    document = dict(data)
    if default_sorter is not None:
        document.setdefault("sorter", default_sorter)
    try:
        return JobRequest.model_validate(document, context={"limits": limits})
    except ValidationError as exc:
        raise RequestError(_field_errors(exc)) from None


def _decode(raw: bytes | str) -> Any:
    size = len(raw.encode(errors="replace") if isinstance(raw, str) else raw)
    if size > MAX_REQUEST_BYTES:
        raise RequestError(
            [FieldError("request", f"{size} bytes; a request is at most {MAX_REQUEST_BYTES}")]
        )
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise RequestError([FieldError("request", "not UTF-8 text; a request is JSON")]) from None
    except (ValueError, RecursionError) as exc:
        raise RequestError([FieldError("request", f"not valid JSON ({exc})"[:200])]) from None

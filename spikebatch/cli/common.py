"""What every ``spikebatch`` command module shares: the consoles, the one-line domain errors,
the options, and building a request from flags over a request file.

The command modules (``jobs``, ``image_commands``, ``redrive``, ``study``) import from here and
``app`` only wires them, so the CLI has no import circle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

from spikebatch import aws
from spikebatch.cli.engine import EngineError
from spikebatch.contract import DEFAULT_DANDI_API_URL
from spikebatch.control import idempotency, records, submission
from spikebatch.control.campaign_progress import CampaignNotFoundError
from spikebatch.control.dandi_assets import DandiAsset, DandiLookupError
from spikebatch.control.request import JobRequest, RequestError, parse_request
from spikebatch.control.stack_outputs import (
    StackNotFoundError,
    StackOutputs,
    load_stack_outputs,
)
from spikebatch.control.submission import DeploymentConfigError
from spikebatch.estimates import RecordingSize
from spikebatch.study.spec import StudySpecError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DOMAIN_ERRORS = (
    EngineError,
    RequestError,
    StackNotFoundError,
    DandiLookupError,
    DeploymentConfigError,
    records.RunNotFoundError,
    CampaignNotFoundError,
    StudySpecError,
    ValueError,
    submission.JobMayExist,
    idempotency.ClaimBusy,
    ClientError,
    BotoCoreError,
    OSError,
)


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """Turn a domain error into one line on stderr and exit status 1."""
    try:
        yield
    except typer.Exit:
        raise
    except DOMAIN_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if setting := aws.configuration_problem(exc):
            message = setting
        elif isinstance(exc, ClientError):
            message = f"AWS {aws.error_code(exc) or 'error'}: {aws.error_message(exc)}"
        err.print(f"error: {message}", markup=False)
        raise typer.Exit(1) from None


# -- shared options ----------------------------------------------------------------------

StackOpt = Annotated[
    str,
    typer.Option(
        "--stack-name",
        envvar="SPIKEBATCH_STACK",
        help="CloudFormation stack deployed by `cdk deploy`.",
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option("--region", envvar="AWS_REGION", help="AWS region of the stack."),
]
RequestOpt = Annotated[
    Path | None,
    typer.Option(
        "--request",
        exists=True,
        dir_okay=False,
        help="Job-request JSON file (docs/submit.md, 'The request file'); flags override its fields.",
    ),
]
DandisetOpt = Annotated[str | None, typer.Option("--dandiset", help="Dandiset id, e.g. 000409.")]
VersionOpt = Annotated[
    str | None,
    typer.Option("--dandiset-version", help="Dandiset version: draft (default) or published."),
]
AssetOpt = Annotated[
    list[str] | None,
    typer.Option("--asset", help="Asset path inside the dandiset; repeat for several."),
]
GlobOpt = Annotated[
    str | None,
    typer.Option("--glob", help="Asset glob, resolved by the DANDI API, e.g. 'sub-*/*.nwb'."),
]
InputUriOpt = Annotated[
    str | None,
    typer.Option(
        "--input-uri",
        help="Sort this instead: an NWB file (s3://, https://, file://), or an s3:// prefix or "
        "local folder holding a SpikeGLX run or an Open Ephys recording (docs/worker.md, 'Inputs').",
    ),
]
DataTypeOpt = Annotated[
    str | None,
    typer.Option("--data-type", help="nwb, spikeglx or openephys (default: told from the files)."),
]
StreamOpt = Annotated[
    str | None,
    typer.Option(
        "--stream",
        help="Sort this stream only (read_recording_kwargs.stream_name), e.g. imec0.ap.",
    ),
]
SorterOpt = Annotated[
    str | None,
    typer.Option(
        "--sorter",
        help="kilosort3, kilosort4, spykingcircus2, ... [default: the stack's, kilosort3]",
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="Sorter parameter KEY=VALUE; VALUE is JSON if it parses (Th=[9,8]), else text.",
    ),
]
SpotOpt = Annotated[
    bool | None,
    typer.Option(
        "--spot/--on-demand", help="Spot queue (falls back to on-demand) or on-demand only."
    ),
]
DandiUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--dandi-api-url",
        envvar="DANDI_API_URL",
        help=f"DANDI API base URL [default: the stack's, else {DEFAULT_DANDI_API_URL}].",
    ),
]
DandiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--dandi-api-key",
        envvar="DANDI_API_KEY",
        help="DANDI API key, to resolve globs in embargoed dandisets.",
    ),
]
DurationOpt = Annotated[
    float | None,
    typer.Option(
        "--duration-s",
        help="Recording duration per asset, seconds (default: from the asset size).",
    ),
]
ChannelsOpt = Annotated[
    int, typer.Option("--channels", min=1, help="Channels per recording, for the estimate.")
]
MaxCostOpt = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        metavar="USD",
        help="Submit nothing if the estimate of what would run (after skipping) is higher.",
    ),
]
MaxConcurrentOpt = Annotated[
    int | None,
    typer.Option(
        "--max-concurrent-jobs",
        min=1,
        help="At most this many jobs of the campaign at once: arrays of this size, each "
        "waiting for the one before (Batch dependsOn).",
    ),
]
RetryFailedOpt = Annotated[
    bool,
    typer.Option(
        "--retry-failed", help="Submit inputs whose last run failed again (up to --max-attempts)."
    ),
]
RerunOpt = Annotated[
    bool,
    typer.Option("--rerun", help="Sort again what succeeded or failed (not what is in flight)."),
]
MaxAttemptsOpt = Annotated[
    int | None,
    typer.Option("--max-attempts", min=1, help="Submissions of one input, at most [default: 3]."),
]
RunIdArg = Annotated[str, typer.Argument(help="Run id, as printed by `submit` or `status`.")]


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--param {text!r}: use KEY=VALUE, e.g. --param Th=[9,8]")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def build_request(
    request_file: Path | None,
    *,
    dandiset: str | None,
    version: str | None,
    assets: list[str] | None,
    glob: str | None,
    input_uri: str | None,
    sorter: str | None,
    params: list[str] | None,
    spot: bool | None,
    resources: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    default_sorter: str | None = None,
    data_type: str | None = None,
    stream: str | None = None,
) -> JobRequest:
    """The request file (if any) with every given flag laid over it, validated."""
    data: dict[str, Any] = {}
    if request_file is not None:
        try:
            decoded = json.loads(request_file.read_bytes())
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(f"{request_file}: not valid JSON ({exc})") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"{request_file}: a request file holds one JSON object")
        data = decoded
    flags = {
        "dandiset_id": dandiset,
        "version": version,
        "assets": list(assets) if assets else None,
        "asset_glob": glob,
        "input_uri": input_uri,
        "sorter": sorter,
        "data_type": data_type,
        **(extra or {}),
    }
    if any(flags[k] is not None for k in ("assets", "asset_glob", "input_uri")):
        for key in _INPUT_KEYS:  # a flag replaces the file's input
            data.pop(key, None)
    data |= {k: v for k, v in flags.items() if v is not None}
    if params:
        data["sorter_params"] = _merged(data.get("sorter_params"), dict(map(_parse_param, params)))
    if stream:
        data["read_recording_kwargs"] = _merged(
            data.get("read_recording_kwargs"), {"stream_name": stream}
        )
    overrides = {k: v for k, v in (resources or {}).items() if v is not None}
    if spot is not None:
        overrides["spot"] = spot
    if overrides:
        data["resources"] = _merged(data.get("resources"), overrides)
    if not any(data.get(k) for k in _INPUT_KEYS):
        raise ValueError("say what to sort: --asset, --glob, --input-uri or --request FILE")
    return parse_request(data, default_sorter=default_sorter)


_INPUT_KEYS = ("assets", "asset_glob", "asset_globs", "dandisets", "input_uri")


def _merged(from_file: Any, flags: dict[str, Any]) -> Any:
    """Flags over the file's object; a file value that is no object is left for validation."""
    if from_file is None:
        return flags
    return {**from_file, **flags} if isinstance(from_file, dict) else from_file


def recording_sizes(
    request: JobRequest, assets: list[DandiAsset], duration_s: float | None
) -> list[RecordingSize]:
    if assets:
        return [RecordingSize(a.path, a.size, duration_s) for a in assets]
    from spikebatch.control.s3_inputs import recording_bytes

    size = recording_bytes(request.input_uri) if request.input_uri else None
    return [RecordingSize(request.input_uri or "input", size, duration_s)]


def deployed_stack(stack_name: str, region: str | None) -> StackOutputs:
    """Every AWS-facing command starts here: pick the region, then read the stack outputs."""
    aws.use_region(region)
    return load_stack_outputs(stack_name, region=region)

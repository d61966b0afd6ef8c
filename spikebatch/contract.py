"""The worker container contract: env-var names, defaults, run ids, array manifests.

One home for the names that the submit path writes and the worker reads (see the
README's "Worker contract"). Pure Python so the Lambda can import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Env(StrEnum):
    """Environment variables the worker reads (DESIGN.md, "Worker container contract")."""

    DANDISET_ID = "DANDISET_ID"
    DANDISET_VERSION = "DANDISET_VERSION"
    DANDI_ASSET_PATH = "DANDI_ASSET_PATH"
    INPUT_URI = "INPUT_URI"
    DANDI_API_URL = "DANDI_API_URL"
    DANDI_API_KEY = "DANDI_API_KEY"
    DANDI_API_KEY_SECRET_ARN = "DANDI_API_KEY_SECRET_ARN"
    ELECTRICAL_SERIES_PATH = "ELECTRICAL_SERIES_PATH"
    SORTER = "SORTER"
    SORTER_PARAMS = "SORTER_PARAMS"
    PREPROCESSING = "PREPROCESSING"
    MAX_DURATION_S = "MAX_DURATION_S"
    OUTPUT_URI = "OUTPUT_URI"
    RUN_ID = "RUN_ID"
    # After a successful sort, upload the units NWB to this dandiset (same API URL and key).
    PUBLISH_DANDISET_ID = "PUBLISH_DANDISET_ID"
    # Additions to DESIGN.md (documented in the README):
    # JSON overrides of the quality-label thresholds (spikebatch.quality.QualityThresholds).
    QUALITY_THRESHOLDS = "QUALITY_THRESHOLDS"
    # "false" leaves phy's PC features (pc_features.npy, the largest phy file) out.
    PHY_PC_FEATURES = "PHY_PC_FEATURES"
    # an S3/file URI of a JSON list of per-child env overrides; child i of a Batch
    # array job applies entry AWS_BATCH_JOB_ARRAY_INDEX before validating.
    ARRAY_MANIFEST_URI = "ARRAY_MANIFEST_URI"
    # EC2 instance type, for the cost estimate in run.json (else read from IMDS).
    INSTANCE_TYPE = "INSTANCE_TYPE"
    # Where downloads and sorter scratch go (the launch template mounts NVMe here).
    SCRATCH_DIR = "SCRATCH_DIR"
    # "true": sort each channel group (shank, the electrodes table's electrode group) of
    # each series on its own; results per part under probes/<series>-<group>/.
    SORT_BY_GROUP = "SORT_BY_GROUP"
    # Seconds a stop (SIGTERM/SIGINT) may take before the worker's watchdog ends the run with
    # exit 130 itself (spikebatch.worker.stop); well inside Batch's 30 s stop timeout.
    STOP_GRACE_S = "STOP_GRACE_S"
    # Score the sorting against known spike trains: "units" (the input NWB's own units
    # table) or a URI of an NWB file or a SpikeInterface sorting folder.
    GROUND_TRUTH = "GROUND_TRUTH"
    # Its knobs: the SNR a true unit needs to count in the means, and SpikeInterface's
    # match / well-detected agreement scores.
    GROUND_TRUTH_SNR_THRESHOLD = "GROUND_TRUTH_SNR_THRESHOLD"
    GROUND_TRUTH_MATCH_SCORE = "GROUND_TRUTH_MATCH_SCORE"
    GROUND_TRUTH_WELL_DETECTED_SCORE = "GROUND_TRUTH_WELL_DETECTED_SCORE"
    # The probe, where the electrodes table has no contact positions: a probeinterface
    # JSON (inline or a URI) or a Neuropixels part number (e.g. NP1000).
    PROBE = "PROBE"
    # The input's format: nwb, spikeglx or openephys (spikebatch.input_format); unset, it is
    # told from the files. READ_RECORDING_KWARGS: the reader's options (a JSON object,
    # ReadRecordingKwargs: stream_name, stream_id, block_index).
    DATA_TYPE = "DATA_TYPE"
    READ_RECORDING_KWARGS = "READ_RECORDING_KWARGS"


ARRAY_INDEX_VAR = "AWS_BATCH_JOB_ARRAY_INDEX"
# Which image ran, for run.json: set by the Dockerfile, overridden by the job definition.
IMAGE_VAR = "SPIKEBATCH_IMAGE"
# The job log's level (the worker's logging setup).
LOG_LEVEL_VAR = "SPIKEBATCH_LOG_LEVEL"
DEFAULT_DANDI_API_URL = "https://api.dandiarchive.org/api"
DEFAULT_DANDISET_VERSION = "draft"
DEFAULT_SCRATCH_DIR = "/scratch"
# What the host knows of its instance (type, spot or on-demand), written by the launch
# template's user data as root, because the jobs may not reach the metadata service
# (stacks/imds.py); the job definitions mount its folder read-only.
INSTANCE_FACTS_DIR = "/etc/spikebatch"
INSTANCE_FACTS_FILE = f"{INSTANCE_FACTS_DIR}/instance.json"

# Key prefixes of the data bucket: the one home of the bucket layout. ``stacks/`` builds
# the IAM grants and the S3 notifications from these, and the control plane and CLI write
# and read under them, so the two sides cannot drift apart.
REQUESTS_PREFIX = "requests/"  # job-request JSON files (S3 trigger)
UPLOADS_PREFIX = "uploads/"  # raw .nwb uploads (S3 trigger)
ERRORS_PREFIX = "errors/"  # why a request was rejected
RUNS_PREFIX = "runs/"  # run records: request.json, status.json
MANIFESTS_PREFIX = "manifests/"  # array-job manifests
CAMPAIGNS_PREFIX = "campaigns/"  # campaign.json, progress shards, the cancel record
RESULTS_PREFIX = "results/"  # worker outputs (OUTPUT_URI)
CAMPAIGNS_PREFIX = "campaigns/"  # campaign records: campaigns/<campaign-id>/campaign.json
# A campaign the submit Lambda could not finish inside its time limit goes on from here: its
# request written again under this prefix (inside requests/, so the same trigger runs it).
CONTINUATIONS_PREFIX = f"{REQUESTS_PREFIX}continue/"
SCRATCH_PREFIX = "scratch/"  # expires after a week
SPEND_PREFIX = "spend/"  # the month-to-date ledger: spend/<YYYY-MM>/<shard>.json
BRAKE_KEY = "brake.json"  # why the budget brake disabled the job queues (while it holds)

# Under OUTPUT_URI/RUN_ID/: the run's manifest, written last, and the run's page (an array's
# summary under its own run id). The worker writes them; the run-record Lambda and
# `spikebatch results` read them (and the Lambda writes an array's page).
RUN_JSON = "run.json"
RUN_PAGE = "report/index.html"
# With GROUND_TRUTH: the scores beside run.json (a study collects them).
GROUND_TRUTH_SCORE = "ground_truth_score.json"


def run_results_uri(output_uri: str, run_id: str) -> str:
    """Where one run's results go: ``OUTPUT_URI/RUN_ID/`` (an array child's under its own id)."""
    return f"{output_uri.rstrip('/')}/{run_id}/"


# Batch job tag carrying the run id; state changes are mapped back to runs with it.
RUN_ID_TAG = "spikebatch:run-id"

# What the stack's DANDI key secret holds until the user puts a real key in it: the
# worker reads it as "no key" (sending it to DANDI would fail even public downloads).
UNSET_SECRET_VALUE = "UNSET"

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def json_object(raw: Any) -> Mapping[str, Any] | None:
    """A JSON text or a mapping as a mapping (``null``/None: None), or ``ValueError`` in one
    line: the one decoder of the object-valued settings (env vars and request fields)."""
    if raw is None or isinstance(raw, Mapping):
        return raw
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}")
    return value


def is_valid_run_id(run_id: str) -> bool:
    """Run ids become S3 key segments and Batch job names: keep them plain."""
    return bool(_RUN_ID_RE.match(run_id)) and ".." not in run_id


def _slug(text: str, limit: int) -> str:
    stem = text.rstrip("/").rsplit("/", 1)[-1]  # a folder's name for a prefix input
    stem = re.sub(r"(\.nwb|\.ap\.(bin|meta))$", "", stem, flags=re.IGNORECASE)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()
    return slug[:limit].strip("-") or "input"


def derive_run_id(
    *,
    source: str,
    sorter: str,
    sorter_params: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    max_duration_s: float | None = None,
    electrical_series_path: str | None = None,
    sort_by_group: bool = False,
    probe: str | None = None,
    content: str | None = None,
    data_type: str | None = None,
    read_recording_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """A deterministic run id: readable slug of the input + sorter + a params hash.

    The same input with the same settings gives the same id, so a rerun replaces the
    earlier run (DESIGN.md: reruns overwrite failed/partial runs, never mix two).
    ``source`` is e.g. ``dandi:000409/draft/sub-X/sub-X_ecephys.nwb`` or an input URI.
    ``sort_by_group``, ``probe``, ``data_type`` and ``read_recording_kwargs`` enter the hash
    only when set, so earlier ids stay what
    they were. (A ground truth does not: scoring does not change the sorting.)
    ``content`` (a study's: the recording's digest, e.g. ``sha256:...``) enters it when set,
    so a recording whose bytes changed gets a new run id while its source stays the same.
    """
    settings = {
        "source": source,
        "sorter": sorter,
        "sorter_params": dict(sorter_params or {}),
        "preprocessing": preprocessing,
        "max_duration_s": max_duration_s,
        "electrical_series_path": electrical_series_path,
    }
    if sort_by_group:
        settings["sort_by_group"] = True
    if probe:
        settings["probe"] = probe
    if content:
        settings["content"] = content
    if data_type:
        settings["data_type"] = data_type
    if read_recording_kwargs:
        settings["read_recording_kwargs"] = dict(read_recording_kwargs)
    payload = json.dumps(
        settings,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
    return f"{_slug(source, 60)}-{_slug(sorter, 20)}-{digest}"


def dandi_source(dandiset_id: str, version: str, asset_path: str) -> str:
    """The canonical ``source`` string of a DANDI asset (used in run ids and run.json)."""
    return f"dandi:{dandiset_id}/{version}/{asset_path}"


def apply_array_child(
    environ: Mapping[str, str], manifest: list[Mapping[str, str]]
) -> dict[str, str]:
    """Overlay the array child's entry from ``manifest`` on ``environ``.

    Outside an array job (no AWS_BATCH_JOB_ARRAY_INDEX) the environment is returned as is.
    """
    env = dict(environ)
    raw_index = env.get(ARRAY_INDEX_VAR)
    if raw_index is None:
        return env
    try:
        index = int(raw_index)
    except ValueError:
        raise ValueError(f"{ARRAY_INDEX_VAR}: not an integer: {raw_index!r}") from None
    if not 0 <= index < len(manifest):
        raise ValueError(
            f"{ARRAY_INDEX_VAR}: index {index} outside the manifest's {len(manifest)} entries"
        )
    entry = manifest[index]
    unknown = sorted(set(entry) - {e.value for e in Env})
    if unknown:
        raise ValueError(f"{Env.ARRAY_MANIFEST_URI}: unknown variables in entry {index}: {unknown}")
    env.update({k: str(v) for k, v in entry.items()})
    return env

"""The worker pipeline: config -> fetch -> open -> preprocess -> sort -> postprocess -> export -> publish.

Each stage is timed and named; any failure is recorded in run.json with its stage, and
the exit code is non-zero. The same :func:`main` runs in ``docker run``, on Batch and
in-process (``make demo``, the tests): it reads only the environment it is given.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from spikebatch import transfer
from spikebatch.contract import Env, apply_array_child
from spikebatch.worker import fetch as fetch_stage
from spikebatch.worker.errors import ExitCode, StageError, WorkerError, one_line
from spikebatch.worker.instance import detect_instance
from spikebatch.worker.jobkw import job_kwargs
from spikebatch.worker.manifest import new_record, now
from spikebatch.worker.publish import Publisher
from spikebatch.worker.settings import ConfigError, WorkerSettings

log = logging.getLogger("spikebatch.worker")

STAGES = ("config", "fetch", "open", "preprocess", "sort", "postprocess", "export", "publish")


class Interrupted(WorkerError):
    """SIGTERM/SIGINT: Batch is stopping the job (spot reclaim, timeout, cancel)."""


#: The stop signal this process received, if any. Sorters run our code inside their own
#: ``try`` blocks (SpikeInterface wraps whatever a sorter raises in ``SpikeSortingError``),
#: so the :class:`Interrupted` raised by the handler may reach us as another error; this
#: flag is how a stop is still reported as a stop (exit 130), whatever wrapped it.
_stopped_by: str | None = None


def _stop_message(signal_name: str) -> str:
    return (
        f"stopped by {signal_name}: the job was stopped (docker stop, a Batch cancel or "
        "terminate, the job timeout or a spot reclaim); rerun it with the same RUN_ID"
    )


@dataclass
class Outcome:
    """What :func:`run` did: the exit code, the final manifest, where results went."""

    exit_code: ExitCode
    record: dict[str, Any] | None = None
    destination: str | None = None
    message: str = ""
    scratch: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def load_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with this array child's manifest entry applied (before validation)."""
    env = dict(environ)
    manifest_uri = env.get(Env.ARRAY_MANIFEST_URI)
    if not manifest_uri:
        return env
    try:
        manifest = json.loads(transfer.read_bytes(manifest_uri))
    except (transfer.TransferError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{Env.ARRAY_MANIFEST_URI}: cannot read {manifest_uri}: {exc}") from None
    if not isinstance(manifest, list) or not all(isinstance(e, dict) for e in manifest):
        raise ConfigError(f"{Env.ARRAY_MANIFEST_URI}: must hold a JSON list of objects")
    try:
        return apply_array_child(env, manifest)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _redact(url: str) -> str:
    """Drop query strings (pre-signed URLs carry credentials in them)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class _Run:
    """One run's mutable state: manifest, timings and the stage in progress."""

    def __init__(self, settings: WorkerSettings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.run_id = settings.effective_run_id
        self.started = time.monotonic()
        self.record = new_record(settings, self.run_id, dict(environ))
        self.publisher = Publisher(settings.output_uri, self.run_id)
        self.scratch = settings.scratch_dir / self.run_id
        self.results = self.scratch / "results"
        self.job_kwargs = job_kwargs()
        self.began_publishing = False

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.record["stage"] = name
        log.info("stage %s: start", name)
        if self.began_publishing:  # run.json shows the stage in progress (and the timings)
            self.checkpoint()
        t0 = time.monotonic()
        try:
            yield
        except (StageError, Interrupted):
            raise
        except (WorkerError, transfer.TransferError) as exc:
            raise StageError(name, str(exc)) from exc
        except Exception as exc:
            log.exception("stage %s: unexpected error", name)
            raise StageError(name, one_line(exc)) from exc
        finally:
            seconds = time.monotonic() - t0
            timings = self.record["timings_s"]
            timings[name] = round(timings.get(name, 0.0) + seconds, 2)  # publish runs twice
            self.record["timings_s"] = {s: timings[s] for s in STAGES if s in timings}
            log.info("stage %s: %.1f s", name, seconds)

    def checkpoint(self) -> None:
        """Rewrite run.json (still running) so readers see progress stage by stage.

        Best effort: a hiccup here must not fail a sort; the final write is what counts.
        """
        self.record["updated_at"] = now()
        try:
            self.publisher.write_record(self.record)
        except Exception as exc:
            log.warning("could not update %s: %s", self.publisher.run_json_uri, exc)

    def set_cost(self) -> None:
        from spikebatch.cost import estimate, instance_price_per_hour

        info = self.record.get("instance") or {}
        instance_type, spot = info.get("type"), bool(info.get("spot"))
        price = instance_price_per_hour(instance_type, spot) if instance_type else None
        wall = time.monotonic() - self.started
        estimated = None
        rec_input = self.record["input"]
        if price is not None and rec_input.get("sorted_duration_s"):
            estimated = estimate(
                rec_input["sorted_duration_s"],
                rec_input["n_channels"],
                instance_type=instance_type,
                spot=spot,
                sorter=self.settings.sorter,
                input_bytes=rec_input.get("size"),
            ).as_dict()
        self.record["cost"] = {
            "instance_type": instance_type,
            "spot": spot,
            "usd_per_hour": price,
            "wall_s": round(wall, 1),
            "actual_usd": round(price * wall / 3600.0, 4) if price is not None else None,
            "estimated": estimated,
        }


def run(settings: WorkerSettings, environ: Mapping[str, str]) -> Outcome:
    """Run every stage after config; never raises for a failed job, returns its outcome."""
    import spikeinterface as si

    job = _Run(settings, environ)
    si.set_global_job_kwargs(**job.job_kwargs)
    log.info("run %s: %s -> %s", job.run_id, settings.source, job.publisher.dest)
    try:
        with job.stage("config"):
            from spikebatch.worker.sort import ensure_installed

            job.record["sorter"]["version"] = ensure_installed(settings.sorter)
            info = detect_instance(settings.instance_type)
            job.record["instance"] = {
                "type": info.instance_type,
                "spot": info.spot,
                "source": info.source,
            }
            if job.results.exists():
                shutil.rmtree(job.results)
            job.results.mkdir(parents=True)
        with job.stage("publish"):
            job.publisher.begin(job.record)
            job.began_publishing = True
        _run_stages(job)
    except (StageError, Interrupted) as exc:
        return _fail(job, _as_stop(job, exc))
    except Exception as exc:  # a bug between stages: still a record and a clean exit code
        log.exception("unexpected error")
        error = StageError(str(job.record["stage"]), f"{type(exc).__name__}: {exc}")
        return _fail(job, _as_stop(job, error))
    message = (
        f"succeeded: {job.record['units']['count']} units -> {job.publisher.dest}/ "
        f"({', '.join(f'{k} {v:.1f}s' for k, v in job.record['timings_s'].items())})"
    )
    shutil.rmtree(job.scratch, ignore_errors=True)
    return Outcome(
        ExitCode.OK, job.record, job.publisher.dest, message, None, dict(job.record["timings_s"])
    )


def _run_stages(job: _Run) -> None:
    from spikebatch.worker import export, postprocess, preprocess, recording, report, sort

    settings, rec_input = job.settings, job.record["input"]
    with job.stage("fetch"):
        resolved = fetch_stage.resolve(settings)
        rec_input.update(url=_redact(resolved.url), dandi_asset_id=resolved.dandi_asset_id)
        downloaded = fetch_stage.fetch(resolved, job.scratch)
        rec_input.update(
            size=downloaded.size,
            digest={
                "name": downloaded.digest_name,
                "value": downloaded.digest_value,
                "verified": downloaded.digest_name is not None,
            },
            download_s=round(downloaded.seconds, 2),
            resumed_bytes=downloaded.resumed_bytes,
        )
    with job.stage("open"):
        series = recording.choose_series(downloaded.path, settings.electrical_series_path)
        raw = recording.open_recording(downloaded.path, series)
        session = recording.read_session(downloaded.path)
        rec_input.update(
            electrical_series_path=series,
            n_channels=raw.get_num_channels(),
            sampling_frequency=raw.sampling_frequency,
            duration_s=round(raw.get_total_duration(), 3),
            session_identifier=session.identifier,
        )
    with job.stage("preprocess"):
        traces, applied = preprocess.preprocess(
            raw, settings.preprocessing, max_duration_s=settings.max_duration_s
        )
        job.record["preprocessing"]["applied"] = applied
        rec_input["sorted_duration_s"] = round(traces.get_total_duration(), 3)
        traces = preprocess.materialize(traces, job.scratch / "preprocessed", job.job_kwargs)
    job.set_cost()
    with job.stage("sort"):
        sorting = sort.run_sort(
            traces, settings.sorter, settings.sorter_params, job.scratch / "sorter", job.job_kwargs
        )
    with job.stage("postprocess"):
        analyzer = postprocess.analyze(sorting, traces, job.scratch / "analyzer", job.job_kwargs)
        metrics = postprocess.quality_metrics(analyzer)
        postprocess.write_quality_metrics(metrics, job.results / "quality_metrics.csv")
        job.record["units"] = {
            "count": sorting.get_num_units(),
            "quality_metrics_rows": len(metrics),
            "snr_ge_5": int((metrics["snr"] >= 5).sum()) if "snr" in metrics else None,
            "spikes": int(sorting.count_total_num_spikes()),
        }
    with job.stage("export"):
        sorting.save(folder=job.results / "sorting", overwrite=True)
        export.write_units_nwb(
            analyzer,
            session,
            job.results / "units.nwb",
            source=settings.source,
            sorter=settings.sorter,
        )
        job.record["nwbinspector"] = export.inspect_units_nwb(job.results / "units.nwb")
        title = f"{settings.sorter} · {Path(rec_input['source']).name}"
        report.write_report(analyzer, metrics, job.results / "report", title=title)
    with job.stage("publish"):
        job.record["outputs"] = sorted(
            p.relative_to(job.results).as_posix() for p in job.results.rglob("*") if p.is_file()
        )
        job.publisher.upload(job.results)
        job.record.update(status="succeeded", stage="done", finished_at=now(), updated_at=now())
        job.set_cost()
        job.publisher.write_record(job.record)


def _as_stop(job: _Run, exc: WorkerError) -> WorkerError:
    """A failure that a stop signal caused is reported as the stop, not as what wrapped it."""
    if _stopped_by is None or isinstance(exc, Interrupted):
        return exc
    stage = getattr(exc, "stage", job.record.get("stage"))
    stopped = Interrupted(_stop_message(_stopped_by))
    stopped.stage = stage  # type: ignore[attr-defined]
    return stopped


def _fail(job: _Run, exc: BaseException) -> Outcome:
    if isinstance(exc, Interrupted):
        # One stop is enough: a second SIGTERM must not cut the failure record short.
        _ignore_stop_signals()
    stage = getattr(exc, "stage", job.record.get("stage"))
    message = getattr(exc, "message", str(exc))
    job.record.update(
        status="failed",
        finished_at=now(),
        updated_at=now(),
        error={"stage": stage, "message": message, "type": type(exc.__cause__ or exc).__name__},
    )
    job.set_cost()
    try:
        if job.began_publishing:
            job.publisher.write_record(job.record)
        else:  # failed before run.json existed: clear an earlier run first, never mix two
            job.publisher.begin(job.record)
    except Exception as write_exc:  # the output itself is unreachable: say so, still exit 1
        log.error(
            "could not write run.json (failed) to %s: %s", job.publisher.run_json_uri, write_exc
        )
    log.info("scratch kept for inspection: %s", job.scratch)
    code = ExitCode.INTERRUPTED if isinstance(exc, Interrupted) else ExitCode.FAILED
    return Outcome(
        code,
        job.record,
        job.publisher.dest,
        f"failed in {stage}: {message}",
        job.scratch,
        dict(job.record["timings_s"]),
    )


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    global _stopped_by
    _stopped_by = signal.Signals(signum).name
    log.warning("received %s: stopping", _stopped_by)
    raise Interrupted(_stop_message(_stopped_by))


def _ignore_stop_signals() -> None:
    if _in_main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("SPIKEBATCH_LOG_LEVEL", "INFO"),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    logging.getLogger("spikebatch").setLevel(logging.INFO)


def main(environ: Mapping[str, str] | None = None) -> int:
    """The container entrypoint: validate everything, run, report one line, return the exit code."""
    configure_logging()
    environ = os.environ if environ is None else environ
    try:
        settings = WorkerSettings.from_env(load_environment(environ))
    except ConfigError as exc:
        print(f"spikebatch-worker: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    global _stopped_by
    _stopped_by = None
    previous = {}
    if _in_main_thread():
        previous = {
            s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)
        }
    try:
        outcome = run(settings, environ)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stream = sys.stdout if outcome.exit_code == ExitCode.OK else sys.stderr
    print(f"spikebatch-worker: {outcome.message}", file=stream)
    return int(outcome.exit_code)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

"""The worker pipeline: config -> fetch -> open -> preprocess -> sort -> postprocess -> export -> publish.

Each stage is timed and named; any failure is recorded in run.json with its stage, and
the exit code is non-zero. The same :func:`main` runs in ``docker run``, on Batch and
in-process (``make demo``, the tests): it reads only the environment it is given.

A run has one or more *parts* (a probe's series, or one shank of it): every part's traces
are written for its sorter first, then the NWB is freed, then each part is sorted, analyzed
(quality metrics and labels) and exported (sorting/, phy/, figures) in turn, its scratch
freed before the next (``spikebatch.scratch`` bounds what is held; the budget is checked in
``fetch``, before the download). The publish stage uploads the units to DANDI when asked,
then the results, then the run's page, and run.json last.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from spikebatch import transfer
from spikebatch.contract import LOG_LEVEL_VAR, RUN_PAGE, Env, apply_array_child
from spikebatch.quality import LABELS
from spikebatch.worker import fetch as fetch_stage
from spikebatch.worker import folder_input, kept_sort, stop
from spikebatch.worker.errors import ExitCode, Interrupted, StageError, WorkerError, one_line
from spikebatch.worker.instance import detect_instance
from spikebatch.worker.jobkw import job_kwargs
from spikebatch.worker.labels import labels_record
from spikebatch.worker.manifest import new_record, now
from spikebatch.worker.publish import Publisher
from spikebatch.worker.scratch import RunScratch, ScratchMeter, deleted_but_open, tree_bytes
from spikebatch.worker.settings import ConfigError, WorkerSettings

log = logging.getLogger("spikebatch.worker")

STAGES = ("config", "fetch", "open", "preprocess", "sort", "postprocess", "export", "publish")


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
        self.run_scratch = RunScratch(settings.scratch_dir, self.run_id)
        self.scratch = self.run_scratch.path
        self.results = self.scratch / "results"
        self.meter = ScratchMeter(self.scratch)
        #: On Batch the instance is reused: a run removes its scratch however it ends.
        self.on_batch = bool(environ.get("AWS_BATCH_JOB_ID"))
        self.job_kwargs = job_kwargs()
        self.began_publishing = False
        self.part: str | None = None  # the part being sorted, when a run has several
        self.pc_bytes_written = 0  # phy's PC features so far (sized at export, not planned)
        self.kept: kept_sort.KeptSorts | None = None  # an earlier failed run's sorts
        self.stage_started = time.monotonic()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.record["stage"] = name
        self.meter.set_stage(name)
        log.info("stage %s: start%s", name, f" ({self.part})" if self.part else "")
        if self.began_publishing:  # run.json shows the stage in progress (and the timings)
            self.checkpoint()
        t0 = self.stage_started = time.monotonic()
        try:
            yield
        except (StageError, Interrupted):
            raise
        except (WorkerError, transfer.TransferError) as exc:
            raise StageError(name, self._in_part(str(exc))) from exc
        except Exception as exc:
            log.exception("stage %s: unexpected error", name)
            raise StageError(name, self._in_part(one_line(exc))) from exc
        finally:
            seconds = time.monotonic() - t0
            timings = self.record["timings_s"]
            timings[name] = round(timings.get(name, 0.0) + seconds, 2)  # publish runs twice
            self.record["timings_s"] = {s: timings[s] for s in STAGES if s in timings}
            log.info("stage %s: %.1f s", name, seconds)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One step after the sort (``post_sort``): its seconds into run.json's
        ``post_sort_s``, summed over parts (where the post-sort time of a large sort goes)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            steps = self.record.setdefault("post_sort_s", {})
            steps[name] = round(steps.get(name, 0.0) + time.monotonic() - t0, 2)

    def _in_part(self, message: str) -> str:
        return f"{self.part}: {message}" if self.part else message

    def check_scratch(self, plan: Any, basis: str) -> None:
        """The scratch budget against the free space (plus what this run already holds)."""
        from spikebatch.worker import budget
        from spikebatch.worker.scratch import free_bytes

        available = free_bytes(self.scratch) + tree_bytes(self.scratch)
        where = self.settings.scratch_dir
        checked = budget.check(plan, available, basis, self.settings, where)
        self.record["scratch"]["plan"] = checked.as_dict()
        budget.require(checked, self.settings, where)

    def record_scratch(self) -> None:
        """run.json's measured scratch: the peak overall and per stage."""
        self.record["scratch"].update(
            peak_bytes=self.meter.peak_bytes,
            stage_peak_bytes=dict(self.meter.stage_peaks),
        )

    def checkpoint(self) -> None:
        """Rewrite run.json (still running) so readers see progress stage by stage.

        Best effort: a hiccup here must not fail a sort; the final write is what counts.
        """
        self.record["updated_at"] = now()
        try:
            self.publisher.write_record(self.record)
        except Exception as exc:
            log.warning("could not update %s: %s", self.publisher.run_json_uri, exc)

    def write_stopped(self, message: str) -> None:
        """The watchdog's record of a stop the main thread did not honour in time (its own
        thread: it works on a copy, and never after a final record)."""
        record = stop.snapshot(self.record)
        record.update(
            status="failed",
            finished_at=now(),
            updated_at=now(),
            error={"stage": record.get("stage"), "message": message, "type": "Interrupted"},
            stop={"by": "watchdog", "grace_s": stop.grace_s(), **(stop.stop_reason() or {})},
        )
        if self.began_publishing:
            self.publisher.write_record(record, final=True)
        else:  # before run.json existed: clear an earlier run first, never mix two
            self.publisher.begin(record, final=True)

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
                preprocessing=self.settings.preprocessing,
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
    job = _Run(settings, environ)
    stop.track(lambda: job.record.get("stage"), job.write_stopped)
    log.info("run %s: %s -> %s", job.run_id, settings.source, job.publisher.dest)
    try:
        with job.stage("config"):
            import spikeinterface as si

            si.set_global_job_kwargs(**job.job_kwargs)
            from spikebatch.worker.sort import ensure_installed

            job.record["sorter"]["version"] = ensure_installed(settings.sorter)
            info = detect_instance(settings.instance_type)
            job.record["instance"] = {
                "type": info.instance_type,
                "spot": info.spot,
                "source": info.source,
            }
            removed = job.run_scratch.claim()
            job.record["scratch"] = {"dir": str(job.scratch), "removed_stale_runs": removed}
            _clear_own_scratch(job)
            job.results.mkdir(parents=True)
        with job.meter:
            with job.stage("publish"):
                # What an earlier failed run of this RUN_ID kept, before its output is cleared.
                job.kept = kept_sort.fetch_kept(
                    job.publisher.previous_record(), job.publisher.dest, job.scratch
                )
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
    job.run_scratch.release(remove=True)
    return Outcome(
        ExitCode.OK, job.record, job.publisher.dest, message, None, dict(job.record["timings_s"])
    )


def _clear_own_scratch(job: _Run) -> None:
    """An earlier attempt of this RUN_ID on this host: keep its download (verified again
    before reuse, or resumed), clear the rest."""
    for child in job.scratch.iterdir():
        if child.name != "input":
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


def _run_stages(job: _Run) -> None:
    from spikebatch.worker import export, ground_truth, recording

    settings, rec_input = job.settings, job.record["input"]
    with job.stage("fetch"):
        if folder_input.is_folder_input(settings):
            source, series = _fetch_folder(job)
        else:
            source, series = _fetch_nwb(job)
    with job.stage("open"):
        session = recording.read_session(source, series)
        parts = recording.plan_parts(
            source, series, by_group=settings.sort_by_group, probe=settings.probe_setting
        )
        rec_input.update(
            data_type=source.data_type,
            electrical_series_path=series[0].path if len(series) == 1 else None,
            electrical_series_paths=[s.path for s in series],
            n_channels=sum(s.n_channels for s in series),
            sampling_frequency=series[0].rate_hz,
            duration_s=round(max(s.n_frames / (s.rate_hz or 30_000.0) for s in series), 3),
            session_identifier=session.identifier,
            series=recording.series_record(parts),
        )
        scorer = ground_truth.prepare(settings, source, parts, job.scratch)  # before any sort
        job.record["ground_truth"] = scorer and scorer.opened()
    with job.stage("preprocess"):
        traces = _write_sorter_inputs(job, source, parts)
        job.record["scratch"]["raw_bytes"] = sum(
            f.stat().st_size for f in (job.scratch / "preprocessed").rglob("*.raw")
        )
        _free_input(job, source)
    job.set_cost()
    units_nwb = export.UnitsNwb(session, source=settings.source, sorter=settings.sorter)
    job.record["parts"] = []
    job.record["phy"] = []
    for i, part in enumerate(parts):
        job.part = part.key or None
        last = i == len(parts) - 1
        _sort_part(job, part, traces.pop(part.key), units_nwb, last=last, scorer=scorer)
    job.part = None
    if scorer is not None:
        scorer.finish(job.results, job.record)
    job.record["units"] = _total_units([p["units"] for p in job.record["parts"]])
    job.record["labels"] = labels_record(job.record["units"]["labels"], settings.quality_thresholds)
    with job.stage("export"):
        units_nwb.write(job.results / "units.nwb")
        job.record["nwbinspector"] = export.inspect_units_nwb(
            job.results / "units.nwb",
            tolerated=() if source.is_nwb else ("check_subject_exists",),
        )
    with job.stage("publish"):
        _publish(job, parts)


def _fetch_nwb(job: _Run) -> tuple[Any, list[Any]]:
    """One NWB file (a DANDI asset or INPUT_URI): sized from its remote metadata, fetched,
    verified, and its series chosen from the file itself."""
    from spikebatch.worker import budget, layout, recording

    settings, rec_input = job.settings, job.record["input"]
    resolved = fetch_stage.resolve(settings)
    rec_input.update(url=_redact(resolved.url), dandi_asset_id=resolved.dandi_asset_id)
    # Before any byte of the recording: its size and (remote) shape against free space.
    early = budget.before_download(
        resolved.url, resolved.expected_size, resolved.filename, settings
    )
    if early is not None:
        job.check_scratch(*early)
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
    # The exact shape, from the file itself, before anything is converted.
    nwb = downloaded.path
    series = layout.choose(layout.local_series(nwb), settings.electrical_series_path, nwb.name)
    job.check_scratch(budget.plan_for(downloaded.size, series, settings), "file")
    return recording.Source(nwb), series


def _fetch_folder(job: _Run) -> tuple[Any, list[Any]]:
    """A SpikeGLX run or Open Ephys recording (``folder_input``): its metadata first, the
    scratch budget from it, then only the AP streams' files, each verified."""
    from spikebatch.worker import acquisition, budget, recording

    settings, rec_input = job.settings, job.record["input"]
    planned = folder_input.plan(settings, job.scratch)
    rec_input.update(url=_redact(planned.uri), size=planned.total_bytes)
    job.check_scratch(budget.plan_for(planned.total_bytes, planned.series, settings), "header")
    started = time.monotonic()
    folder, files = folder_input.fetch(planned, job.scratch)
    verified = [f for f in files if f.get("verified")]
    rec_input.update(
        files=files,
        digest={
            "name": "per file",
            "value": None,
            "verified": bool(files) and len(verified) == len(files),
        },
        download_s=round(time.monotonic() - started, 2),
        skipped_streams=planned.skipped,
    )
    kwargs = (
        settings.read_recording_kwargs.reader_kwargs() if settings.read_recording_kwargs else {}
    )
    source = recording.Source(
        folder, planned.data_type, kwargs, in_place=planned.in_place is not None
    )
    series = acquisition.spike_band(planned.data_type, folder, kwargs, planned.uri)
    job.check_scratch(budget.plan_for(planned.total_bytes, series, settings), "file")
    return source, series


def _publish(job: _Run, parts: list[Any]) -> None:
    """DANDI (when asked), the results, the run's page, and run.json last.

    The page goes up after every other object, so a page that says "succeeded" is never
    beside a partial upload; a publication to DANDI that fails leaves the run succeeded
    with ``publish.status = failed`` and the reason.
    """
    from spikebatch.worker import run_page

    settings = job.settings
    if settings.publish_dandiset_id:
        job.record["publish"] = _publish_to_dandi(job)
    files = [p.relative_to(job.results).as_posix() for p in job.results.rglob("*") if p.is_file()]
    job.record["outputs"] = sorted({*files, RUN_PAGE})
    job.publisher.upload(job.results)
    job.record.update(status="succeeded", stage="done", finished_at=now(), updated_at=now())
    job.set_cost()
    job.record_scratch()
    probes = [(p.key, job.results / "probes" / p.key) for p in parts if p.key]
    timings = dict(job.record["timings_s"])  # this stage's time so far (DANDI, the upload)
    timings["publish"] = round(timings.get("publish", 0.0) + _since(job.stage_started), 2)
    page = run_page.write_run_page(
        job.results, {**job.record, "timings_s": timings}, probes or None
    )
    job.publisher.write_page(page.read_text(encoding="utf-8"))
    job.publisher.write_record(job.record, final=True)


def _since(t0: float) -> float:
    return time.monotonic() - t0


def _publish_to_dandi(job: _Run) -> dict[str, Any]:
    """units.nwb to PUBLISH_DANDISET_ID (``dandi_publish``); never raises for DANDI's sake."""
    from spikebatch.worker import dandi_publish

    settings = job.settings
    assert settings.publish_dandiset_id is not None
    return dandi_publish.publish_or_failure(
        job.results / "units.nwb",
        dandiset_id=settings.publish_dandiset_id,
        api_url=settings.dandi_api_url,
        # Read only now: a key that cannot be read fails the publication, not the run.
        token=lambda: fetch_stage.dandi_api_key(settings),
        record=job.record,
        staging=job.scratch / "dandi-staging",
    )


def _write_sorter_inputs(job: _Run, source: Any, parts: list[Any]) -> dict[str, Any]:
    """Each part's preprocessing chain, written once to an int16 binary in scratch.

    Runs in its own frame so that the lazy chains (which hold the NWB open) are gone when
    it returns and the NWB can really be freed.
    """
    from spikebatch.worker import preprocess, recording

    settings = job.settings
    written = {}
    for part in parts:
        job.part = part.key or None
        raw = recording.open_part(source, part)
        chain, applied = preprocess.preprocess(
            raw,
            settings.preprocessing,
            max_duration_s=settings.max_duration_s,
        )
        job.record["preprocessing"]["applied"] = applied
        job.record["input"]["sorted_duration_s"] = round(chain.get_total_duration(), 3)
        folder = job.scratch / "preprocessed" / (part.key or "traces")
        written[part.key] = preprocess.materialize(chain, folder, job.job_kwargs)
    job.part = None
    return written


def _free_input(job: _Run, source: Any) -> None:
    """Delete the input once every part's traces and the session's metadata are out (a
    local folder read in place is the user's: it stays)."""
    job.meter.sample()  # the convert stage's peak, with the NWB still here
    gc.collect()  # recordings that held the file open
    if source.in_place:
        return
    size = tree_bytes(source.path) if source.path.is_dir() else source.path.stat().st_size
    if source.path.is_dir():
        shutil.rmtree(source.path)
    else:
        source.path.unlink()
    held = deleted_but_open(job.scratch)
    job.record["scratch"]["deleted_but_open"] = held
    if held:
        log.warning("scratch: %s deleted but still open; its space is not free yet", held)
    log.info("scratch: freed the input (%.1f MB): every part's traces are out", size / 1e6)


def _sort_part(
    job: _Run, part: Any, traces: Any, units_nwb: Any, *, last: bool, scorer: Any = None
) -> None:
    """Sort one part, analyze and label it, write its results; then free its scratch."""
    from spikebatch.worker import post_sort, sort

    settings = job.settings
    key = part.key or "traces"
    where = job.results / "probes" / part.key if part.key else job.results
    sorter_folder = job.scratch / "sorter" / key
    analyzer_folder = job.scratch / "analyzer" / key
    with job.stage("sort"):
        kept = job.kept and job.kept.for_part(f"probes/{part.key}" if part.key else "", job.record)
        if kept:  # an earlier failed run's sort of the same input, sorter and parameters
            sorting = sort.load_sorting(kept)  # into memory: its folder goes now
            shutil.rmtree(kept, ignore_errors=True)
            job.kept.reused(job.record, part.key or None)
            log.info("sort: reused the sorting the failed run of %s kept", job.kept.failed_at)
        else:
            cpu_before = cpu_seconds()
            sorting = sort.run_sort(
                traces, settings.sorter, settings.sorter_params, sorter_folder, job.job_kwargs
            )
            cpu = job.record.setdefault("cpu_s", {})
            cpu["sort"] = round(cpu.get("sort", 0.0) + cpu_seconds() - cpu_before, 2)
            job.meter.sample()  # the sorter's peak, before its copy goes
            sort.free_leftovers(settings.sorter, sorter_folder)
        with job.step("sorting"):
            post_sort.save_sorting(sorting, where)  # kept if a later stage fails
    with job.stage("postprocess"):
        analyzed = post_sort.analyze_and_label(
            sorting,
            traces,
            analyzer_folder,
            where,
            job.job_kwargs,
            settings.quality_thresholds,
            step=job.step,
        )
        metrics = analyzed.metrics
        units = {
            "count": sorting.get_num_units(),
            "quality_metrics_rows": len(metrics),
            "snr_ge_5": int((metrics["snr"] >= 5).sum()) if "snr" in metrics else None,
            "spikes": int(sorting.count_total_num_spikes()),
            "labels": analyzed.unit_labels.counts(),
        }
        if scorer is not None:  # GROUND_TRUTH: this part against its own true units
            applied = job.record["preprocessing"]["applied"]
            scorer.score_part(part.key, sorting, traces, applied, where)
    with job.stage("export"):
        title = f"{settings.sorter} · {Path(job.record['input']['source']).name}"
        phy = post_sort.write_results(
            analyzed,
            where,
            units_nwb=units_nwb,
            part=part.key,
            title=f"{title} · {part.key}" if part.key else title,
            thresholds=settings.quality_thresholds,
            export_phy=lambda analyzer, unit_labels: _export_phy(
                job, analyzer, unit_labels, part, where, last=last
            ),
            step=job.step,
        )
        job.record["phy"].append(phy)
    job.record.setdefault("parts", []).append(
        {
            "key": part.key,
            "electrical_series_path": part.series.path,
            "group": part.group,
            "n_channels": traces.get_num_channels(),
            "electrode_groups": sorted({str(g) for g in traces.get_channel_groups()}),
            "units": units,
            "results": f"probes/{part.key}/" if part.key else "",
        }
    )
    job.meter.sample()
    # Its results are out: free its traces, sorter folder and analyzer for the next part.
    del analyzed, sorting, traces, metrics
    gc.collect()  # the recording objects hold the binary open
    for folder in (sorter_folder, analyzer_folder, job.scratch / "preprocessed" / key):
        shutil.rmtree(folder, ignore_errors=True)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that ended: the sort's
    cost in CPU, beside its wall time (a study compares sorters on both)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _export_phy(
    job: _Run, analyzer: Any, unit_labels: Any, part: Any, where: Path, *, last: bool
) -> dict[str, Any]:
    """``phy/`` of one part, for run.json's ``phy``. Its PC features, the one file that
    grows with the spike count, are sized now that the spikes are known and left out (with
    the reason) if the scratch volume cannot hold them: a sort is never lost to them."""
    from spikebatch.worker import budget, phy_export
    from spikebatch.worker.scratch import free_bytes

    entry: dict[str, Any] = {"part": part.key or None}
    folder = where / "phy"
    if analyzer.sorting.count_total_num_spikes() == 0:
        return entry | {"folder": None, "skipped": "no units with spikes: nothing to open in phy"}
    pc_features, left_out = job.settings.phy_pc_features, None
    if pc_features:
        need = phy_export.pc_features_bytes(analyzer)
        used = tree_bytes(job.scratch)
        left_out = budget.pc_features_shortfall(
            need,
            part=budget.parts_of([part.series], job.settings.max_duration_s)[0],
            stages=job.record["scratch"].get("plan", {}).get("stages", {}),
            used=used,
            available=used + free_bytes(job.scratch),
            pcs_written=job.pc_bytes_written,
            last_part=last,
        )
        if left_out:
            log.warning("phy: PC features %s", left_out)
            pc_features = False
    written = phy_export.export_phy(
        analyzer,
        folder,
        labels=unit_labels,
        pc_features=pc_features,
        job_kwargs=job.job_kwargs,
    )
    if pc_features:
        job.pc_bytes_written += (folder / "pc_features.npy").stat().st_size
    entry |= written.record(job.results)
    if left_out:
        entry["pc_features_left_out"] = left_out
    return entry


def _total_units(parts: list[dict[str, Any]]) -> dict[str, Any]:
    snr = [p["snr_ge_5"] for p in parts]
    return {
        "count": sum(p["count"] for p in parts),
        "quality_metrics_rows": sum(p["quality_metrics_rows"] for p in parts),
        "snr_ge_5": None if None in snr else sum(snr),
        "spikes": sum(p["spikes"] for p in parts),
        "labels": {label: sum(p["labels"].get(label, 0) for p in parts) for label in LABELS},
    }


def _as_stop(job: _Run, exc: WorkerError) -> WorkerError:
    """A failure that a stop signal caused is reported as the stop, not as what wrapped it."""
    signal_name = stop.stopped_by()
    if signal_name is None or isinstance(exc, Interrupted):
        return exc
    stage = getattr(exc, "stage", job.record.get("stage"))
    stopped = Interrupted(stop.stop_message(signal_name))
    stopped.stage = stage  # type: ignore[attr-defined]
    return stopped


def _fail(job: _Run, exc: BaseException) -> Outcome:
    stop.begin_failing()  # a (second) stop signal must not cut the failure record short
    if isinstance(exc, Interrupted):
        ended = stop.end_children()  # a sorter's binary, a pool's workers
        if ended:
            log.info("stop: ended %d child process(es)", ended)
    stage = getattr(exc, "stage", job.record.get("stage"))
    message = getattr(exc, "message", str(exc))
    job.record.update(
        status="failed",
        finished_at=now(),
        updated_at=now(),
        error={"stage": stage, "message": message, "type": type(exc.__cause__ or exc).__name__},
    )
    if isinstance(exc, Interrupted) and (reason := stop.stop_reason()):
        job.record["stop"] = reason  # e.g. {"kind": "timeout", ...}: a study's time limit
    job.set_cost()
    if "scratch" in job.record:
        job.record_scratch()
    try:
        if not job.began_publishing:  # failed before run.json existed: clear an earlier run
            job.publisher.begin(job.record)  # first, never mix two
        kept = [] if isinstance(exc, Interrupted) else _upload_sortings(job)
        _write_failure_page(job, kept)
        job.publisher.write_record(job.record, final=True)
    except Exception as write_exc:  # the output itself is unreachable: say so, still exit 1
        log.error(
            "could not write run.json (failed) to %s: %s", job.publisher.run_json_uri, write_exc
        )
    # On Batch nobody inspects a reused instance's disk: the next job needs the space.
    job.run_scratch.release(remove=job.on_batch)
    kept = None if job.on_batch else job.scratch
    if kept is not None and kept.exists():
        log.info("scratch kept for inspection: %s", kept)
    code = ExitCode.INTERRUPTED if isinstance(exc, Interrupted) else ExitCode.FAILED
    return Outcome(
        code,
        job.record,
        job.publisher.dest,
        f"failed in {stage}: {message}",
        kept,
        dict(job.record["timings_s"]),
    )


def _upload_sortings(job: _Run) -> list[str]:
    """A run that failed after a sort ended still delivers what the sort found: each
    ``sorting/`` written so far (``post_sort.save_sorting``) is uploaded, and its objects
    returned (relative to the run's output). Best effort, and not on a stop (a stop is
    asked for, and has seconds to write run.json)."""
    folders = [job.results / "sorting", *sorted(job.results.glob("probes/*/sorting"))]
    kept: list[str] = []
    uploaded: list[str] = []
    for folder in (f for f in folders if f.is_dir()):
        where = folder.relative_to(job.results).as_posix()
        try:
            transfer.upload_tree(folder, f"{job.publisher.dest}/{where}")
        except Exception as exc:
            log.warning("could not upload %s of the failed run: %s", where, one_line(exc))
            continue
        uploaded.append(f"{where}/")
        kept += sorted(
            f"{where}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()
        )
    if uploaded:
        job.record["kept_after_failure"] = uploaded
        log.info("the failed run's sorting is kept: %s", ", ".join(uploaded))
    return kept


def _write_failure_page(job: _Run, kept: list[str]) -> None:
    """A failed run's page (where and why it failed, its input, timings and cost): the
    array summary links it. Best effort: the record is what must be written."""
    from spikebatch.worker import run_page

    job.record["outputs"] = [RUN_PAGE, *kept]  # and nothing else of a failed run
    try:
        job.publisher.write_page(run_page.render_run_page(job.record, []))
    except Exception as exc:
        job.record["outputs"] = kept
        log.warning("could not write the failed run's page: %s", one_line(exc))


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get(LOG_LEVEL_VAR, "INFO"),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    logging.getLogger("spikebatch").setLevel(logging.INFO)


def main(environ: Mapping[str, str] | None = None) -> int:
    """The container entrypoint: validate everything, run, report one line, return the exit code.

    The stop handling (``stop``) is installed first, unless the entrypoint already did.
    """
    configure_logging()
    environ = os.environ if environ is None else environ
    with stop.installed(environ):
        try:
            return _validate_and_run(environ)
        except Interrupted as exc:  # before the run had a record, or after its final one
            stage = stop.current_stage() or "config"
            print(f"spikebatch-worker: failed in {stage}: {exc}", file=sys.stderr)
            return ExitCode.INTERRUPTED


def _validate_and_run(environ: Mapping[str, str]) -> int:
    try:
        settings = WorkerSettings.from_env(load_environment(environ))
    except ConfigError as exc:
        print(f"spikebatch-worker: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    outcome = run(settings, environ)
    stream = sys.stdout if outcome.exit_code == ExitCode.OK else sys.stderr
    print(f"spikebatch-worker: {outcome.message}", file=stream)
    return int(outcome.exit_code)

"""``report/index.html``: one self-contained page per run, the first thing a person opens.

Rendered from run.json (the record), each probe's ``quality_metrics.csv`` (with the
labels) and the report PNGs, which are embedded as data URIs, so the page opens offline,
from a download, from a presigned URL or as a mail attachment. It shows the input and its
verified digest, the sorter and its parameters, per-stage timings, the cost, the quality
labels with the thresholds in force, the QC table and the figures. The QC table has a row
per unit, all in the HTML; its inline script sorts it and shows it a page at a time.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikebatch.contract import RUN_PAGE
from spikebatch.pages import (
    TABLE_SCRIPT,
    Raw,
    badge,
    bar,
    card,
    dl,
    figure,
    fmt_bytes,
    fmt_number,
    fmt_seconds,
    fmt_usd,
    join,
    link,
    page,
    section,
    table,
    tag,
)
from spikebatch.quality import LABELS

#: The report figures (report.py) with what each shows, in page order.
FIGURES = {
    "units_summary.png": "Where the units sit on the probe, and each unit's mean waveform.",
    "amplitudes.png": "Spike amplitudes over time: drift, units fading in or out.",
    "quality_metrics.png": "Distributions of the quality metrics, with common thresholds.",
}
#: QC table columns (quality_metrics.csv names) and their headings; others stay in the CSV.
QC_COLUMNS = {
    "snr": "SNR",
    "firing_rate": "rate (Hz)",
    "num_spikes": "spikes",
    "presence_ratio": "presence",
    "isi_violations_ratio": "ISI viol. ratio",
    "amplitude_cutoff": "amp. cutoff",
}
#: QC table rows shown at a time once the page's script runs (a Neuropixels hour: 300-600
#: units). Every row stays in the HTML; without JavaScript the whole table shows.
QC_PAGE_SIZE = 50
_LABEL_ORDER = {label: i for i, label in enumerate(LABELS)}


@dataclass(frozen=True)
class ProbeResults:
    """One probe's table and figures (a single-probe run has one, with ``name`` None)."""

    name: str | None
    metrics: list[dict[str, str]] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)


def read_probe_results(folder: Path, name: str | None = None) -> ProbeResults:
    """``folder/quality_metrics.csv`` and ``folder/report/*.png``, as written by the worker."""
    metrics_csv = folder / "quality_metrics.csv"
    rows = []
    if metrics_csv.exists():
        with metrics_csv.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    figures = {
        figure: (folder / "report" / figure).read_bytes()
        for figure in FIGURES
        if (folder / "report" / figure).exists()
    }
    return ProbeResults(name, rows, figures)


def write_run_page(
    results_dir: Path,
    record: Mapping[str, Any],
    probes: Sequence[tuple[str | None, Path]] | None = None,
) -> Path:
    """Render ``results_dir/report/index.html`` from ``record`` and the files beside it.

    ``probes``: (name, folder) per probe for multi-probe runs; default: ``results_dir``
    itself as the one probe.
    """
    sources = probes if probes else [(None, results_dir)]
    html = render_run_page(record, [read_probe_results(folder, name) for name, folder in sources])
    path = results_dir / RUN_PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def render_run_page(record: Mapping[str, Any], probes: Sequence[ProbeResults]) -> str:
    """The page as one HTML string; every value from ``record`` is escaped."""
    run_id = str(record.get("run_id", "?"))
    status = str(record.get("status", "unknown"))
    rec_input = record.get("input") or {}
    when = record.get("finished_at") or record.get("updated_at") or record.get("started_at")
    subtitle = join(
        [
            badge(status),
            " ",
            rec_input.get("source") or "",
            f" · finished {when}" if record.get("finished_at") else f" · updated {when}",
        ]
    )
    body = [
        _glance(record, probes),
        _error(record),
        _next_steps(record),
        section("Input", _input(rec_input), id="input"),
        section("Sorter", _sorter(record), id="sorter"),
        section("Timings", _timings(record), id="timings"),
        section("Cost", _cost(record), id="cost"),
        section("Quality labels", _labels(record, probes), id="quality"),
        _figures(probes),
        section("Software", _software(record), id="software"),
    ]
    return page(
        f"spikebatch run {run_id}",
        join(body),
        heading=join(["spikebatch run ", tag("code", run_id)]),
        subtitle=subtitle,
        script=TABLE_SCRIPT if _all_rows(probes) else "",
    )


# -- sections ------------------------------------------------------------------------------


def _all_rows(probes: Sequence[ProbeResults]) -> list[dict[str, str]]:
    return [row for probe in probes for row in probe.metrics]


def label_counts(record: Mapping[str, Any], probes: Sequence[ProbeResults]) -> dict[str, int]:
    """From run.json when it has them, else counted from the tables."""
    recorded = ((record.get("labels") or {}).get("counts")) or (
        (record.get("units") or {}).get("labels")
    )
    if recorded:
        return {label: int(recorded.get(label, 0)) for label in LABELS}
    counts = dict.fromkeys(LABELS, 0)
    for row in _all_rows(probes):
        if row.get("label") in counts:
            counts[row["label"]] += 1
    return counts


def _glance(record: Mapping[str, Any], probes: Sequence[ProbeResults]) -> Raw:
    units = record.get("units") or {}
    rec_input = record.get("input") or {}
    cost = record.get("cost") or {}
    counts = label_counts(record, probes)
    n_units = units.get("count")
    if n_units is None and _all_rows(probes):
        n_units = len(_all_rows(probes))
    labelled = (
        " · ".join(f"{n} {label}" for label, n in counts.items()) if any(counts.values()) else None
    )
    sorted_s = rec_input.get("sorted_duration_s")
    duration = rec_input.get("duration_s")
    recording_detail = None
    if rec_input.get("n_channels"):
        recording_detail = (
            f"{rec_input['n_channels']} ch at {fmt_number(rec_input.get('sampling_frequency'))} Hz"
        )
        if duration and sorted_s and float(sorted_s) < float(duration):
            recording_detail += f", of {fmt_seconds(duration)}"
    estimated = (cost.get("estimated") or {}).get("usd")
    cards = [
        card("good units", counts["good"] if labelled else "—", labelled),
        card("units", n_units if n_units is not None else "—", _spikes(units)),
        card("recording sorted", fmt_seconds(sorted_s) or "—", recording_detail),
        card("run time", fmt_seconds(cost.get("wall_s")) or "—", _instance(cost)),
        card(
            "cost",
            fmt_usd(cost.get("actual_usd")) or "—",
            f"estimated {fmt_usd(estimated)}" if estimated is not None else None,
        ),
    ]
    return tag("div", join(cards), class_="cards")


def _spikes(units: Mapping[str, Any]) -> str | None:
    spikes = units.get("spikes")
    return f"{int(spikes):,} spikes" if isinstance(spikes, int | float) else None


def _instance(cost: Mapping[str, Any]) -> str | None:
    if not cost.get("instance_type"):
        return None
    return f"{cost['instance_type']} ({'spot' if cost.get('spot') else 'on-demand'})"


def _error(record: Mapping[str, Any]) -> Raw:
    error = record.get("error")
    if not error:
        return Raw("")
    return tag(
        "div",
        join(
            [
                tag("strong", f"Failed in stage {error.get('stage', '?')}: "),
                error.get("message", ""),
                f" ({error['type']})" if error.get("type") else "",
                *_kept(record),
            ]
        ),
        class_="alert",
    )


def _kept(record: Mapping[str, Any]) -> list[Any]:
    """What a run that failed after its sort still delivered (``pipeline._upload_sortings``)."""
    kept = record.get("kept_after_failure") or []
    if not kept:
        return []
    command = f"spikebatch results {record.get('run_id', 'RUN_ID')} --download ./results"
    return [
        tag(
            "p",
            join(
                [
                    "The sort itself finished and its result is kept: ",
                    ", ".join(str(k) for k in kept),
                    " (SpikeInterface's sorting folder: ",
                    tag("code", "spikeinterface.load(...)"),
                    "). Download it with ",
                    tag("code", command),
                    ".",
                ]
            ),
        )
    ]


def _next_steps(record: Mapping[str, Any]) -> Raw:
    """How to act on the run: curate in phy, find the units on DANDI."""
    run_id = str(record.get("run_id", "RUN_ID"))
    outputs = set(record.get("outputs") or [])
    parts: list[Any] = []
    phy_dirs = sorted(o.removesuffix("params.py") for o in outputs if o.endswith("phy/params.py"))
    if phy_dirs:
        lines = [f"spikebatch results {run_id} --download ./results"]
        for folder in phy_dirs:  # one phy/ per probe
            lines += [f"cd ./results/{run_id}/{folder}", "phy template-gui params.py"]
        notes = [
            f"{entry.get('folder') or 'phy'}: PC features {entry['pc_features_left_out']}"
            for entry in record.get("phy") or []
            if isinstance(entry, Mapping) and entry.get("pc_features_left_out")
        ]
        parts.append(
            join(
                [
                    tag("h3", "Curate in phy"),
                    tag("pre", "\n".join(lines)),
                    tag(
                        "p",
                        "phy shows the labels below as cluster groups; no raw traces are "
                        "shipped (phy/README.txt says how to add them for the trace view).",
                        class_="sub",
                    ),
                    *(tag("p", note, class_="sub") for note in notes),
                ]
            )
        )
    publication = record.get("publish")
    if publication:
        parts.append(join([tag("h3", "Published to DANDI"), _publication(publication)]))
    if not parts:
        return Raw("")
    return section("Next steps", join(parts), id="next")


def _publication(publication: Mapping[str, Any]) -> Raw:
    status = str(publication.get("status", "?"))
    url = publication.get("url")
    digest = publication.get("digest") or {}
    return dl(
        [
            ("status", badge(status)),
            ("reason", publication.get("reason")),
            ("dandiset", publication.get("dandiset_id")),
            ("path", tag("code", publication["path"]) if publication.get("path") else None),
            ("asset id", publication.get("asset_id")),
            ("asset", link(url, url) if url else None),
            (
                "digest",
                join(join([f"{k}: ", tag("code", v), Raw("<br>")]) for k, v in digest.items())
                if digest
                else None,
            ),
            ("replaced asset", publication.get("replaced_asset_id")),
        ]
    )


def _input(rec_input: Mapping[str, Any]) -> Raw:
    digest = rec_input.get("digest") or {}
    verified = digest.get("verified")
    digest_cell = None
    if digest.get("value"):
        digest_cell = join(
            [
                tag("code", f"{digest.get('name')}: {digest['value']}"),
                " ",
                badge("verified", "succeeded") if verified else badge("not verified", "failed"),
            ]
        )
    elif verified is False:
        digest_cell = badge("no digest to verify against", "mua")
    return dl(
        [
            ("source", rec_input.get("source")),
            ("downloaded from", rec_input.get("url")),
            ("DANDI asset id", rec_input.get("dandi_asset_id")),
            ("size", fmt_bytes(rec_input.get("size"))),
            ("digest", digest_cell),
            ("download time", fmt_seconds(rec_input.get("download_s"))),
            (
                "resumed",
                fmt_bytes(rec_input.get("resumed_bytes"))
                if rec_input.get("resumed_bytes")
                else None,
            ),
            ("electrical series", rec_input.get("electrical_series_path")),
            ("channels", rec_input.get("n_channels")),
            (
                "sampling rate",
                f"{fmt_number(rec_input['sampling_frequency'])} Hz"
                if rec_input.get("sampling_frequency")
                else None,
            ),
            ("duration", fmt_seconds(rec_input.get("duration_s"))),
            ("sorted", fmt_seconds(rec_input.get("sorted_duration_s"))),
            ("session identifier", rec_input.get("session_identifier")),
        ]
    )


def _reused(record: Mapping[str, Any]) -> str | None:
    """A rerun that reused the sort of the failed run before it (``kept_sort``), or None."""
    reused = record.get("sort_reused") or {}
    if not reused:
        return None
    when = reused.get("from_run_failed_at") or "earlier"
    took = f"; it took {fmt_seconds(reused['sort_s'])}" if reused.get("sort_s") else ""
    return f"reused from the failed run of {when} (same input, sorter and parameters{took})"


def _sorter(record: Mapping[str, Any]) -> Raw:
    sorter = record.get("sorter") or {}
    preprocessing = record.get("preprocessing") or {}
    requested = (record.get("settings") or {}).get("SORTER_PARAMS") or {}
    params = sorter.get("params") or {}
    rows = [
        (
            tag("code", key),
            tag("code", json.dumps(value, default=str)),
            "request" if key in requested else "default",
        )
        for key, value in sorted(params.items())
    ]
    applied = preprocessing.get("applied")
    return join(
        [
            dl(
                [
                    ("sorter", sorter.get("name")),
                    ("version", sorter.get("version")),
                    (
                        "preprocessing",
                        ", ".join(applied) if applied else "none (the sorter's own filtering)",
                    ),
                    ("sorted only the first", fmt_seconds(record.get("max_duration_s"))),
                    ("sort", _reused(record)),
                ]
            ),
            tag(
                "details",
                join(
                    [
                        tag(
                            "summary", f"{len(rows)} parameters ({len(requested)} from the request)"
                        ),
                        table(["parameter", "value", "from"], rows),
                    ]
                ),
            )
            if rows
            else Raw(""),
        ]
    )


def _timings(record: Mapping[str, Any]) -> Raw:
    timings = {k: v for k, v in (record.get("timings_s") or {}).items() if v is not None}
    if not timings:
        return tag("p", "No stage finished.")
    total = sum(float(v) for v in timings.values()) or 1.0
    rows = [
        (
            stage,
            fmt_seconds(seconds),
            f"{100 * float(seconds) / total:.0f} %",
            bar(float(seconds) / total),
        )
        for stage, seconds in timings.items()
    ]
    rows.append((tag("strong", "total"), tag("strong", fmt_seconds(total)), "", ""))
    return table(["stage", "time", "share", ""], rows, numeric={1, 2})


def _cost(record: Mapping[str, Any]) -> Raw:
    cost = record.get("cost") or {}
    estimated = cost.get("estimated") or {}
    return dl(
        [
            ("instance", _instance(cost)),
            ("price", f"{fmt_usd(cost['usd_per_hour'])} / h" if cost.get("usd_per_hour") else None),
            ("wall time", fmt_seconds(cost.get("wall_s"))),
            ("actual", fmt_usd(cost.get("actual_usd"))),
            (
                "estimated before the run",
                f"{fmt_usd(estimated['usd'])} ({fmt_seconds(estimated.get('total_seconds'))})"
                if estimated.get("usd") is not None
                else None,
            ),
            (
                "per recording hour",
                fmt_usd(estimated.get("usd_per_recording_hour")),
            ),
        ]
    )


def _labels(record: Mapping[str, Any], probes: Sequence[ProbeResults]) -> Raw:
    counts = label_counts(record, probes)
    labels = record.get("labels") or {}
    thresholds = labels.get("thresholds") or []
    parts: list[Any] = [
        tag(
            "p",
            join(
                [
                    join(join([badge(label), f" {counts[label]}  "]) for label in LABELS),
                    " — noise: fails a waveform-shape check; mua: fails a contamination, "
                    "completeness or amplitude check; good: passes all. phy shows the same "
                    "labels (cluster groups).",
                ]
            ),
        )
    ]
    if thresholds:
        parts.append(
            tag(
                "details",
                join(
                    [
                        tag("summary", f"{len(thresholds)} thresholds in force"),
                        table(
                            ["fails as", "rule", "source"],
                            [
                                (
                                    badge(t.get("section")),
                                    tag("code", t.get("rule")),
                                    t.get("source"),
                                )
                                for t in thresholds
                            ],
                        ),
                    ]
                ),
            )
        )
    for probe in probes:
        if len(probes) > 1:
            parts.append(tag("h3", f"probe {probe.name}"))
        parts.append(_qc_table(probe.metrics))
    return join(parts)


def _sort_key(row: Mapping[str, str]) -> tuple[int, float]:
    """Good first, then mua, then noise; within a label, highest SNR first."""
    try:
        snr = float(row.get("snr") or "nan")
    except ValueError:
        snr = math.nan
    return (_LABEL_ORDER.get(row.get("label", ""), len(LABELS)), -snr if snr == snr else math.inf)


def _qc_table(rows: list[dict[str, str]]) -> Raw:
    if not rows:
        return tag("p", "No units.")
    columns = [c for c in QC_COLUMNS if c in rows[0]]
    has_labels = "label" in rows[0]
    headers = ["unit", *(["label"] if has_labels else []), *(QC_COLUMNS[c] for c in columns)]
    if "label_reason" in rows[0]:
        headers.append("why not good")
    body = []
    for row in sorted(rows, key=_sort_key):
        cells: list[Any] = [row.get("unit_id") or row.get("") or "?"]
        if has_labels:
            cells.append(badge(row["label"]) if row.get("label") else None)
        cells += [fmt_number(row.get(c)) for c in columns]
        if "label_reason" in row:
            cells.append(row.get("label_reason") or "")
        body.append(cells)
    numeric = set(range(2 if has_labels else 1, 2 + len(columns)))
    return table(
        headers,
        body,
        numeric=numeric,
        page_size=QC_PAGE_SIZE,
        filter_column=1 if has_labels else None,
    )


def _figures(probes: Sequence[ProbeResults]) -> Raw:
    parts = []
    for probe in probes:
        for name, caption in FIGURES.items():
            data = probe.figures.get(name)
            if not data:
                continue
            label = f"probe {probe.name}: {caption}" if len(probes) > 1 else caption
            parts.append(figure(data, label, alt=name))
    return section("Figures", join(parts), id="figures") if parts else Raw("")


def _software(record: Mapping[str, Any]) -> Raw:
    versions = record.get("versions") or {}
    batch = record.get("batch") or {}
    return join(
        [
            dl(
                [
                    ("image", record.get("image")),
                    ("host", record.get("host")),
                    ("Batch job", batch.get("job_id")),
                    ("attempt", batch.get("attempt")),
                    ("started", record.get("started_at")),
                    ("finished", record.get("finished_at")),
                    (
                        "nwbinspector",
                        ", ".join(
                            f"{k}: {v}" for k, v in (record.get("nwbinspector") or {}).items()
                        )
                        or None,
                    ),
                ]
            ),
            table(
                ["package", "version"],
                [(name, version) for name, version in versions.items() if version],
            ),
        ]
    )

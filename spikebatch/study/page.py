"""The study's page: one self-contained HTML file (figures as base64 PNG, no network), built
from the collected table with the same blocks as the run page (:mod:`spikebatch.pages`).

Per sorter label: accuracy, precision and recall against each true unit's SNR (one figure per
metric, every label on it), the unit counts (well detected, false positive, redundant,
overmerged), sort time and cost per recording-hour; then the matrix of cases, each linked to
its run page.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from spikebatch.contract import RUN_PAGE
from spikebatch.pages import (
    Raw,
    badge,
    card,
    esc,
    figure,
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
from spikebatch.study.results import Collected, label_standings

RATES = ("accuracy", "precision", "recall")
COUNTS = ("well_detected", "false_positive", "redundant", "overmerged")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(draw: Callable[[Any], None], size: tuple[float, float] = (6.4, 3.6)) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=110)
    try:
        draw(ax)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _labels(collected: Collected) -> list[str]:
    return list(dict.fromkeys(c["label"] for c in collected.cases))


def _rate_figure(collected: Collected, rate: str) -> bytes:
    def draw(ax: Any) -> None:
        for label in _labels(collected):
            points = [
                (u["snr"], u[rate])
                for u in collected.units
                if u["label"] == label and u.get("snr") is not None and u.get(rate) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.scatter(xs, ys, s=18, alpha=0.75, label=label)
        ax.set_xlabel("true unit SNR")
        ax.set_ylabel(rate)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")

    return _png(draw)


def _grouped_bars(
    labels: list[str], groups: list[str], value: Callable[[str, str], float], ylabel: str
) -> bytes:
    def draw(ax: Any) -> None:
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            xs = [g + i * width for g in range(len(groups))]
            ax.bar(xs, [value(label, g) for g in groups], width, label=label)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)

    return _png(draw)


def _scored(collected: Collected, label: str) -> list[dict[str, Any]]:
    return [c for c in collected.cases if c["label"] == label and c["ground_truth"]]


def _finished(collected: Collected, label: str) -> list[dict[str, Any]]:
    return [c for c in collected.cases if c["label"] == label and c["status"] != "pending"]


def per_recording_hour(cases: list[dict[str, Any]], key: str) -> float | None:
    """Sum of ``key`` over the cases per hour of recording they sorted (None if unknown)."""
    known = [c for c in cases if c.get(key) is not None and c.get("recording_duration_s")]
    hours = sum(c["recording_duration_s"] for c in known) / 3600.0
    return sum(c[key] for c in known) / hours if known and hours > 0 else None


def _summary_table(collected: Collected) -> Raw:
    rows = []
    standings = label_standings(collected.cases)
    for label in _labels(collected):
        standing = standings[label]
        scored = _scored(collected, label)
        mean = {
            r: _mean([c["ground_truth"][r] for c in scored if c["ground_truth"][r] is not None])
            for r in RATES
        }
        counts = {k: sum(c["ground_truth"][k] or 0 for c in scored) for k in COUNTS}
        done = _finished(collected, label)
        rows.append(
            [
                label,
                len(done),
                *(fmt_number(mean[r]) for r in RATES),
                _shortfall(standing),
                *(counts[k] for k in COUNTS),
                fmt_seconds(per_recording_hour(done, "run_time_s")),
                fmt_usd(per_recording_hour(done, "cost_usd")),
            ]
        )
    headers = [
        "label",
        "finished",
        "accuracy",
        "precision",
        "recall",
        "worst shortfall from the best",
        "well detected",
        "false positive",
        "redundant",
        "overmerged",
        "sort time / rec-hour",
        "cost / rec-hour",
    ]
    return table(headers, rows, numeric=range(1, len(headers)))


def _shortfall(standing: dict[str, Any]) -> str:
    """``0.012 (rec3)``: how far below the best label this one fell, at worst, and where."""
    if standing["worst_shortfall"] is None:
        return ""
    return f"{fmt_number(standing['worst_shortfall'])} ({standing['worst_recording']})"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _href(case: dict[str, Any], links_relative_to: str | None) -> str | None:
    if not case.get("page_uri"):
        return None
    if links_relative_to and case["results_uri"].startswith(links_relative_to):
        return "runs/" + case["results_uri"][len(links_relative_to) :].lstrip("/") + RUN_PAGE
    uri = str(case["page_uri"])
    return uri if uri.startswith(("https://", "file://")) else None


def _cell(case: dict[str, Any], links_relative_to: str | None) -> Raw:
    accuracy = (case.get("ground_truth") or {}).get("accuracy")
    text = join(
        [badge(case["status"]), " ", esc(fmt_number(accuracy)) if accuracy is not None else ""]
    )
    href = _href(case, links_relative_to)
    return join([text, " ", link(href, "run page")]) if href else text


def _matrix(collected: Collected, links_relative_to: str | None) -> Raw:
    labels = _labels(collected)
    by_cell = {(c["recording"], c["label"]): c for c in collected.cases}
    recordings = list(dict.fromkeys((c["recording"], c["study"]) for c in collected.cases))
    rows = [
        [name, study, *(_cell(by_cell[(name, label)], links_relative_to) for label in labels)]
        for name, study in recordings
        if all((name, label) in by_cell for label in labels)
    ]
    return table(["recording", "study", *labels], rows)


def render_study_page(collected: Collected, *, links_relative_to: str | None = None) -> str:
    """The whole page for ``collected`` (study.json's cases and units.csv's rows)."""
    cases = collected.cases
    counts = {
        s: sum(1 for c in cases if c["status"] == s)
        for s in ("succeeded", "failed", "timed_out", "pending")
    }
    cards = tag(
        "div",
        join(
            [
                card(
                    "cases",
                    len(cases),
                    f"{len({c['recording'] for c in cases})} recordings x {len(_labels(collected))} sorter entries",
                ),
                card("succeeded", counts["succeeded"]),
                card("failed / timed out", f"{counts['failed']} / {counts['timed_out']}"),
                card("pending", counts["pending"]),
            ]
        ),
        class_="cards",
    )
    labels = _labels(collected)
    figures: list[Raw] = []
    if collected.units:
        for rate in RATES:
            figures.append(
                figure(
                    _rate_figure(collected, rate),
                    f"{rate} of each true unit against its SNR, per sorter label",
                    alt=f"{rate} vs SNR",
                )
            )

        def count(label: str, key: str) -> float:
            return float(
                sum((c["ground_truth"] or {}).get(key) or 0 for c in _scored(collected, label))
            )

        figures.append(
            figure(
                _grouped_bars(labels, list(COUNTS), count, "units (all recordings)"),
                "Unit counts against the truth: well detected, false positive, redundant, overmerged",
                alt="unit counts",
            )
        )
    if any(c.get("run_time_s") is not None for c in cases):

        def hourly(label: str, key: str) -> float:
            value = per_recording_hour(_finished(collected, label), key)
            return float(value or 0.0)

        figures.append(
            figure(
                _grouped_bars(
                    labels,
                    ["sort time (s)"],
                    lambda label, _: hourly(label, "run_time_s"),
                    "seconds per recording-hour",
                ),
                "Sort time per hour of recording (wall time of the sort stage)",
                alt="run time",
            )
        )
        if any(c.get("cost_usd") for c in cases):
            figures.append(
                figure(
                    _grouped_bars(
                        labels,
                        ["cost (USD)"],
                        lambda label, _: hourly(label, "cost_usd"),
                        "USD per recording-hour",
                    ),
                    "Cost per hour of recording (run.json's actual cost)",
                    alt="cost",
                )
            )
    body = join(
        [
            cards,
            section("Sorters", _summary_table(collected), id="sorters"),
            section("Figures", join(figures), id="figures") if figures else Raw(""),
            section("Cases", _matrix(collected, links_relative_to), id="cases"),
        ]
    )
    return page(
        f"study {collected.name}",
        body,
        heading=f"Study {collected.name}",
        subtitle="Recordings x sorter entries, scored against ground truth (SpikeInterface's comparison)",
    )

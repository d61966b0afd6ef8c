"""``make demo``: the real worker, in-process, on a generated ground-truth recording.

By default it writes a ground-truth NWB (int16, chunked gzip, like DANDI files), runs the
very same entrypoint the container runs (``INPUT_URI=file://...``, ``OUTPUT_URI=file://...``,
``GROUND_TRUTH=file://...`` the true sorting) with Kilosort4 (CPU here, CUDA in the image),
then prints the worker's own score against the ground truth (``ground_truth_score.json``),
the per-stage timings, the quality labels, the phy command and the run's page to open.
``--nwb`` sorts a local NWB file and ``--dandiset/--asset`` a DANDI asset instead (no
accuracy: no ground truth).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spikebatch.contract import RUN_PAGE, Env
from spikebatch.worker.pipeline import main as worker_main
from spikebatch.worker.simulate import GroundTruthSpec, write_ground_truth_nwb

RUN_ID = "demo"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spikebatch.worker.demo", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo-results"),
        help="results folder (default: ./demo-results)",
    )
    p.add_argument(
        "--sorter",
        default="kilosort4",
        help="any installed SpikeInterface sorter (default: kilosort4)",
    )
    p.add_argument("--sorter-params", default="{}", help="SORTER_PARAMS JSON (default: {})")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--nwb", type=Path, help="sort this local NWB file instead of a generated one")
    src.add_argument("--dandiset", help="sort a DANDI asset: dandiset id (with --asset)")
    p.add_argument("--asset", help="DANDI asset path (with --dandiset)")
    p.add_argument("--version", default="draft", help="dandiset version (default: draft)")
    p.add_argument(
        "--duration", type=float, default=40.0, help="generated recording length, s (default: 40)"
    )
    p.add_argument("--channels", type=int, default=32, help="generated channels (default: 32)")
    p.add_argument("--units", type=int, default=10, help="generated units (default: 10)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default: 42)")
    p.add_argument("--max-duration", type=float, help="MAX_DURATION_S for --nwb/--dandiset inputs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {
        Env.OUTPUT_URI: out.as_uri(),
        Env.RUN_ID: RUN_ID,
        Env.SORTER: args.sorter,
        Env.SORTER_PARAMS: args.sorter_params,
        Env.SCRATCH_DIR: str(out / ".scratch"),
    }
    if args.dandiset or args.asset:
        if not (args.dandiset and args.asset):
            console.print("[red]error:[/] --dandiset and --asset go together")
            return 2
        env.update(
            {
                Env.DANDISET_ID: args.dandiset,
                Env.DANDI_ASSET_PATH: args.asset,
                Env.DANDISET_VERSION: args.version,
            }
        )
    elif args.nwb:
        env[Env.INPUT_URI] = args.nwb.resolve().as_uri()
    else:
        spec = GroundTruthSpec(
            duration_s=args.duration,
            num_channels=args.channels,
            num_units=args.units,
            seed=args.seed,
        )
        t0 = time.monotonic()
        truth = write_ground_truth_nwb(out / "input", spec)
        console.print(
            f"generated ground truth: {spec.num_units} units, {spec.num_channels} channels, "
            f"{spec.duration_s:g} s -> {truth.nwb} ({truth.nwb.stat().st_size / 1e6:.1f} MB, "
            f"{time.monotonic() - t0:.1f} s)"
        )
        env[Env.INPUT_URI] = truth.nwb.as_uri()
        env[Env.GROUND_TRUTH] = truth.sorting_dir.resolve().as_uri()
    if args.max_duration:
        env[Env.MAX_DURATION_S] = str(args.max_duration)

    code = worker_main(env)
    run_dir = out / RUN_ID
    run_json = run_dir / "run.json"
    if not run_json.exists():
        return code
    record = json.loads(run_json.read_text())
    _print_timings(console, record)
    if code != 0:
        console.print(
            f"[red]run failed[/] in {record['error']['stage']}: {record['error']['message']}"
        )
        return code
    if record.get("ground_truth"):
        _print_accuracy(console, record["ground_truth"])
    console.print(
        f"results:  {run_dir}/  (run.json, sorting/, units.nwb, quality_metrics.csv, phy/, report/)"
    )
    labels = (record.get("labels") or {}).get("counts") or {}
    if labels:
        console.print("labels:   " + ", ".join(f"{n} {label}" for label, n in labels.items()))
    for entry in record.get("phy") or []:
        if entry.get("folder"):
            console.print(f"curate:   cd {run_dir / entry['folder']} && phy template-gui params.py")
    page = run_dir / RUN_PAGE
    console.print(
        f"[bold]open:     {page.as_uri()}[/]  (the run's page: QC table, labels, figures)"
    )
    return 0


def _print_timings(console: Console, record: dict) -> None:
    table = Table(title=f"run {record['run_id']}: {record['status']}", show_edge=False)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in record["timings_s"].items():
        table.add_row(stage, f"{seconds:.1f}")
    table.add_row("[bold]total", f"[bold]{sum(record['timings_s'].values()):.1f}")
    console.print(table)


def _print_accuracy(console: Console, scored: dict) -> None:
    summary = scored["summary"]
    accuracy = summary["accuracy"]
    console.print(
        f"[bold]accuracy vs ground truth: {accuracy if accuracy is None else f'{accuracy:.3f}'}[/] "
        f"(mean over {summary['num_true_units_above_snr']}/{summary['num_true_units']} true "
        f"units with SNR >= {scored['snr_threshold']:g}; {summary['well_detected']} well "
        f"detected at >= {scored['well_detected_score']:g}, {summary['false_positive']} false "
        f"positive; {scored['file']})"
    )


if __name__ == "__main__":
    sys.exit(main())

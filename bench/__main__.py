"""``python -m bench`` (``make bench``): run the benchmarks, print ratios next to targets.

Usage: ``python -m bench [ingest convert scale postsort pages publish overlap campaign]
[--quick]``. ``--quick``
shrinks the data (for a smoke run; its ratios are not the ones to quote). Every row has a
target; the exit status is 1 when any target is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

from bench import campaign, convert, ingest, overlap, pages, postsort, publish, scale
from bench.common import BenchResult, GiB, MiB, scratch_dir

NAMES = ("ingest", "convert", "scale", "postsort", "pages", "publish", "overlap", "campaign")


def _print(result: BenchResult) -> None:
    for ratio in result.ratios:
        verdict = "met" if ratio.met else "NOT MET"
        note = f"  ({ratio.note})" if ratio.note else ""
        print(
            f"  {ratio.value:7.2f}  target {ratio.target_text:>9}  {verdict:7}  {ratio.name}{note}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)}")
    parser.add_argument("--quick", action="store_true", help="small data: a smoke run")
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    if unknown := sorted(set(names) - set(NAMES)):
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(NAMES)}")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("DANDI_NO_ET", "1")
    size = 128 * MiB if args.quick else GiB
    duration = convert.QUICK_DURATION_S if args.quick else convert.DURATION_S
    started = time.perf_counter()
    results: list[BenchResult] = []
    with scratch_dir("nwb") as tmp:
        nwb = None
        if {"convert", "overlap"} & set(names):
            print(f"generating a {convert.CHANNELS}-channel, {duration:g} s NWB ...", flush=True)
            nwb = convert.make_nwb(tmp, duration)
        jobs: dict[str, Callable[[], BenchResult]] = {
            "ingest": lambda: ingest.run(size=size),
            "convert": lambda: convert.run(nwb),
            "scale": lambda: scale.run(quick=args.quick),
            "postsort": lambda: postsort.run(quick=args.quick),
            "pages": pages.run,
            "publish": publish.run,
            "overlap": lambda: overlap.run(nwb),
            "campaign": campaign.run,
        }
        for name in names:
            print(f"{name} ...", flush=True)
            start = time.perf_counter()
            result = jobs[name]()
            result.seconds = round(time.perf_counter() - start, 1)
            path = result.save()
            _print(result)
            print(f"  -> {path.relative_to(path.parents[2])} ({result.seconds:.0f} s)", flush=True)
            results.append(result)
    missed = [r.name for res in results for r in res.ratios if not r.met]
    print(f"\n{len(results)} benchmarks in {time.perf_counter() - started:.0f} s; ", end="")
    print(f"targets not met: {len(missed)}" + (f" ({'; '.join(missed)})" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

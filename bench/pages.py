"""Pages: a Neuropixels hour's run page (400 units): its size and its load time in Chromium.

Builds two run folders as the worker leaves them, from ``tests/support/many_units.py``
(sorting and analyzing 400 real units would take far longer than the page does): one probe
of 400 units, and two probes of 200. Each probe has a generated, labelled
``quality_metrics.csv`` (the worker's own label rule) and the three figures drawn by
report.py from a synthetic analyzer: 384 channels, an hour, a million spikes per probe.
The page is the worker's ``write_run_page`` of them.

The load time is the page's own clock in headless Chromium (``tests/support/browser.py``:
navigation start to the load event, best of 3; the browser's start-up is not in it), with
the page's table script run. Needs Debian's ``chromium``.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import MB, BenchResult, Ratio, scratch_dir

UNITS = 400
TARGET_LOAD_S = 3.0
TARGET_MB = 5.0
#: (probe name, units): one Neuropixels probe, then the same units over two probes.
LAYOUTS = {"one probe": [(None, UNITS)], "2 probes x 200": [("imec0", 200), ("imec1", 200)]}


def run() -> BenchResult:
    from tests.support import browser, many_units

    if not browser.available():
        raise RuntimeError(f"the pages benchmark needs headless Chromium ({browser.CHROMIUM})")
    sizes: dict[str, float] = {}
    build_s: dict[str, float] = {}
    figures: dict[str, dict[str, dict[str, float]]] = {}
    with scratch_dir("pages") as tmp:
        for i, (layout, probes) in enumerate(LAYOUTS.items()):
            started = time.perf_counter()
            page, seconds = many_units.write_run(Path(tmp) / f"run-{i}", probes)
            build_s[layout] = round(time.perf_counter() - started, 1)
            figures[layout] = {
                probe: {name: round(s, 2) for name, s in by_name.items()}
                for probe, by_name in seconds.items()
            }
            sizes[layout] = page.stat().st_size / MB
            if layout == "one probe":
                load = browser.load_seconds(page)
    return BenchResult(
        "pages",
        [
            Ratio(
                f"pages: run page load time in Chromium, {UNITS} units",
                load["load"],
                TARGET_LOAD_S,
                lower_is_better=True,
                note=f"DOM ready {load['domContentLoaded']:.2f} s; best of 3",
            ),
            *(
                Ratio(
                    f"pages: run page size, {UNITS} units ({layout}), MB",
                    size,
                    TARGET_MB,
                    lower_is_better=True,
                    note="one self-contained file: figures as data URIs",
                )
                for layout, size in sizes.items()
            ),
        ],
        measurements={
            "units": UNITS,
            "spikes_per_probe": many_units.SPIKES,
            "page_mb": {layout: round(size, 3) for layout, size in sizes.items()},
            "load_s": {key: round(value, 3) for key, value in load.items()},
            "figure_draw_s": figures,
            "build_s": build_s,
        },
        notes=[
            "metrics generated and labelled by the worker's rule; figures drawn by report.py "
            "from a synthetic analyzer (tests/support/many_units.py), not from a sorting"
        ],
    )

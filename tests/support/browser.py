"""Headless Chromium (Debian's ``chromium``) for checking spikebatch's pages as a browser sees them.

``screenshot`` writes what a person would see; ``rendered_images`` reports the decoded size
of every ``<img>`` (0 means the browser could not show it); ``probe`` runs a script in the
loaded page (clicks, timings) and returns what it found; ``links`` lists a page's links.
Every run is offline: a fresh profile, background networking off, and a proxy that leads
nowhere, so a page that needed the network would show it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def available() -> bool:
    return Path(CHROMIUM).is_file()


def _run(args: list[str], *, timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            # Offline: any request that is not a file or data URL goes to a closed port.
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={profile}",
            *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def screenshot(page: Path | str, png: Path, *, width: int = 1280, height: int = 1800) -> Path:
    """The top ``width`` x ``height`` pixels of ``page`` (a path or URL) as a PNG."""
    url = page.resolve().as_uri() if isinstance(page, Path) else page
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}", url])
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot of {url}")
    return png


_IMAGES = (
    "document.body.setAttribute('data-probe', JSON.stringify("
    "Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])));"
)


def rendered_images(page: Path) -> list[tuple[str, int, int]]:
    """(alt, width, height) of every image once the page has loaded in Chromium."""
    return [tuple(item) for item in probe(page, _IMAGES)]


def probe(page: Path, script: str, *, virtual_time: bool = True) -> Any:
    """What ``script`` leaves in ``data-probe`` on ``<body>`` (as JSON) once the page has
    loaded in Chromium and its own scripts have run: clicks, what is shown, timings.

    The page is copied beside itself with the probe appended in a load handler.
    ``virtual_time``: let timers run in virtual time (up to 10 s) before the DOM is dumped;
    off, the page's clock is the wall clock (for timings).
    """
    copy = page.with_name(f".probe-{page.name}")
    handler = f"<script>window.addEventListener('load', () => {{{script}}});</script>"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", handler + "</body>"))
    budget = ["--virtual-time-budget=10000"] if virtual_time else []
    try:
        dom = _run([*budget, "--dump-dom", copy.resolve().as_uri()])
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(r'data-probe="([^"]*)"', dom)
    if not found:
        raise RuntimeError("the page did not finish loading in chromium")
    return json.loads(html.unescape(found.group(1)))


_LOAD = (
    "const nav = performance.getEntriesByType('navigation')[0];"
    "document.body.setAttribute('data-probe', JSON.stringify("
    "{load: nav.loadEventStart, domContentLoaded: nav.domContentLoadedEventEnd}));"
)


def load_seconds(page: Path, *, repeats: int = 3) -> dict[str, float]:
    """How long ``page`` takes to load in headless Chromium, best of ``repeats`` (seconds).

    The page's own clock, from navigation start: ``load`` when its load event fires (HTML
    parsed, its scripts run, its images loaded), ``domContentLoaded`` when the parse and
    its inline scripts are done. The browser's start-up is not in it.
    """
    runs = [probe(page, _LOAD, virtual_time=False) for _ in range(repeats)]
    return {key: min(run[key] for run in runs) / 1e3 for key in ("load", "domContentLoaded")}


def dom_text(page: Path | str) -> str:
    """The DOM Chromium built from the page (proves it parses; text to assert on)."""
    url = page.resolve().as_uri() if isinstance(page, Path) else page
    return _run(["--dump-dom", url])


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        if values.get("src"):
            self.sources.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.sources.append(str(values["href"]))


def links(html: str) -> tuple[list[str], list[str]]:
    """(link targets, resource sources: img/script/link) of an HTML document."""
    parser = _Links()
    parser.feed(html)
    return parser.hrefs, parser.sources

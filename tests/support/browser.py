"""Headless Chromium (Debian's ``chromium``) for checking spikebatch's pages as a browser sees them.

``screenshot`` writes what a person would see; ``rendered_images`` reports the decoded size
of every ``<img>`` (0 means the browser could not show it); ``links`` lists a page's links.
Every run is offline: a fresh profile, background networking off, and a proxy that leads
nowhere, so a page that needed the network would show it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

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


_PROBE = (
    "<script>window.addEventListener('load', () => {"
    "document.body.setAttribute('data-images', JSON.stringify("
    "Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])));"
    "});</script>"
)


def rendered_images(page: Path) -> list[tuple[str, int, int]]:
    """(alt, width, height) of every image once the page has loaded in Chromium.

    The page is copied beside itself with a probe script appended (the page has none).
    """
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"))
    try:
        dom = _run(["--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()])
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'data-images="([^"]*)"', dom)
    if not found:
        raise RuntimeError("the page did not finish loading in chromium")
    raw = found.group(1).replace("&quot;", '"').replace("&amp;", "&")
    return [tuple(item) for item in json.loads(raw)]


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

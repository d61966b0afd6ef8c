"""Write containers/requirements.lock: the worker extra's full dependency closure, pinned.

Pins are the versions installed in the development venv (what the tests ran against), so
the image runs the code with exactly the tested libraries. Local version tags are dropped
(``torch 2.13.0+cpu`` here -> ``torch==2.13.0``, whose Linux wheel on PyPI is the CUDA build).

    .venv/bin/python containers/lock_requirements.py > containers/requirements.lock
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "spikebatch"
EXTRAS = ("worker",)
#: Build-time only or provided by the base image; never pinned in the lock.
SKIP = {"pip", "setuptools", "wheel", ROOT}


def _root_requirements(extras: tuple[str, ...]) -> list[str]:
    """The project's own requirements, read from pyproject.toml (installed or not)."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for extra in extras for r in optional[extra])]


def closure(extras: tuple[str, ...]) -> dict[str, str]:
    """Installed name -> version for everything ``spikebatch[extras]`` needs on Linux/x86_64."""
    env = {
        **default_environment(),
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
    }
    pinned: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = []
    seen: set[tuple[str, str]] = set()
    for raw in _root_requirements(extras):
        req = Requirement(raw)
        seen.add((canonicalize_name(req.name), ",".join(sorted(req.extras))))
        todo.append((req.name, tuple(sorted(req.extras))))
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        pinned[key] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            for extra in wanted or ("",):
                if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
                    mark = (canonicalize_name(req.name), ",".join(sorted(req.extras)))
                    if mark not in seen:
                        seen.add(mark)
                        try:
                            metadata.distribution(req.name)
                        except metadata.PackageNotFoundError:
                            continue  # an optional platform dependency not installed here
                        todo.append((req.name, tuple(sorted(req.extras))))
                    break
    return {k: v for k, v in pinned.items() if k not in SKIP}


def main() -> None:
    pins = closure(EXTRAS)
    print("# The worker image's Python environment (generated: containers/lock_requirements.py).")
    print(
        "# Install with: pip install -r containers/requirements.lock (torch adds its CUDA wheels)."
    )
    for name in sorted(pins):
        version = re.sub(r"\+.*$", "", pins[name])
        print(f"{name}=={version}")


if __name__ == "__main__":
    sys.exit(main())

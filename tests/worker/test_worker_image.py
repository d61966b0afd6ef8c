"""The image recipe, checked without a Docker engine: hadolint-clean Dockerfiles, a pinned KS3
base, a non-root worker entrypoint, and a lock that matches what the tests ran against."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("Dockerfile*"))
LOCK = CONTAINERS / "requirements.lock"
KEY_PACKAGES = (
    "spikeinterface",
    "kilosort",
    "torch",
    "dandi",
    "neuroconv",
    "pynwb",
    "nwbinspector",
    "numpy",
)


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    try:
        subprocess.run([exe, "--version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("hadolint cannot run here")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_is_hadolint_clean(dockerfile):
    result = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_runs_the_worker_as_non_root_with_pinned_bases(dockerfile):
    text = dockerfile.read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M))
    bases = re.findall(r"^(?:ARG KS3_BASE=|FROM )(\S+)", text, flags=re.M)
    for base in (b for b in bases if not b.startswith("$") and b not in stages):
        assert re.search(r":\d[\w.-]*$", base), f"{base} is not pinned to a version tag"
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["spikebatch-worker"\]$', text, flags=re.M)
    assert "DANDI_NO_ET=1" in text
    assert "containers/requirements.lock" in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["spikebatch-worker"] == "spikebatch.worker.__main__:main"


def test_both_images_share_one_python_environment_build():
    """The dependency and package stages are the same in both Dockerfiles, so the engine builds
    them once and caches them for both images (and a code change rebuilds only ~1 MB)."""

    def shared_stages(dockerfile: Path) -> str:
        text = dockerfile.read_text()
        start = text.index("FROM nvidia/cuda:12.4.1-base-ubuntu22.04 AS venv")
        end = text.index("# ---- The worker image.")
        return "\n".join(ln for ln in text[start:end].splitlines() if not ln.startswith("#"))

    stages = {shared_stages(d) for d in DOCKERFILES}
    assert len(stages) == 1
    (shared,) = stages
    assert "prune_venv.sh" in shared and "--target /opt/code" in shared
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert "procps" in text  # Kilosort4 runs `ps -o thcount`
        assert "COPY --from=code /opt/code/ /opt/venv/lib/python3.11/site-packages/" in text


def test_kilosort3_image_uses_the_compiled_base():
    text = (CONTAINERS / "Dockerfile").read_text()
    assert re.search(r"^ARG KS3_BASE=spikeinterface/kilosort3-compiled-base:\d", text, flags=re.M)
    assert "/usr/bin/mlrtapp" in text  # where the base keeps ks3_compiled


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_lock_is_current_and_matches_the_tested_versions():
    sys.path.insert(0, str(CONTAINERS))
    try:
        lock_tool = importlib.import_module("lock_requirements")
    finally:
        sys.path.remove(str(CONTAINERS))
    regenerated = {
        k: re.sub(r"\+.*$", "", v) for k, v in lock_tool.closure(lock_tool.EXTRAS).items()
    }
    pins = _lock()
    assert pins == regenerated, "containers/requirements.lock is stale: regenerate it"
    for name in KEY_PACKAGES:
        assert pins[name] == re.sub(r"\+.*$", "", metadata.version(name)), name
    worker = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["worker"]
    for requirement in worker:
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement)
        if m:
            assert pins[m.group(1).lower()] == m.group(2), requirement


@pytest.mark.parametrize(
    "module",
    [
        "spikebatch.worker.pipeline",
        "spikebatch.worker.demo",
        "spikeinterface.full",
        "kilosort",
        "dandi.dandiapi",
        "neuroconv.tools.spikeinterface",
        "nwbinspector",
    ],
)
def test_the_image_python_environment_imports(module):
    importlib.import_module(module)

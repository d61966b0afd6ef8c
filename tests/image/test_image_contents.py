"""What the built images hold, and what they must not: no credentials, no development trees,
no docker SDK; the worker as entrypoint, non-root. Sizes are printed (README "Image size")."""

from __future__ import annotations

from typing import Any

import pytest

from spikebatch.worker_image import BATCH_RUNTIME

#: Names that must appear nowhere in an image's filesystem (outside the system's own).
FORBIDDEN = (".git", "node_modules", ".venv", ".aws", "cdk.out", ".pytest_cache", "tests")
#: Any of these in the image's config environment would be a leaked secret.
SECRET_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DANDI_API_KEY")

#: Where our layers put files (the upstream bases' own trees are theirs), and the root.
FIND = (
    "find /opt /home /root /scratch /tmp -xdev \\( "
    + " -o ".join(f"-name '{n}'" for n in FORBIDDEN)
    + " \\) -print; find / -maxdepth 1 \\( "
    + " -o ".join(f"-name '{n}'" for n in FORBIDDEN)
    + " -o -name src \\) -print"
)


def _run(engine: Any, image: str, command: str, *, user: str = BATCH_RUNTIME.user) -> str:
    return engine.containers.run(
        image, ["-c", command], entrypoint="sh", user=user, remove=True, stderr=True
    ).decode()


@pytest.mark.parametrize("sorter", ["kilosort4", "kilosort3"])
def test_image_holds_no_credentials_no_dev_trees_and_no_docker_sdk(
    engine: Any, sorter: str, request: pytest.FixtureRequest, capsys
) -> None:
    image = request.getfixturevalue(f"{sorter}_image")
    attrs = engine.images.get(image).attrs
    config = attrs["Config"]
    env = dict(e.split("=", 1) for e in config.get("Env") or [])
    assert not [v for v in SECRET_VARS if v in env]
    assert config["User"] == BATCH_RUNTIME.user
    assert config["Entrypoint"] == ["spikebatch-worker"]
    assert env["SPIKEBATCH_IMAGE"] == image

    found = _run(engine, image, FIND, user="0")  # as root: /root too
    assert found.split() == []
    probe = (
        "python -c 'import importlib.util as u; "
        'print(u.find_spec("docker") is None, u.find_spec("spikebatch.worker") is not None)\''
    )
    assert _run(engine, image, probe).split() == ["True", "True"]

    with capsys.disabled():
        print(
            f"\n[image] {image}: {attrs['Size'] / 1e9:.2f} GB ({len(attrs['RootFS']['Layers'])} layers)"
        )
